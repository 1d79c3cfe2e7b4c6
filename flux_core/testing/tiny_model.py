"""A tiny random-init model + byte-level BPE tokenizer, built offline in about a second.

Tests, the demo and the benchmarks use it (``flux tiny-model DIR``, the ``tiny_model_dir`` fixture). It is a real
Qwen3-architecture checkpoint with a ChatML chat template, so it exercises the same
code paths as ``Qwen/Qwen3-8B``; it just knows nothing. Building is deterministic:
the same arguments give byte-identical files.
"""

from __future__ import annotations

import itertools
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the a an and or but of to in on for with is are was be this that it you we they i my your "
    "quantum computing bits qubits states classical problems faster model learning machine data "
    "explain write describe summarize email meeting thank inquiry schedule happy regards dear "
    "please answer question clear helpful polite detailed short long good bad yes no maybe "
    "because therefore however example simple complex train test reward loss step value policy "
    "hello world science history music art sport food travel weather city river mountain ocean"
).split()


def _corpus(lines: int = 2000):
    """Deterministic pseudo-sentences covering letters, digits and punctuation."""
    words = itertools.cycle(_WORDS)
    for index in range(lines):
        length = 5 + index % 11
        sentence = " ".join(next(words) for _ in range(length))
        yield sentence.capitalize() + (".", "?", "!", ",")[index % 4] + f" {index % 97}"
    yield "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`\n\t"


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    directory: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random-init Qwen3-style causal LM + tokenizer to ``directory``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    eos_ids = [tokenizer.convert_tokens_to_ids(token) for token in ("<|endoftext|>", "<|im_end|>")]
    heads = max(2, hidden_size // 32)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden_size // heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=eos_ids[0],
        eos_token_id=eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=eos_ids[0]
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
