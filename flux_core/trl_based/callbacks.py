"""The bridge from a TRL trainer to Flux: its logs become step results, eval runs at save
points, and ``train()`` runs with checkpoints, resume, preemption and the out-of-memory fallback."""

from __future__ import annotations

from typing import Any

from flux_core.run.preemption import Preempted
from flux_core.run.reporter import StepReporter
from flux_core.run.results import FitResult
from flux_core.run.resume import ResumeError, restore_adapter, write_trl_state
from flux_core.trl_based.memory import out_of_memory_fallback


def make_trl_callback(reporter: StepReporter):
    """A ``transformers.TrainerCallback`` feeding every training log to ``reporter``.

    Only the main process reports, so callbacks run, bars print and checkpoints are
    written once under ``accelerate launch``.
    """
    from transformers import TrainerCallback

    class FluxStepCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            if "loss" in logs:
                reporter.report(state.global_step, logs, model)
            elif "eval_loss" in logs:
                reporter.report_eval(state.global_step, logs)
            # the end-of-training summary (train_runtime, ...) carries no step metrics

        def on_train_end(self, args, state, control, **kwargs):
            reporter.close()

    return FluxStepCallback()


class SavePointEvaluator:
    """Scores ``eval_data`` with ``trainer.evaluate()`` at every save point and at the end.

    Evaluation is collective under multi-process training, so it runs on every rank
    (from ``on_step_end``) while only the main rank writes checkpoints; the
    :class:`~flux_core.run.checkpoint.CheckpointManager` then reads :meth:`score`.

    Args:
        metric: the key of ``trainer.evaluate()``'s result to keep (e.g. ``eval_loss``).
        save_steps: the checkpoint cadence (``None``: only the end of training).
        sign: ``1`` when lower is better (a loss), ``-1`` for a reward.
    """

    def __init__(self, metric: str, save_steps: int | None, sign: float = 1.0):
        self.metric = metric
        self.save_steps = save_steps
        self.sign = sign
        self.trainer: Any = None
        self.latest: float | None = None

    def _is_save_point(self, step: int) -> bool:
        return bool(self.save_steps) and step % self.save_steps == 0

    def evaluate(self) -> None:
        self.latest = float(self.trainer.evaluate()[self.metric])

    def score(self) -> float:
        return self.sign * self.latest

    def callback(self):
        """The ``TrainerCallback`` to pass to the trainer; set ``self.trainer`` before training."""
        from transformers import TrainerCallback

        evaluator = self

        class EvaluateAtSavePoints(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if not evaluator._is_save_point(state.global_step):
                    return
                # evaluate() logs, and logging clears the flag that makes this step's
                # training log happen; it also leaves the model in eval mode, which TRL's
                # log() reads to pick train or eval metrics. Restore both.
                should_log = control.should_log
                evaluator.evaluate()
                control.should_log = should_log
                evaluator.trainer.model.train()

        return EvaluateAtSavePoints()

    def finish(self, step: int) -> None:
        """Score the final model on every rank, unless the last step was a save point."""
        if not self._is_save_point(step) or self.latest is None:  # latest is None: resumed at the end
            self.evaluate()


def staging_callback(checkpoints: Any):
    """A ``TrainerCallback`` that has every rank take its part in writing ``checkpoint-N``
    (:meth:`flux_core.run.checkpoint.CheckpointManager.stage`) at the end of each save
    step. Add it after the preemption callback, which decides the steps preemption saves."""
    from transformers import TrainerCallback

    class StageCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            checkpoints.stage(state.global_step, model)

    return StageCheckpoints()


def train_and_checkpoint(
    trainer: Any, reporter: StepReporter, checkpoints: Any, evaluator: SavePointEvaluator | None
) -> FitResult:
    """Run a TRL trainer wired to ``reporter``; then score the end (every rank) and write
    ``final``/``best`` (main rank only).

    Adds the run's non-finite guard (:mod:`flux_core.run.nonfinite`) and SIGTERM handling
    (:mod:`flux_core.run.preemption`: raises ``Preempted`` after writing ``checkpoint-N``) to
    the trainer's callbacks, makes every ``checkpoint-N`` hold transformers' resume
    files (with several processes every rank writes its own: its RNG state and, under FSDP
    or DeepSpeed, its optimizer shard), and continues a resumed
    run with ``trainer.train(resume_from_checkpoint=...)``, which restores the optimizer,
    scheduler and RNG states and skips the batches already trained on
    (:mod:`flux_core.run.resume`). An out-of-memory error in a training step turns gradient
    checkpointing on and runs the step again when ``gradient_checkpointing: auto`` had it
    off; otherwise it is a one-line error (:func:`flux_core.trl_based.memory.out_of_memory_fallback`).
    """
    run = reporter.run
    trainer.add_callback(run.guard.trl_callback(trainer))
    trainer.add_callback(run.preemption.trl_callback(trainer, checkpoints))
    trainer.add_callback(staging_callback(checkpoints))
    checkpoints.attach(run, lambda directory: write_trl_state(trainer, directory))
    resume_from = None
    if run.resume is not None and run.resume.step >= reporter.config.num_steps:
        # transformers would train one step past max_steps (flux_core.run.finished catches what it can earlier)
        raise ResumeError(
            f"cannot resume {run.resume.path}: it is at step {run.resume.step} and this run is "
            f"{reporter.config.num_steps} steps long; nothing to train: raise num_steps or num_epochs"
        )
    if run.resume is not None:
        # The checkpoint's top level holds merged weights; a LoRA run continues its adapter/.
        restore_adapter(trainer.model, run.resume.path)
        resume_from = str(run.resume.path)
    try:
        with out_of_memory_fallback(trainer, reporter.config.gradient_checkpointing):
            trainer.train(resume_from_checkpoint=resume_from)
    finally:
        reporter.close()
    step = trainer.state.global_step
    if run.preemption.stopped_at is not None:
        trainer.accelerator.wait_for_everyone()  # the main rank has written checkpoint-N
        raise Preempted(run.preemption.stopped_at)
    if evaluator is not None:
        evaluator.finish(step)
    checkpoints.gather_final(trainer.model)
    if trainer.accelerator.is_main_process:
        checkpoints.finalize(step, trainer.model)
    return FitResult.from_run(reporter.history, step, checkpoints)
