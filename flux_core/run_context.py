"""RunContext: what ``FluxTrainer.fit`` hands an algorithm runner besides config and data.

A runner's ``fit(dataset, eval_dataset, callbacks, run=None)`` passes ``run`` on to the
core pieces it builds (:class:`~flux_core.callbacks.StepReporter`,
:class:`~flux_core.checkpoint.CheckpointManager`,
:func:`~flux_core.callbacks.train_and_checkpoint`); ``None`` means a fresh run with the
config's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flux_core.nonfinite import NonFiniteGuard


@dataclass
class RunContext:
    """One run's cross-cutting state.

    Attributes:
        guard: the non-finite guard (``config.on_nonfinite``, ``config.max_skipped_steps``).
    """

    guard: NonFiniteGuard

    @classmethod
    def fresh(cls, config: Any) -> RunContext:
        """A run from step 1 with ``config``'s settings."""
        return cls(guard=NonFiniteGuard.from_config(config))
