"""Online DPO's completions from any Flux :class:`~flux_core.RolloutBackend` (an SGLang server, ``flux serve``).

TRL 1.16's ``OnlineDPOTrainer`` has no ``rollout_func`` seam as ``GRPOTrainer`` has: it samples in
``training_step`` through its own ``_generate(model, prompts, images)``, or through vLLM (``use_vllm``, a
vLLM server or colocated engine and nothing else). So with a server backend, :class:`BackendGeneration`
stands in for the trainer's ``_generate``: it asks the backend for two completions per prompt and returns
the tensors ``training_step`` reads, laid out as TRL's own generation lays them out. Everything after
generation (rewards, ranking, the DPO loss) is TRL's, unchanged. Without a server TRL generates itself.

The server's per-token log-probs are not used: online DPO recomputes the policy's and the reference's
log-probs of both completions, and its loss has no importance-sampling ratio to correct.
"""

from __future__ import annotations

from typing import Any

from flux_core import RolloutBackend, SamplingParams

COMPLETIONS_PER_PROMPT = 2  # online DPO ranks two samples of each prompt


class BackendGeneration:
    """``trainer._generate`` for ``OnlineDPOTrainer`` that samples with ``backend``.

    Weights are synced once per optimizer step, before the first generation that follows it;
    :meth:`install` syncs before training starts and registers the sync after the last step.
    """

    def __init__(self, backend: RolloutBackend, sampling: SamplingParams):
        self.backend, self.sampling = backend, sampling
        self.trainer: Any = None
        self.synced_step: int | None = None

    def install(self, trainer: Any) -> None:
        """Make ``trainer`` generate with the backend; sync the (possibly LoRA-wrapped) model now."""
        self.trainer = trainer
        trainer._generate = self
        self.sync(trainer.model, trainer.state.global_step)
        trainer.add_callback(self._final_sync())

    def sync(self, model: Any, step: int) -> None:
        if step != self.synced_step:
            self.backend.sync_weights(model)
            self.synced_step = step

    def __call__(self, model: Any, prompts: list, images: Any = None) -> tuple:
        """``(prompt_ids, prompt_mask, completion_ids, completion_mask, None)`` for ``2 x len(prompts)`` rows:
        every prompt's first completion, then every prompt's second (TRL splits rewards in two halves)."""
        import torch

        if images is not None:
            from flux_core import FluxError

            raise FluxError("online DPO with a rollout server takes text prompts only (this batch has images)")
        self.sync(self.trainer.model, self.trainer.state.global_step)
        rollouts = self.backend.generate(prompts, n=COMPLETIONS_PER_PROMPT, sampling=self.sampling)
        # the backend groups by prompt (p0c0, p0c1, p1c0, ...); TRL wants blocks (p0c0, p1c0, ..., p0c1, p1c1, ...)
        ordered = [
            rollouts[COMPLETIONS_PER_PROMPT * i + k] for k in range(COMPLETIONS_PER_PROMPT) for i in range(len(prompts))
        ]
        tokenizer = self.trainer._tokenizer
        pad = tokenizer.pad_token_id
        prompt_width = max(len(r.prompt_ids) for r in ordered)
        completion_width = max(len(r.completion_ids) for r in ordered)
        prompt_ids = [[pad] * (prompt_width - len(r.prompt_ids)) + r.prompt_ids for r in ordered]
        prompt_mask = [[0] * (prompt_width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in ordered]
        completion_ids = [r.completion_ids + [pad] * (completion_width - len(r.completion_ids)) for r in ordered]
        completion_mask = [
            [1] * len(r.completion_ids) + [0] * (completion_width - len(r.completion_ids)) for r in ordered
        ]
        device = self.trainer.accelerator.device
        as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long, device=device)  # noqa: E731
        return (
            as_tensor(prompt_ids),
            as_tensor(prompt_mask),
            as_tensor(completion_ids),
            as_tensor(completion_mask),
            None,
        )

    def _final_sync(self) -> Any:
        """``on_train_end``: push the last step's weights (generation syncs only before it samples)."""
        from transformers import TrainerCallback

        generation = self

        class _FinalSync(TrainerCallback):
            def on_train_end(self, args, state, control, **kwargs):
                generation.sync(kwargs["model"], state.global_step)

        return _FinalSync()
