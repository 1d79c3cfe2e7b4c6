"""Preemption: SIGTERM ends a run at a step boundary with a checkpoint to resume from.

Schedulers (SLURM, Kubernetes, spot instances) send SIGTERM and, after a grace
period, SIGKILL. While ``FluxTrainer.fit`` runs, SIGTERM only sets a flag; the run
finishes the optimizer step in progress, writes ``checkpoint-N`` for it (with the full
resume state, even between ``save_steps``; it is not scored for ``best``), and raises
:class:`Preempted`: ``flux train`` prints one line saying how to resume and exits with
status 143 (128 + SIGTERM), as a process killed by SIGTERM would.

A second SIGTERM while that checkpoint is written changes nothing (the save goes on).
SIGINT (Ctrl-C) still interrupts at once; the checkpoint being written then never
appears under its real name (it is staged, :mod:`flux_core.run.checkpoint`) and the next
start removes the staged remains (:mod:`flux_core.run.directory`).

Under torchrun every rank receives the signal, not necessarily during the same step:
the ranks agree at the end of every step (a one-number all-reduce), so all of them stop
after the same step; only the main process writes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from flux_core.errors import FluxError
from flux_core.run.layout import checkpoint_name

EXIT_STATUS = 128 + signal.SIGTERM  # 143


class Preempted(FluxError):
    """The run stopped on SIGTERM after writing ``checkpoint-N``; resume continues it."""

    def __init__(self, step: int):
        super().__init__(f"preempted at step {step}; {checkpoint_name(step)} holds the run; continue it with resume")
        self.step = step


class Preemption:
    """The SIGTERM flag of one run; :meth:`installed` sets the handler for the run's duration."""

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True  # a second SIGTERM lands here too: the save in progress goes on

    @contextlib.contextmanager
    def installed(self) -> Iterator[Preemption]:
        """Route SIGTERM to this flag while the block runs (main thread only; signal
        handlers cannot be set elsewhere), then restore the previous handler."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    def should_stop(self, accelerator: Any = None) -> bool:
        """Whether to stop after this step: on any rank's request, agreed by all ranks."""
        if accelerator is None or accelerator.num_processes <= 1:
            return self.requested
        import torch

        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def trl_callback(self, trainer: Any, checkpoints: Any):
        """A ``TrainerCallback`` that stops a transformers/TRL run after the step in which
        SIGTERM arrived and has ``checkpoints`` write ``checkpoint-N`` for it.

        Add it after the callback that reports steps (its ``on_log`` must see the step reported).
        """
        from transformers import TrainerCallback

        preemption = self

        class PreemptionCallback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if preemption.stopped_at is None and preemption.should_stop(trainer.accelerator):
                    preemption.stopped_at = state.global_step
                    checkpoints.save_for_resume_at = state.global_step  # written when this step is logged
                    control.should_training_stop = True

            def on_log(self, args, state, control, logs=None, **kwargs):
                # One process: a SIGTERM that came while this step was logged (or saved)
                # stops here too; this step's metrics are reported by now. (Several
                # processes must agree, which they do at the next on_step_end.)
                single = trainer.accelerator.num_processes == 1
                if single and preemption.requested and preemption.stopped_at is None and logs and "loss" in logs:
                    preemption.stopped_at = state.global_step
                    checkpoints.save_for_resume(state.global_step, trainer.model)
                    control.should_training_stop = True

        return PreemptionCallback()
