"""Token-level helpers every rollout backend shares: a prompt's ids as the model trains on them,
the ids that end a completion, and where a completion ends."""

from __future__ import annotations

from typing import Any

from flux_core.errors import FluxError


def encode_prompt(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of one prompt, as the model sees it during training."""
    if isinstance(prompt, str):
        # As TRL tokenizes text prompts: with the tokenizer's special tokens (e.g. a BOS).
        return list(tokenizer(prompt).input_ids)
    if isinstance(prompt, list):
        encoded = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    raise FluxError(f"a prompt must be a string or a list of chat messages, not {type(prompt).__name__}")


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the model's declared ones plus the tokenizer's."""
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [declared] if isinstance(declared, int) else list(declared or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return ids


def cut_at_eos(row: list[int], eos_token_ids: list[int]) -> tuple[list[int], bool]:
    """``row`` up to and including its first end-of-sequence id, and whether it had none (truncated)."""
    for position, token in enumerate(row):
        if token in eos_token_ids:
            return row[: position + 1], False
    return row, True
