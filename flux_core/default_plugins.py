"""Flux's built-in defaults, registered like any other plugin (``trylast`` so any
installed plugin can override them)."""

from __future__ import annotations

import logging
import resource
import sys
import time
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


# Throughput bookkeeping for `step_metrics`: (time, cumulative tokens) at the last step.
_last_step: dict[str, float] = {}


@hookimpl(trylast=True)
def step_metrics(step: int, metrics: dict[str, float], config: Any) -> dict[str, float]:
    """Built-in extra metrics: ``tokens_per_second`` (from the second step on) and
    ``peak_memory_mb`` (peak GPU memory of this step on CUDA; peak RSS so far on CPU)."""
    now = time.perf_counter()
    extra = {"peak_memory_mb": _peak_memory_mb()}
    tokens = metrics.get("num_tokens")
    if step > 1 and tokens is not None and "tokens" in _last_step and now > _last_step["time"]:
        extra["tokens_per_second"] = (tokens - _last_step["tokens"]) / (now - _last_step["time"])
    _last_step.clear()
    if tokens is not None:
        _last_step.update(time=now, tokens=tokens)
    return extra


def _peak_memory_mb() -> float:
    torch = sys.modules.get("torch")  # no run, no torch: never import it just for a metric
    if torch is not None and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
