"""RunContext: what ``FluxTrainer.fit`` hands an algorithm runner besides config and data.

A runner's ``fit(dataset, eval_dataset, callbacks, run=None)`` passes ``run`` on to the
core pieces it builds (:class:`~flux_core.run.reporter.StepReporter`,
:class:`~flux_core.run.checkpoint.CheckpointManager`,
:func:`~flux_core.trl_based.callbacks.train_and_checkpoint`); ``None`` means a fresh run with the
config's settings.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux_core.run.nonfinite import NonFiniteGuard
from flux_core.run.preemption import Preemption
from flux_core.run.resume import ResumePoint, find_resume_point, load_resume_point, rewrite_history


@dataclass
class RunContext:
    """One run's cross-cutting state.

    Attributes:
        guard: the non-finite guard (``config.on_nonfinite``, ``config.max_skipped_steps``),
            carrying the steps a resumed run already skipped.
        resume: the ``checkpoint-N`` to continue from (``None``: start at step 1).
        num_examples: rows of training data (recorded in checkpoints, checked on resume).
        data: the training data's fingerprint and names
            (:func:`flux_core.data.load.training_data_identity`; recorded in checkpoints,
            checked on resume).
        preemption: the SIGTERM flag (:mod:`flux_core.run.preemption`).
    """

    guard: NonFiniteGuard
    resume: ResumePoint | None = None
    num_examples: int | None = None
    preemption: Preemption = field(default_factory=Preemption)
    data: dict[str, str] | None = None

    @classmethod
    def fresh(cls, config: Any, num_examples: int | None = None, data: dict[str, str] | None = None) -> RunContext:
        """A run from step 1 with ``config``'s settings."""
        return cls(guard=NonFiniteGuard.from_config(config), num_examples=num_examples, data=data)

    @classmethod
    def start(
        cls,
        config: Any,
        resume: bool | str | Path | None,
        num_examples: int | None,
        is_main: bool = True,
        data: dict[str, str] | None = None,
        allow_data_change: bool = False,
    ) -> RunContext:
        """The context of a run that ``resume`` asks to continue (see :mod:`flux_core.run.resume`).

        ``resume=True`` with no checkpoint in ``output_dir`` yet starts at step 1 (with a
        warning), so a job script can always pass ``--resume``. The main process then
        rewrites ``metrics.jsonl`` to the resumed steps. Training data other than the
        checkpoint's (``data``) is refused unless ``allow_data_change``.
        """
        if not resume:
            return cls.fresh(config, num_examples, data)
        output_dir = Path(config.output_dir)
        path = find_resume_point(output_dir, resume)
        point = None
        if path is None:
            warnings.warn(f"--resume: no checkpoint in {output_dir} yet; starting at step 1", UserWarning, stacklevel=2)
        else:
            point = load_resume_point(path, config, num_examples, data, allow_data_change)
        if is_main:
            rewrite_history(output_dir, point.history if point else [])
            if point is not None:
                print(f"flux: resuming from {point.path} (step {point.step})", file=sys.stderr)
        skipped = point.state.get("skipped_steps") if point else None
        guard = NonFiniteGuard.from_config(config, skipped)
        return cls(guard=guard, resume=point, num_examples=num_examples, data=data)
