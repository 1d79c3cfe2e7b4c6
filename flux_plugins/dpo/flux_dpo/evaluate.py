"""``flux eval`` for DPO: held-out preference metrics of a checkpoint against its base model."""

from __future__ import annotations

import tempfile
from typing import Any

from flux_core import EVAL_SCRATCH_PREFIX
from flux_dpo.runner import METRIC_NAMES, DPORunner


def evaluate_preferences(config: Any, checkpoint: str, dataset: Any) -> dict[str, float]:
    """Loss, accuracy and reward margin of ``checkpoint`` on preference pairs, as TRL's ``evaluate`` computes
    them in training, with the run's base model (``config.model_path``) as the reference.

    Accuracy is the share of pairs whose implicit reward (``beta`` x the log-ratio of policy and
    reference) is higher for ``chosen`` than for ``rejected``; the base model scores 0 by construction.
    """
    with tempfile.TemporaryDirectory(prefix=EVAL_SCRATCH_PREFIX) as scratch:
        algorithm = config.algorithm.model_copy(update={"reference_policy": "copy"})
        scoring = config.model_copy(
            update={
                "model_path": str(checkpoint),
                "lora": None,
                "num_steps": 1,
                "output_dir": scratch,
                "algorithm": algorithm,
            }
        )
        trainer = DPORunner(scoring, show_progress=False).build_trainer(
            dataset, dataset, reference_path=config.model_path
        )
        logs = trainer.evaluate()
    metrics = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_")
        if isinstance(value, (int, float)) and name not in ("runtime", "samples_per_second", "steps_per_second"):
            metrics[METRIC_NAMES.get(name, name.replace("/", "_"))] = float(value)
    return metrics
