"""flux-sft: per-step losses equal raw TRL SFTTrainer's; every data shape trains; the loss covers
completions (and assistant turns) only; packing; bad rows are one-line errors."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl

from flux_core.trainer import FluxTrainer

STEPS = 4


@pytest.fixture
def sft_config(tiny_model_dir, tmp_path):
    """A small SFT FluxConfig in fp32; ``algorithm`` adds algorithm keys, keyword arguments override top-level keys."""
    from flux_core.config import FluxConfig

    def make(algorithm: dict | None = None, **overrides):
        data = {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": STEPS,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 128,
            "precision": "fp32",
            "algorithm": {"name": "sft", **(algorithm or {})},
            **overrides,
        }
        return FluxConfig.from_dict(data)

    return make


def completion_records(preference_records: list[dict]) -> list[dict]:
    return [{"prompt": pair["prompt"], "completion": pair["chosen"]} for pair in preference_records]


def conversation_records(preference_records: list[dict]) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": pair["prompt"]}, {"role": "assistant", "content": pair["chosen"]}]}
        for pair in preference_records
    ]


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step training losses of an unmodified trl.SFTTrainer with the same settings, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(SFTConfig, config, STEPS)
    return train_raw_trl(SFTTrainer, args, model, config.model_path, records, lora)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_match_raw_trl(sft_config, preference_records, lora):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    config = sft_config(lora=lora_block)
    records = completion_records(preference_records)

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)
    flux_losses = result.metric("loss")
    trl_losses = raw_trl_losses(config, records, lora)

    assert len(flux_losses) == len(trl_losses) == STEPS
    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert flux_losses[-1] < flux_losses[0] - 1e-2  # it trained (the LoRA run too): not a trivial match
    assert "mean_token_accuracy" in result.history[-1].metrics
    assert (Path(config.output_dir) / "final").is_dir()


@pytest.mark.parametrize("shape", ["messages", "chat-prompt-completion", "text", "preference-pairs"])
def test_every_data_shape_trains(sft_config, preference_records, shape):
    records = {
        "messages": lambda: conversation_records(preference_records),
        "chat-prompt-completion": lambda: [
            {"prompt": row["messages"][:1], "completion": row["messages"][1:]}
            for row in conversation_records(preference_records)
        ],
        "text": lambda: [{"text": f"{pair['prompt']} {pair['chosen']}"} for pair in preference_records],
        "preference-pairs": lambda: preference_records,  # trains on prompt + chosen
    }[shape]()
    config = sft_config(num_steps=3, algorithm={"assistant_only_loss": False} if shape == "messages" else None)

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)

    losses = result.metric("loss")
    assert len(losses) == 3 and losses[-1] < losses[0]


def labelled_tokens(config, records) -> tuple[list[str], list[bool]]:
    """The first example's tokens as the trainer collates them, and which of them are trained on."""
    from flux_sft.runner import SFTRunner

    from flux_core.data.load import load_data

    runner = SFTRunner(config, show_progress=False)
    trainer = runner.build_trainer(load_data(records, "sft"), None)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    tokens = runner.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    return tokens, [label != -100 for label in batch["labels"][0].tolist()]


def trained_text(config, records) -> str:
    from transformers import AutoTokenizer

    tokens, trained = labelled_tokens(config, records)
    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    return tokenizer.convert_tokens_to_string([token for token, keep in zip(tokens, trained) if keep])


def test_loss_covers_the_completion_only_by_default(sft_config):
    records = [{"prompt": "Explain the moon landing.", "completion": " Certainly, here it is."}] * 8

    assert trained_text(sft_config(), records) == " Certainly, here it is.<|endoftext|>"
    full = trained_text(sft_config({"completion_only_loss": False}), records)
    assert full.startswith("Explain the moon landing.")  # every token but the first (nothing predicts it)
    assert full.endswith("here it is.<|endoftext|>")


