"""Feed any Flux :class:`~flux_core.rollout.RolloutBackend` to TRL's GRPOTrainer.

TRL generates locally by itself; a backend that is not local (a server) reaches the
trainer through TRL's ``rollout_func`` seam, so the GRPO algorithm never changes when a
backend is added.
"""

from __future__ import annotations

from typing import Any, Callable

from flux_core.rollout import RolloutBackend, SamplingParams


def as_trl_rollout_func(backend: RolloutBackend, sampling: SamplingParams) -> Callable[[list, Any], dict]:
    """A ``rollout_func(prompts, trainer)`` for ``GRPOTrainer`` that generates with ``backend``.

    TRL hands over each prompt already repeated ``num_generations`` times, so one
    completion is asked per entry. Weights are synced once per optimizer step, before
    the first generation that follows it.
    """
    synced_step = None

    def rollout_func(prompts: list, trainer: Any) -> dict:
        nonlocal synced_step
        step = trainer.state.global_step
        if step != synced_step:
            backend.sync_weights(trainer.model)
            synced_step = step
        rollouts = backend.generate(prompts, n=1, sampling=sampling)
        logprobs = [rollout.logprobs for rollout in rollouts]
        return {
            "prompt_ids": [rollout.prompt_ids for rollout in rollouts],
            "completion_ids": [rollout.completion_ids for rollout in rollouts],
            # TRL reads sampling log-probs only for importance-sampling correction; None = not reported.
            "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
        }

    return rollout_func
