"""Loading models and tokenizers, precision choice and LoRA setup (generation: ``flux_core.generation``).

``model_path`` is a local directory or a hub id (e.g. ``Qwen/Qwen3-8B``): both go
through ``from_pretrained``, so the hub path is the real transformers code path. A local
directory is checked first, before transformers is imported: no tokenizer files, or a
missing or truncated ``*.safetensors`` file, is a one-line error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.paths import looks_like_path


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that supports it, else ``fp32``; never a crash on CPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if has_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not has_cuda:
        raise FluxError(f"precision: {precision} needs a GPU and none is available; use precision: auto or fp32")
    return precision


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def looks_local(model_path: str) -> bool:
    """A filesystem path rather than a hub id (``org/name``): it exists, or it can only be a
    path (:func:`flux_core.paths.looks_like_path`: ``./x``, ``a/b/c``, ``model.safetensors``)."""
    return looks_like_path(model_path) or Path(model_path).expanduser().exists()


def check_model_path(model_path: str, key: str = "model_path") -> None:
    """Raise at once when ``model_path`` is a local path (see :func:`looks_local`) that is not a
    directory: a typo is an error now, not after the data loads or the hub retries."""
    path = Path(model_path).expanduser()
    if looks_local(model_path) and not path.is_dir():
        what = "a file, not a model directory" if path.exists() else "directory not found"
        raise FluxError(f"{key} '{model_path}': {what}")


# Files that hold a tokenizer's vocabulary (fast tokenizers, BPE, WordPiece, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")
# Weight files from_pretrained can load (single files, shards and their indexes).
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")


def load_tokenizer(model_path: str, chat_template: str | None = None):
    """The tokenizer at ``model_path``, with a pad token (its EOS when it has none) and the chat template
    that the ``chat_template`` setting names (``None``: its own; see :mod:`flux_core.chat_templates`)."""
    from flux_core.chat_templates import set_chat_template

    path = _checked_path(model_path)
    if looks_local(model_path):
        check_tokenizer_files(Path(path))
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FluxError(f"cannot load tokenizer from '{model_path}': {_first_line(error)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return set_chat_template(tokenizer, chat_template, model_path)


def load_model(
    model_path: str, precision: str = "fp32", attn_implementation: str | None = None, quantize: str | None = None
):
    """The causal LM at ``model_path`` (a directory or hub id) in ``precision``.

    ``attn_implementation``: transformers' name (``sdpa``, ``flash_attention_2``,
    ``flex_attention``, ...); ``None`` keeps transformers' default. ``quantize``: ``4bit`` or
    ``8bit`` loads it through bitsandbytes, frozen and prepared for an adapter (QLoRA; pass
    ``config.base_quantization``, see :mod:`flux_core.quantization`).
    """
    path = _checked_path(model_path)
    if looks_local(model_path):
        check_weight_files(Path(path))
        check_not_a_reward_model(Path(path))
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantize is not None:
        from flux_core.quantization import quantized_load_settings

        extra.update(quantized_load_settings(quantize, torch_dtype(precision)))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(precision), **extra)
    except (OSError, ValueError) as error:
        raise FluxError(f"cannot load model from '{model_path}': {_first_line(error)}") from None
    check_finite_weights(model, model_path)
    if quantize is not None:
        from flux_core.quantization import prepare_for_training

        model = prepare_for_training(model)
    return model


def check_finite_weights(model: Any, model_path: str) -> None:
    """Raise FluxError naming the first weight of a just-loaded ``model`` that holds a NaN or
    infinity, and the file it came from: trained on, it would only surface as ``step 1: loss is
    nan``; generating, as empty text. One summing pass over the weights
    (:func:`~flux_core.run.nonfinite.nonfinite_parameter`: 0.5 ms on the tiny model, 0.5% of its load)."""
    from flux_core.run.nonfinite import nonfinite_parameter

    name = nonfinite_parameter(model)
    if name is None:
        return
    where = str(model_path)
    directory = Path(model_path).expanduser()
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shard = json.loads(index.read_text()).get("weight_map", {}).get(name)
        where = str(directory / shard) if shard else where
    elif (directory / "model.safetensors").is_file():
        where = str(directory / "model.safetensors")
    raise FluxError(
        f"{where}: weight {name} holds NaN or infinity (a diverged or damaged model); "
        "load an earlier checkpoint or the base model"
    )


def _checked_path(model_path: str) -> str:
    if looks_local(model_path):
        check_model_path(model_path)
        return str(Path(model_path).expanduser())
    return model_path  # a hub id: transformers resolves (and caches) it


def sequence_classifier_class(directory: Path) -> str | None:
    """The architecture named in ``directory/config.json`` when the model saved there is a
    sequence classifier (e.g. a flux-rm checkpoint), else ``None`` (also for a missing or
    unreadable config, which transformers reports itself)."""
    try:
        architectures = json.loads((Path(directory) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    if architectures and all(name.endswith("ForSequenceClassification") for name in architectures):
        return architectures[0]
    return None


def check_not_a_reward_model(directory: Path) -> None:
    """Raise FluxError when ``directory`` holds a sequence classifier (e.g. a flux-rm checkpoint).

    transformers would load it as a causal LM with a fresh, random output layer, and
    generation would silently produce noise.
    """
    architecture = sequence_classifier_class(directory)
    if architecture is not None:
        raise FluxError(
            f"{directory} is a reward model ({architecture}), not a text generator: use it as "
            f"rewards: [{{model: {directory}}}] in GRPO/PPO, or score pairs with `flux eval {directory} --data PAIRS`"
        )


def check_is_a_reward_model(directory: Path, key: str = "reward model") -> None:
    """Raise FluxError when ``directory`` holds a model that is not a sequence classifier (a causal LM).

    ``AutoModelForSequenceClassification`` would load it with a fresh, random score head,
    and training would follow rewards that are noise. A config without ``architectures``
    is let through (nothing to tell from).
    """
    try:
        architectures = json.loads((Path(directory) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return
    if architectures and sequence_classifier_class(directory) is None:
        raise FluxError(
            f"{key} '{directory}' holds a {architectures[0]}, not a sequence classifier: scored through a fresh, "
            "random head its rewards would be noise; give a sequence classifier, e.g. a checkpoint of a flux-rm run "
            "(algorithm: reward_model)"
        )


def check_model_directory(directory: Path) -> None:
    """Raise FluxError naming what a local model directory lacks: tokenizer files or whole weight files."""
    check_tokenizer_files(directory)
    check_weight_files(directory)


def check_tokenizer_files(directory: Path) -> None:
    """Raise FluxError when ``directory`` holds no tokenizer vocabulary file.

    transformers would otherwise build a tokenizer with an empty vocabulary from the
    model config alone, and generation then fails on a zero-length prompt.
    """
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise FluxError(
            f"{directory}: no tokenizer files (tokenizer.json, vocab.json, tokenizer.model, ...); "
            "save the tokenizer into it (tokenizer.save_pretrained) or copy it from the base model"
        )


def check_weight_files(directory: Path) -> None:
    """Raise FluxError naming what is wrong with the weight files of ``directory``.

    That is: no weight file at all, a shard listed in the safetensors index but missing,
    or a safetensors file shorter or longer than its header describes (truncated).
    """
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_FILE_PATTERNS):
        raise FluxError(
            f"{directory}: no model weights (model.safetensors or pytorch_model.bin); "
            "point at a directory written by save_pretrained or a Flux checkpoint"
        )
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FluxError(f"{index}: not a valid safetensors index (no weight_map); save the model again") from None
        for shard in shards:
            if not (directory / shard).is_file():
                raise FluxError(f"{directory / shard}: missing (listed in {index.name}); copy or save the model again")
    for file in sorted(directory.glob("*.safetensors")):
        _check_safetensors_size(file)


def _check_safetensors_size(file: Path) -> None:
    problem = safetensors_problem(file)
    if problem is not None:
        raise FluxError(f"{file}: {problem}; copy or save the model again")


def safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a complete safetensors file (``truncated or corrupt (...)``), or ``None``.

    Reads the header only: 8-byte little-endian header length, a JSON header with each
    tensor's data_offsets, then the data; a complete file is exactly as long as the header says.
    """
    size = file.stat().st_size
    expected = None
    with file.open("rb") as stream:
        length = int.from_bytes(stream.read(8), "little") if size >= 8 else None
        if length is not None and 8 + length <= size:
            try:
                header = json.loads(stream.read(length))
                ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
                expected = 8 + length + max(ends, default=0)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError):
                expected = None
    if expected is None:
        return "not a valid safetensors file (unreadable header)"
    if size != expected:
        return f"truncated or corrupt ({size} bytes, its header describes {expected})"
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def peft_config(lora: Any):
    """A peft ``LoraConfig`` from Flux's ``lora:`` block (None when LoRA is off)."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def check_lora_targets(model_path: str, lora: Any) -> None:
    """Raise FluxError when a name in ``lora.target_modules`` matches no module of the model.

    peft fails only when no listed name matches at all, so a misspelled one beside a right
    one (``[q_proj, v_projj]``) would silently train fewer modules. The model is built from
    its config on the meta device (no weights read). A string is peft's regex over full
    module names; names in a list match a module name or its last parts, as in peft.
    """
    if lora is None or lora.target_modules == "all-linear":
        return
    import re

    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from flux_core.errors import close_match

    try:
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(_checked_path(model_path)))
    except (OSError, ValueError):  # loading the model itself reports these with its own message
        return
    names = [name for name, _ in model.named_modules() if name]
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ == "Linear"}
    )
    if isinstance(lora.target_modules, str):
        if not any(re.fullmatch(lora.target_modules, name) for name in names):
            example = next((name for name in names if "." in name and name.rsplit(".", 1)[-1] in linear), "")
            raise FluxError(
                f"lora.target_modules: the regex {lora.target_modules!r} matches no module name in full (peft reads "
                f"a string as a regex over full names such as {example!r}); list module names instead, e.g. "
                f"[{', '.join(linear[:2])}]"
            )
        return
    for target in lora.target_modules:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            raise FluxError(
                f"lora.target_modules: {target!r} matches no module of {model_path}{close_match(target, linear)}; "
                f"its linear layers: {', '.join(linear)}"
            )
