"""Stage 5 of loading data: split eval rows off the checked training data.

Gets the training dataset that went through :mod:`flux_core.data.checks` when a run has
no eval data of its own but an ``eval_fraction``, and hands back the train and eval
parts for the runner, the same rows for the same seed.
"""

from __future__ import annotations

from typing import Any

from flux_core.errors import DataError


def split_off_eval(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Carve ``fraction`` of ``dataset`` off as eval data, the same rows for the same ``seed``."""
    if not 0 < fraction < 1:
        raise DataError(f"eval_fraction must be between 0 and 1, not {fraction}")
    held_out = max(1, round(len(dataset) * fraction))
    if held_out >= len(dataset):
        raise DataError(f"eval_fraction {fraction} leaves no training rows out of {len(dataset)}")
    parts = dataset.train_test_split(test_size=held_out, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
