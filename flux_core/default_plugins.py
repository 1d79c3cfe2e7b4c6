"""Flux's built-in defaults, registered like any other plugin (``trylast`` so any
installed plugin can override them)."""

from __future__ import annotations

from typing import Any

from flux_core.hookspecs import hookimpl


@hookimpl(trylast=True)
def reference_policy(config: Any, use_lora: bool) -> str:
    algorithm = config.algorithm
    if getattr(algorithm, "reference_free", False):
        return "none"
    choice = getattr(algorithm, "reference_policy", "auto")
    if choice != "auto":
        return choice
    # A LoRA policy with its adapter disabled *is* the initial model: no second copy needed.
    return "adapter" if use_lora else "copy"


@hookimpl(trylast=True)
def collate_batch(config: Any, tokenizer: Any, algorithm: str) -> None:
    # None keeps the TRL trainer's own padded collator.
    return None
