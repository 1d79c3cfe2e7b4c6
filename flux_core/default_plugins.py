"""Flux's built-in defaults, registered like any other plugin (``trylast`` so any
installed plugin can override them)."""

from __future__ import annotations

import logging
from typing import Any

from flux_core.hookspecs import hookimpl
from flux_core.reference import auto_policy

logger = logging.getLogger("flux")


@hookimpl(trylast=True)
def reference_policy(config: Any, use_lora: bool, num_examples: int | None) -> str:
    algorithm = config.algorithm
    if getattr(algorithm, "reference_free", False):
        return "none"
    choice = getattr(algorithm, "reference_policy", "auto")
    if choice != "auto":
        return choice
    choice, reason = auto_policy(use_lora, config.num_steps, config.batch_size, num_examples)
    logger.info("reference policy: %s (auto: %s)", choice, reason)
    return choice


@hookimpl(trylast=True)
def collate_batch(config: Any, tokenizer: Any, algorithm: str) -> None:
    # None keeps the TRL trainer's own padded collator.
    return None
