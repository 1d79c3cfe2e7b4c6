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
    the first generation that follows it; the caller syncs once before training starts
    (:class:`~flux_grpo.runner.GRPORunner` does, once TRL has wrapped the model).
    """
    synced_step = 0

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


class _SyncedByRolloutFunc:
    """Stands where TRL keeps its vLLM generation object; ``rollout_func`` already syncs the server."""

    def sync_weights(self) -> None:
        pass


def correct_with_server_logprobs(trainer: Any) -> None:
    """Make TRL apply its importance-sampling correction to a server backend's rollouts.

    TRL 1.16 recomputes the policy's log-probs and weights each token's loss by the
    truncated/masked ratio ``exp(logp_policy - logp_server)`` (``vllm_importance_sampling_*``
    settings in ``trl:``) only when ``use_vllm`` is on. The server's log-probs arrive
    through ``rollout_func``'s ``logprobs``; this switches that path on without loading
    vLLM (its weight sync is a no-op: ``rollout_func`` syncs). Set
    ``trl: {vllm_importance_sampling_correction: false}`` to train without the correction.
    """
    trainer.use_vllm = True
    trainer.vllm_mode = "server"
    trainer.vllm_generation = _SyncedByRolloutFunc()
    trainer._last_loaded_step = trainer.state.global_step
