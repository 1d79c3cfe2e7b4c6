"""``flux eval`` for SFT: held-out loss and token accuracy of a checkpoint on SFT examples."""

from __future__ import annotations

import tempfile
from typing import Any

from flux_core import EVAL_SCRATCH_PREFIX
from flux_sft.runner import SFTRunner


def evaluate_examples(config: Any, checkpoint: str, dataset: Any) -> dict[str, float]:
    """Loss (on the tokens the run trains on: completions, assistant turns or all text) and
    ``mean_token_accuracy`` of ``checkpoint`` on ``dataset``, as SFTTrainer's ``evaluate`` computes them."""
    with tempfile.TemporaryDirectory(prefix=EVAL_SCRATCH_PREFIX) as scratch:
        scoring = config.model_copy(
            update={"model_path": str(checkpoint), "lora": None, "num_steps": 1, "output_dir": scratch}
        )
        logs = SFTRunner(scoring, show_progress=False).build_trainer(dataset, dataset).evaluate()
    return {
        key.removeprefix("eval_"): float(value)
        for key, value in logs.items()
        if isinstance(value, (int, float))
        and key.removeprefix("eval_") not in ("runtime", "samples_per_second", "steps_per_second")
    }
