"""The runner interface every algorithm plugin implements.

An algorithm plugin registers an :class:`~flux_core.registry.Algorithm` whose ``runner``
names a class implementing :class:`Runner`. ``FluxTrainer.fit`` loads and checks the
data, opens the run's ``output_dir`` (lock, resume), then calls ``runner.fit``.

A plugin that wraps a TRL trainer subclasses :class:`~flux_core.trl_based.runner.TRLRunner` and writes one method,
``build_trainer``: the base class wires Flux's step callbacks, ``metrics.jsonl``, the
progress bar, the non-finite guard, checkpoints (``checkpoint-N``, ``best``, ``final``),
eval at save points, main-process-only writes and resume around it. flux-dpo and
flux-grpo are built this way; flux-ppo keeps its own loop on the same pieces
(:class:`~flux_core.run.reporter.StepReporter`, :class:`~flux_core.run.checkpoint.CheckpointManager`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flux_core.run.results import FitResult, StepCallback

if TYPE_CHECKING:
    from datasets import Dataset

    from flux_core.run.context import RunContext


@runtime_checkable
class Runner(Protocol):
    """What ``FluxTrainer`` needs from an algorithm's runner class.

    ``Runner(config, show_progress=True)`` builds nothing heavy; ``fit`` loads the model,
    trains and writes checkpoints, then leaves the trained model and its tokenizer in
    ``model`` and ``tokenizer`` (``FluxTrainer.generate`` uses them).
    """

    model: Any
    tokenizer: Any

    def fit(
        self,
        dataset: Dataset,
        eval_dataset: Dataset | None,
        callbacks: list[StepCallback],
        run: RunContext | None = None,
    ) -> FitResult:
        """Train on ``dataset`` (already loaded and checked in the algorithm's data format).

        ``eval_dataset``: held-out data in the same format (``best/`` is then chosen by the
        eval score); ``callbacks``: called with every :class:`~flux_core.run.results.StepResult`
        on the main process; ``run``: the run's non-finite guard, preemption handler and,
        when resuming, the checkpoint to continue from (None: a fresh run).
        """
        ...
