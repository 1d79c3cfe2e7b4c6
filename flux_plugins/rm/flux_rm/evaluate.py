"""``flux eval`` for reward models: pairwise accuracy of a checkpoint on held-out preference pairs."""

from __future__ import annotations

import tempfile
from typing import Any

from flux_core import EVAL_SCRATCH_PREFIX
from flux_rm.runner import METRIC_NAMES, RewardModelRunner


def evaluate_pairs(config: Any, checkpoint: str, dataset: Any) -> dict[str, float]:
    """Loss, ``accuracy`` (share of pairs scored higher for ``chosen``), reward margin and reward
    range of the reward model in ``checkpoint`` on preference pairs, as RewardTrainer's ``evaluate``
    computes them in training."""
    with tempfile.TemporaryDirectory(prefix=EVAL_SCRATCH_PREFIX) as scratch:
        scoring = config.model_copy(
            update={"model_path": str(checkpoint), "lora": None, "num_steps": 1, "output_dir": scratch}
        )
        trainer = RewardModelRunner(scoring, show_progress=False).build_trainer(dataset, dataset)
        logs = trainer.evaluate()
    metrics = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_")
        if isinstance(value, (int, float)) and name not in ("runtime", "samples_per_second", "steps_per_second"):
            metrics[METRIC_NAMES.get(name, name.replace("/", "_"))] = float(value)
    return metrics
