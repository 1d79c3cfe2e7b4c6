"""Rollouts: the one interface online algorithms (GRPO, PPO) generate completions through.

An algorithm asks a :class:`RolloutBackend` for ``n`` completions of each prompt and never
cares how they are produced::

    backend = create_backend(config, model, tokenizer)
    rollouts = backend.generate(prompts, n=8, sampling=SamplingParams(max_new_tokens=64))
    backend.sync_weights(model)   # after each optimizer step

:class:`LocalBackend` (the default) samples with ``transformers`` ``generate`` on the
policy being trained, as TRL does without vLLM.

:class:`~flux_core.online.sglang.SGLangBackend` (when ``sglang.base_url`` is set) sends
the prompts' token ids to a server speaking SGLang's native HTTP API (SGLang, or
``flux serve``) and syncs weights through ``/update_weights_from_disk``; its rollouts carry
the server's per-token ``logprobs`` (the behaviour policy's), which GRPO and PPO use for
off-policy correction. See docs/rollouts.md.

Adding another server backend: write a class with the two methods of
:class:`RolloutBackend` and return it from :func:`flux_core.online.backends.create_backend` when its setting is
present. Algorithms need no change: GRPO feeds any non-local backend to TRL through
``rollout_func`` (see ``flux_grpo.rollouts``), PPO calls ``generate`` directly.
Overlapping generation with training (``adaptive_async``, GRPO) runs on this seam too:
:mod:`flux_core.online.async_rollout` drives a server backend from a background thread.

This module imports torch lazily, so importing it is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from flux_core.errors import FluxError
from flux_core.online.tokens import cut_at_eos, encode_prompt, eos_token_ids


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled.

    Attributes:
        max_new_tokens: most tokens per completion.
        temperature: softmax temperature; ``0`` means greedy decoding.
        top_p: nucleus sampling threshold in (0, 1]; 1 keeps every token.
        top_k: keep only the k most likely tokens; 0 disables it.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise FluxError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise FluxError(f"temperature must be >= 0 (0 = greedy), not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise FluxError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise FluxError(f"top_k must be >= 0 (0 = off), not {self.top_k}")


@dataclass(frozen=True)
class Rollout:
    """One sampled completion.

    Attributes:
        prompt_index: index of its prompt in the list passed to ``generate``.
        prompt_ids: token ids of the prompt (chat template applied for chat prompts).
        completion_ids: generated token ids, up to and including the end-of-sequence
            token when one was produced; no padding.
        text: the decoded completion, special tokens removed.
        truncated: ``True`` when generation stopped at ``max_new_tokens`` without an
            end-of-sequence token.
        logprobs: log-probability of each completion token under the sampling policy,
            when the backend reports it (servers do); ``None`` for :class:`LocalBackend`,
            whose callers recompute log-probs with the policy anyway.
    """

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool
    logprobs: list[float] | None = None


@runtime_checkable
class RolloutBackend(Protocol):
    """Produces completions for online algorithms. See the module docstring."""

    is_local: bool
    """True when the backend samples from the in-process policy (weights always current)."""

    def generate(self, prompts: Sequence[Any], n: int, sampling: SamplingParams) -> list[Rollout]:
        """Return ``len(prompts) * n`` rollouts grouped by prompt: the ``n`` of ``prompts[0]`` first.

        A prompt is a string or a list of chat messages (``{"role": ..., "content": ...}``).
        """
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the next ``generate`` sample from ``model``'s current weights."""
        ...


class LocalBackend:
    """Samples with ``model.generate`` on the policy itself (no server, no weight copies).

    Prompts are left-padded into one batch (``max_batch_size`` rows at a time); chat
    prompts go through the tokenizer's chat template with a generation prompt. The model
    is put in eval mode for generation and restored afterwards.
    """

    is_local = True

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_token_ids = eos_token_ids(model, tokenizer)

    def sync_weights(self, model: Any) -> None:
        self.model = model  # generation reads the live parameters: nothing to copy

    def generate(self, prompts: Sequence[Any], n: int, sampling: SamplingParams) -> list[Rollout]:
        if n < 1:
            raise FluxError(f"n (completions per prompt) must be at least 1, not {n}")
        jobs = [(index, encode_prompt(self.tokenizer, prompt)) for index, prompt in enumerate(prompts) for _ in range(n)]
        step = self.max_batch_size or len(jobs) or 1
        rollouts: list[Rollout] = []
        for start in range(0, len(jobs), step):
            rollouts.extend(self._generate_batch(jobs[start : start + step], sampling))
        return rollouts

    def _generate_batch(self, jobs: list[tuple[int, list[int]]], sampling: SamplingParams) -> list[Rollout]:
        import torch

        pad_id = self.tokenizer.pad_token_id
        width = max(len(ids) for _, ids in jobs)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for _, ids in jobs])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in jobs])
        device = next(self.model.parameters()).device
        settings: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=self.eos_token_ids,
            use_cache=True,
        )
        if sampling.temperature > 0:
            settings.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )
        else:
            settings.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **settings
                )
        finally:
            self.model.train(was_training)
        rollouts = []
        for (prompt_index, prompt_ids), row in zip(jobs, output[:, width:].tolist()):
            completion_ids, truncated = cut_at_eos(row, self.eos_token_ids)
            text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
            rollouts.append(Rollout(prompt_index, prompt_ids, completion_ids, text, truncated))
        return rollouts


def rollout_warnings(config: Any) -> list[str]:
    """Config settings that ask for rollout behaviour this run cannot have."""
    messages = []
    if config.adaptive_async.enabled and not config.sglang.base_url:
        messages.append(
            "adaptive_async.enabled needs a rollout server (sglang.base_url): without one, rollouts are generated "
            "in the training process by the model being trained, so rollouts and updates alternate (synchronous)"
        )
    return messages