def test_assistant_only_loss_masks_user_turns_where_the_template_marks_them(sft_config, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "marked-model"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tokenizer.save_pretrained(model)
    conversation = [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello, friend."},
        {"role": "user", "content": "Bye."},
        {"role": "assistant", "content": "Goodbye."},
    ]
    records = [{"messages": conversation}] * 8

    assert trained_text(sft_config(model_path=str(model)), records) == "Hello, friend.<|im_end|>Goodbye.<|im_end|>"
    everything = trained_text(sft_config({"assistant_only_loss": False}, model_path=str(model)), records)
    assert "Hi there." in everything and "Goodbye." in everything


def test_assistant_only_loss_auto_warns_when_the_template_cannot(sft_config, preference_records):
    """The tiny model's ChatML template has no {% generation %} markers: auto trains on every token, and says so;
    true is a one-line error naming the fix."""
    from flux_core.errors import FluxError

    records = conversation_records(preference_records[:8])
    with pytest.warns(UserWarning, match=r"assistant_only_loss auto: the chat template .* does not mark assistant"):
        _, trained = labelled_tokens(sft_config(), records)
    assert all(trained[1:])
    with pytest.raises(FluxError, match=r"add the markers to the template or set algorithm.assistant_only_loss: false"):
        labelled_tokens(sft_config({"assistant_only_loss": True}), records)


def test_packing_puts_several_examples_in_a_row(sft_config, preference_records):
    from flux_sft.runner import SFTRunner

    from flux_core.data.load import load_data

    config = sft_config({"packing": True}, num_steps=3)
    records = completion_records(preference_records)
    trainer = SFTRunner(config, show_progress=False).build_trainer(load_data(records, "sft"), None)
    packed = trainer.train_dataset
    assert len(packed) <= len(records) // 2  # rows of up to 128 tokens hold two or more ~60-token examples
    assert sum(map(len, packed["seq_lengths"])) == len(records)  # every example is in a row, none split or lost
    assert max(map(len, packed["input_ids"])) <= 128

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)
    assert result.metric("loss")[-1] < result.metric("loss")[0]


def test_num_epochs_with_packing_counts_the_packed_rows_as_raw_trl_does(sft_config, preference_records):
    """An epoch is a pass over the rows SFTTrainer trains on: with packing, fewer than the examples."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    records = completion_records(preference_records)
    config = sft_config({"packing": True}, num_steps=None, num_epochs=1, batch_size=4)
    result = FluxTrainer(config, show_progress=False).fit(prompts=records)

    raw = SFTTrainer(
        model=config.model_path,
        args=raw_trl_args(SFTConfig, config, -1, num_train_epochs=1, packing=True),
        train_dataset=Dataset.from_list(records),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
    )
    raw_steps = raw.set_initial_training_values(raw.args, raw.get_train_dataloader())[-1]
    assert result.steps == len(result.history) == raw_steps
    assert raw_steps <= len(records) / config.batch_size / 2  # two or more examples a row, not one


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"prompt": "a", "completion": "b"}, {"prompt": "c"}], r"item 2: missing key 'completion'"),
        ([{"prompt": "a"}], r"item 1: missing key 'completion' \(each example needs messages, or prompt and"),
        ([{"messages": "hello"}], r"item 1: 'messages' must be a list of chat messages"),
        ([{"text": "a"}, {"text": ""}], r"item 2: "),
        ([{"question": "a", "answer": "b"}], r"item 1: no SFT columns: .*\(columns: answer, question\)"),
        ([{"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}], r"'completion' is .* but 'prompt'"),
    ],
    ids=["missing-completion", "prompt-only", "messages-string", "empty-text", "no-sft-columns", "mixed-kinds"],
)
def test_bad_rows_are_one_line_errors_naming_the_row(rows, expected):
    from flux_core.data.load import load_data
    from flux_core.errors import DataError

    with pytest.raises(DataError, match=expected):
        load_data(rows, "sft")


def test_flux_plugins_lists_sft():
    flux = str(Path(sys.executable).with_name("flux"))
    result = subprocess.run([flux, "plugins"], check=False, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "sft (flux-sft 0.1.0): register_algorithms" in result.stdout
    assert "sft: Supervised fine-tuning" in result.stdout and "[data_format=sft]" in result.stdout


def test_flux_eval_reports_held_out_loss(sft_config, preference_records):
    from flux_core.evaluate import evaluate

    config = sft_config(num_steps=8)
    records = completion_records(preference_records)
    result = FluxTrainer(config, show_progress=False).fit(prompts=records[:48])
    base = evaluate(config, config.model_path, records[48:])
    trained = evaluate(config, result.final_path, records[48:])

    assert set(trained) >= {"loss", "mean_token_accuracy"}
    assert trained["loss"] < base["loss"] - 0.5 and trained["mean_token_accuracy"] > base["mean_token_accuracy"]
