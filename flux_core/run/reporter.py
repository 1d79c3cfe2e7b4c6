"""StepReporter: turns every algorithm's training logs into step results, ``metrics.jsonl`` lines,
step-callback calls and the progress bar.

Runners with their own loop (PPO) call it directly; TRL-wrapping runners reach it through
:mod:`flux_core.trl_based.callbacks`. ``step_metrics`` plugins add their metrics here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.plugins import get_plugin_manager
from flux_core.run.context import RunContext
from flux_core.run.layout import METRICS_FILE
from flux_core.run.nonfinite import json_safe
from flux_core.run.results import StepCallback, StepResult


def rename_metrics(logs: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, float]:
    """TRL log keys -> Flux metric names; unmapped keys keep their name with '/' -> '_'."""
    metrics = {}
    for key, value in logs.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metrics[names.get(key, key.replace("/", "_"))] = float(value)
    return metrics


def merge_plugin_metrics(step: int, metrics: dict[str, float], config: Any) -> dict[str, float]:
    """Add every ``step_metrics`` plugin's metrics; a name clash is an error naming both sides."""
    manager = get_plugin_manager()
    owners = {name: "built-in metrics" for name in metrics}
    merged = dict(metrics)
    for impl in reversed(manager.hook.step_metrics.get_hookimpls()):  # registration order
        extra = impl.function(step=step, metrics=dict(metrics), config=config)
        for name, value in (extra or {}).items():
            if name in owners:
                raise FluxError(
                    f"step metric '{name}' from plugin '{impl.plugin_name}' clashes with {owners[name]}; rename it"
                )
            owners[name] = f"plugin '{impl.plugin_name}'"
            merged[name] = float(value)
    return merged


class StepReporter:
    """Turns each training log into a StepResult: history, ``metrics.jsonl``, callbacks, progress bar.

    Algorithm runners feed it from a ``transformers.TrainerCallback`` (see
    :func:`make_trl_callback`) or directly from their own loop. NaN/Inf metrics stay
    NaN/Inf in the StepResult and are written to ``metrics.jsonl`` as ``null``.
    """

    def __init__(
        self,
        config: Any,
        callbacks: list[StepCallback],
        metric_names: Mapping[str, str],
        progress_metrics: tuple[str, ...] = ("loss",),
        show_progress: bool = True,
        on_step: Callable[[StepResult, Any], None] | None = None,
        run: RunContext | None = None,
    ):
        self.run = run or RunContext.fresh(config)
        self.config = config
        self.callbacks = callbacks
        self.metric_names = metric_names
        self.progress_metrics = progress_metrics
        self.show_progress = show_progress
        self.on_step = on_step
        # A resumed run starts from its checkpoint's history (metrics.jsonl was rewritten to it).
        resumed = self.run.resume
        self.history: list[StepResult] = list(resumed.history) if resumed else []
        self._bar = None
        self.metrics_file = Path(config.output_dir) / METRICS_FILE
        self._metrics_started = resumed is not None
        self._pending_eval: tuple[int, dict[str, float]] | None = None

    def report(self, step: int, logs: Mapping[str, Any], model: Any = None) -> StepResult:
        metrics = rename_metrics(logs, self.metric_names)
        if self._pending_eval is not None and self._pending_eval[0] == step:
            metrics.update(self._pending_eval[1])
            self._pending_eval = None
        metrics.update(self.run.guard.extra_metrics())
        metrics = merge_plugin_metrics(step, metrics, self.config)
        result = StepResult(step=step, metrics=metrics)
        self.history.append(result)
        self._append_metrics(result)
        self._update_progress(result)
        for callback in self.callbacks:
            callback(result)
        if self.on_step is not None:
            self.on_step(result, model)
        return result

    def report_eval(self, step: int, logs: Mapping[str, Any]) -> None:
        """Record an evaluation's ``eval_*`` metrics (``eval_loss``, ``eval_rewards_chosen``...) in step
        ``step``'s row: the row to come (an evaluation at a save point runs before its step is logged) or,
        for the evaluation after the last step, the row already written, which is then rewritten."""
        evaluated = {key.removeprefix("eval_"): value for key, value in logs.items() if key.startswith("eval_")}
        metrics = {  # named as the training metrics are: eval_rewards/chosen -> eval_chosen_reward
            f"eval_{name}": value
            for name, value in rename_metrics(evaluated, self.metric_names).items()
            if not name.endswith(("runtime", "_per_second"))
        }
        if not metrics:
            return
        if self.history and self.history[-1].step == step:
            self.history[-1].metrics.update(metrics)
            self._rewrite_last_row(self.history[-1])
        else:
            self._pending_eval = (step, metrics)

    def _rewrite_last_row(self, result: StepResult) -> None:
        with self.metrics_file.open("rb+") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            start = max(0, end - 1)  # the last row's own newline is at end - 1
            while start > 0:
                handle.seek(start - 1)
                if handle.read(1) == b"\n":
                    break
                start -= 1
            handle.seek(start)
            handle.truncate()
        self._append_metrics(result)

    def _append_metrics(self, result: StepResult) -> None:
        """One JSON line per step in ``output_dir/metrics.jsonl`` (started afresh by a new run,
        continued by a resumed one)."""
        if not self._metrics_started:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            self.metrics_file.write_text("")
            self._metrics_started = True
        with self.metrics_file.open("a") as handle:
            handle.write(json.dumps(json_safe({"step": result.step, **result.metrics}), allow_nan=False) + "\n")

    def _update_progress(self, result: StepResult) -> None:
        if not self.show_progress:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.config.num_steps, desc=f"flux {self.config.algorithm.name}", unit="step")
        shown = {
            name: f"{result.metrics[name]:.4f}"
            for name in self.progress_metrics
            if name in result.metrics and math.isfinite(result.metrics[name])
        }
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(result.step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
