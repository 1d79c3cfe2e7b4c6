"""What a run hands back: each step's :class:`StepResult` (to step callbacks) and the :class:`FitResult`.

Plain data with no Flux imports, so anything may import it. The steps are produced by
:class:`~flux_core.run.reporter.StepReporter`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

StepCallback = Callable[["StepResult"], Any]


@dataclass(frozen=True)
class StepResult:
    """What a step callback receives after every optimizer step.

    Attributes:
        step: 1-based optimizer step.
        metrics: named metrics of this step (``loss``, ``learning_rate``, ``grad_norm``
            and the algorithm's own, e.g. DPO's ``chosen_reward``, ``rejected_reward``,
            ``reward_margin``, ``accuracy``), plus any from ``step_metrics`` plugins.
    """

    step: int
    metrics: dict[str, float]


@dataclass
class FitResult:
    """What ``FluxTrainer.fit`` returns.

    Attributes:
        final_loss: training loss of the last step.
        steps: number of optimizer steps run.
        history: every step's :class:`StepResult`, in order.
        best_path: directory of the best checkpoint (see the checkpoint docs for the rule).
        final_path: directory of the final checkpoint.
        checkpoint_paths: every ``checkpoint-N`` directory written, in order.
        already_finished: ``fit(resume=...)`` found the run had trained all its steps, so
            nothing was trained now (:mod:`flux_core.run.finished`).
    """

    final_loss: float
    steps: int
    history: list[StepResult] = field(default_factory=list)
    best_path: str | None = None
    final_path: str | None = None
    checkpoint_paths: list[str] = field(default_factory=list)
    already_finished: bool = False

    @classmethod
    def from_run(cls, history: list[StepResult], steps: int, checkpoints: Any) -> FitResult:
        """The result of a run whose steps are ``history`` and whose files ``checkpoints`` wrote."""
        return cls(
            final_loss=history[-1].metrics["loss"] if history else float("nan"),
            steps=steps,
            history=history,
            best_path=str(checkpoints.best_path),
            final_path=str(checkpoints.final_path),
            checkpoint_paths=checkpoints.checkpoint_paths,
        )

    def metric(self, name: str) -> list[float]:
        """The values of one metric over all steps (steps without it are skipped)."""
        return [result.metrics[name] for result in self.history if name in result.metrics]
