"""``flux eval`` for CPO: held-out loss, accuracy, reward margin and SFT loss of a checkpoint on preference pairs."""

from __future__ import annotations

from typing import Any

from flux_core import evaluate_with_trainer
from flux_cpo.runner import METRIC_NAMES, CPORunner


def evaluate_pairs(config: Any, checkpoint: str, dataset: Any) -> dict[str, float]:
    """CPO's loss and metrics (``accuracy``, ``reward_margin``, ``nll_loss``, ...) of ``checkpoint`` on preference
    pairs, as TRL's ``CPOTrainer`` computes them at a save point; no reference model is involved."""
    return evaluate_with_trainer(CPORunner, config, checkpoint, dataset, METRIC_NAMES)
