"""``flux eval`` for algorithms whose TRL trainer scores held-out data itself (``trainer.evaluate()``)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from flux_core.run.layout import EVAL_SCRATCH_PREFIX

# Trainer.evaluate's timing keys: not a property of the model.
_TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


def evaluate_with_trainer(
    runner_class: type, config: Any, checkpoint: str, dataset: Any, metric_names: Mapping[str, str] = {}
) -> dict[str, float]:
    """The eval metrics ``runner_class``'s TRL trainer computes for the model in ``checkpoint`` on ``dataset``
    (as at a save point in training: ``eval_loss`` -> ``loss``, TRL's keys renamed by ``metric_names``, other
    '/' -> '_'). The checkpoint is loaded whole (a saved run's ``final/`` and ``best/`` are merged models), in
    a scratch output directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=EVAL_SCRATCH_PREFIX) as scratch:
        scoring = config.model_copy(
            update={"model_path": str(checkpoint), "lora": None, "num_steps": 1, "output_dir": scratch}
        )
        logs = runner_class(scoring, show_progress=False).build_trainer(dataset, dataset).evaluate()
    metrics = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_")
        if isinstance(value, (int, float)) and name not in _TIMINGS:
            metrics[metric_names.get(name, name.replace("/", "_"))] = float(value)
    return metrics
