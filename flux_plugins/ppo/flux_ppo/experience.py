"""Phases 1-3 of a PPO step: rollout -> scores -> :class:`Experience`.

:class:`ExperienceMaker` turns one step's prompts into the batch the update trains on
(:mod:`flux_ppo.update` is phase 4, :class:`flux_ppo.runner.PPORunner` drives both):

1. **rollout**: sample ``num_generations`` completions per prompt through the shared
   rollout interface (:mod:`flux_core.online.rollout`);
2. **score**: the configured rewards, minus ``missing_eos_penalty`` for completions cut
   without an EOS token;
3. **experience**: log-probs of the sampling policy and of the reference and the critic's
   values, in one no-grad pass; per-token rewards = ``-kl_coef * KL`` plus the score on the
   last token; GAE advantages and returns; whitening.

Under several processes each samples, scores and runs the no-grad pass on its own share;
the results are gathered, so every process holds the whole rollout and computes the same
KL, GAE, whitening statistics and metrics as one process with the global batch would.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flux_core import RewardFunction, RewardScores, Rollout, RolloutBackend, SamplingParams, score_completions
from flux_ppo.advantages import (
    explained_variance,
    generalized_advantage_estimation,
    kl_penalty,
    masked_mean,
    masked_whiten,
    token_level_rewards,
)
from flux_ppo.config import PPOAlgorithmConfig
from flux_ppo.models import ReferencePolicy, completion_logprobs, completion_values
from flux_ppo.scoring import TokenRewardModel

# ---------------------------------------------------------------------- rollout tensors


@dataclass(frozen=True)
class RolloutBatch:
    """A rollout as tensors: left-padded prompts followed by right-padded completions.

    Attributes:
        input_ids: ``[n, prompt_width + completion_length]``.
        attention_mask: 1 on prompt and completion tokens, 0 on padding (same shape).
        completion_mask: ``[n, completion_length]``, 1 on completion tokens (EOS included).
        truncated: ``[n]``, True where generation hit ``max_completion_length`` without EOS.
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    truncated: Tensor

    @property
    def completion_length(self) -> int:
        return self.completion_mask.size(1)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> RolloutBatch:
        tensors = (self.input_ids, self.attention_mask, self.completion_mask, self.truncated)
        return RolloutBatch(*(fn(tensor) for tensor in tensors))

    def select(self, rows: Tensor) -> RolloutBatch:
        """The rollouts at ``rows``."""
        return self._map(lambda tensor: tensor[rows])

    def to(self, device: torch.device) -> RolloutBatch:
        return self._map(lambda tensor: tensor.to(device))


def collate_rollouts(rollouts: Sequence[Rollout], pad_token_id: int) -> RolloutBatch:
    """Pad rollouts so every completion starts at the same column."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_length = max(max(len(r.completion_ids) for r in rollouts), 1)
    input_ids, attention_mask, completion_mask = [], [], []
    for rollout in rollouts:
        prompt, completion = rollout.prompt_ids, rollout.completion_ids
        left, right = prompt_width - len(prompt), completion_length - len(completion)
        input_ids.append([pad_token_id] * left + prompt + completion + [pad_token_id] * right)
        attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_mask.append([1.0] * len(completion) + [0.0] * right)
    return RolloutBatch(
        input_ids=torch.tensor(input_ids),
        attention_mask=torch.tensor(attention_mask),
        completion_mask=torch.tensor(completion_mask),
        truncated=torch.tensor([r.truncated for r in rollouts]),
    )


@dataclass(frozen=True)
class Experience:
    """One rollout with everything the PPO update needs (tensors ``[n, completion_length]``).

    ``is_weights``: truncated importance weights of a server's rollouts (see
    :func:`behaviour_importance_weights`); ``None`` when the policy itself sampled them.
    """

    batch: RolloutBatch
    logprobs: Tensor
    ref_logprobs: Tensor | None
    values: Tensor
    advantages: Tensor
    returns: Tensor
    metrics: dict[str, float]
    is_weights: Tensor | None = None


# ---------------------------------------------------------------------- the pieces, as functions


def prompt_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of prompt ``index`` (in the global batch) at ``step``."""
    return random.Random(f"{seed}:{step}:{index}").getrandbits(63)


def merge_scores(parts: Sequence[RewardScores]) -> RewardScores:
    """One :class:`RewardScores` of the processes' scores, in process order."""
    names = list(parts[0].by_name)
    return RewardScores(
        total=[value for part in parts for value in part.total],
        by_name={name: [value for part in parts for value in part.by_name[name]] for name in names},
        weights=dict(parts[0].weights),
    )


def sequence_scores(
    scores: RewardScores, truncated: Tensor, missing_eos_penalty: float | None, device: torch.device
) -> Tensor:
    """The score of each completion, ``[n]``, with the missing-EOS penalty taken off."""
    # A completion no reward applies to (every reward returned None) scores 0, as in TRL.
    score = torch.tensor([0.0 if value is None else value for value in scores.total], device=device)
    if missing_eos_penalty is not None:
        score = score - missing_eos_penalty * truncated.float()
    return score


def behaviour_importance_weights(
    rollouts: Sequence[Rollout], logprobs: Tensor, mask: Tensor, cap: float
) -> tuple[Tensor | None, dict[str, float]]:
    """Truncated importance weights ``min(exp(logp_policy - logp_behaviour), cap)`` per token.

    ``logp_behaviour`` is what the rollout server reported for each sampled token (its
    weights or numerics may differ from the trainer's); ``logprobs`` are the policy's own,
    recomputed before the update (PPO's ``old_logprobs``). Returns ``(None, {})`` when the
    rollouts carry no server log-probs (local generation samples from the policy itself).
    """
    if any(rollout.logprobs is None for rollout in rollouts):
        return None, {}
    behaviour = torch.zeros_like(logprobs)
    for row, rollout in enumerate(rollouts):
        behaviour[row, : len(rollout.logprobs)] = torch.tensor(rollout.logprobs, dtype=logprobs.dtype)
    difference = (logprobs - behaviour) * mask
    weights = torch.exp(difference).clamp(max=cap) * mask
    tokens = mask.bool()
    metrics = {
        "behaviour_logprob_difference_max": difference[tokens].abs().max().item() if tokens.any() else 0.0,
        "behaviour_is_weight_mean": weights[tokens].mean().item() if tokens.any() else 1.0,
        "behaviour_is_truncated_fraction": (difference[tokens] > math.log(cap)).float().mean().item()
        if tokens.any()
        else 0.0,
    }
    return weights, metrics


def token_kl(logprobs: Tensor, ref_logprobs: Tensor | None, mask: Tensor, estimator: str) -> Tensor:
    """The KL estimate of each completion token; zeros without a reference (``reference_policy: none``)."""
    if ref_logprobs is None:
        return torch.zeros_like(logprobs)
    return kl_penalty(logprobs, ref_logprobs, estimator) * mask


def advantages_and_returns(
    score: Tensor, kl: Tensor, values: Tensor, mask: Tensor, kl_coef: float, algorithm: PPOAlgorithmConfig
) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns of the per-token rewards ``-kl_coef * kl`` (+ ``score`` on the last token)."""
    rewards = token_level_rewards(score, kl, mask, kl_coef)
    if algorithm.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = generalized_advantage_estimation(rewards, values, mask, algorithm.gamma, algorithm.lam)
    if algorithm.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


# ---------------------------------------------------------------------- the maker


class ExperienceMaker:
    """Samples, scores and evaluates one step's rollout; the same :class:`Experience` on every process.

    Args:
        algorithm: the run's ``algorithm:`` block.
        seed: the run's seed (``seed_per_prompt`` derives each prompt's sampling seed from it).
        policy, value_model: the plain (not DDP-wrapped) trained networks; they share their
            parameters with the wrapped ones the update trains.
        reference: where the KL penalty's reference log-probs come from.
        backend: generates the completions (the policy itself or a rollout server).
        reward_functions, token_scorers: the rewards; token scorers read the sampled ids and
            are bound to each rollout before it is scored.
        pad_token_id: the policy tokenizer's pad id.
        chunk_size: rows per no-grad forward (one update minibatch, which fits in memory).
        accelerator: accelerate's process group (gathers of the processes' shares).
        mixed_precision: the runner's autocast context, read at each forward.
    """

    def __init__(
        self,
        algorithm: PPOAlgorithmConfig,
        *,
        seed: int,
        policy: nn.Module,
        value_model: nn.Module,
        reference: ReferencePolicy,
        backend: RolloutBackend,
        reward_functions: list[RewardFunction],
        token_scorers: list[TokenRewardModel],
        pad_token_id: int,
        chunk_size: int,
        accelerator: Any,
        mixed_precision: Callable[[], AbstractContextManager],
    ):
        self.algorithm = algorithm
        self.seed = seed
        self.policy = policy
        self.value_model = value_model
        self.reference = reference
        self.backend = backend
        self.reward_functions = reward_functions
        self.token_scorers = token_scorers
        self.pad_token_id = pad_token_id
        self.chunk_size = chunk_size
        self.accelerator = accelerator
        self.mixed_precision = mixed_precision
        self.device = accelerator.device
        self.num_processes, self.process_index = accelerator.num_processes, accelerator.process_index
        self.sampling = SamplingParams(
            max_new_tokens=algorithm.max_completion_length, temperature=algorithm.temperature
        )

    # ------------------------------------------------------------------ 1-2. rollout and scores

    def rollout(
        self,
        records: list[dict[str, Any]],
        sampling: SamplingParams,
        n: int,
        first_index: int | None = None,
        step: int = 0,
    ) -> tuple[list[Rollout], RewardScores]:
        """Sample ``n`` completions per record and score them.

        ``first_index``: the index of ``records[0]`` in the step's global batch; with
        ``seed_per_prompt`` each prompt is then sampled under its own seed (see :func:`prompt_seed`).
        """
        prompts = [record["prompt"] for record in records]
        with self.mixed_precision():
            if first_index is not None and self.algorithm.seed_per_prompt and sampling.temperature > 0:
                rollouts = self._generate_seeded(prompts, n, sampling, first_index, step)
            else:
                rollouts = self.backend.generate(prompts, n=n, sampling=sampling)
        owners = [records[r.prompt_index] for r in rollouts]
        completions = [
            [{"role": "assistant", "content": r.text}] if isinstance(owner["prompt"], list) else r.text
            for r, owner in zip(rollouts, owners)
        ]
        for scorer in self.token_scorers:  # reward models that score the sampled ids themselves
            scorer.bind(rollouts)
        column_names = sorted({key for record in records for key in record} - {"prompt"})
        columns = {name: [owner.get(name) for owner in owners] for name in column_names}
        scores = score_completions(self.reward_functions, [owner["prompt"] for owner in owners], completions, columns)
        return rollouts, scores

    def _generate_seeded(
        self, prompts: list[Any], n: int, sampling: SamplingParams, first_index: int, step: int
    ) -> list[Rollout]:
        """One generate call per prompt, under a seed of its own: a prompt's completions are the
        same whichever process samples it and whatever else is in its batch."""
        devices = [self.device] if self.device.type == "cuda" else []
        rollouts: list[Rollout] = []
        for offset, prompt in enumerate(prompts):
            with torch.random.fork_rng(devices=devices):  # the run's own RNG stream is left as it was
                torch.manual_seed(prompt_seed(self.seed, step, first_index + offset))
                sampled = self.backend.generate([prompt], n=n, sampling=sampling)
            rollouts.extend(dataclasses.replace(rollout, prompt_index=offset) for rollout in sampled)
        return rollouts

    def _gather(self, rollouts: list[Rollout], scores: RewardScores) -> tuple[list[Rollout], RewardScores]:
        """Every process's rollouts and scores, in process order (with one process: its own)."""
        if self.num_processes == 1:
            return rollouts, scores
        from accelerate.utils import gather_object

        return gather_object(rollouts), merge_scores(gather_object([scores]))

    # ------------------------------------------------------------------ 3. experience

    @torch.no_grad()
    def _score_tokens(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Sampling-policy log-probs, reference log-probs, values and entropy, in chunks
        of one minibatch (the size the update already fits in memory)."""
        temperature, length = self.algorithm.temperature, batch.completion_length
        parts = defaultdict(list)
        for rows in torch.arange(batch.input_ids.size(0)).split(self.chunk_size):
            chunk = batch.select(rows)
            logprobs, entropy = completion_logprobs(
                self.policy, chunk.input_ids, chunk.attention_mask, length, temperature, with_entropy=True
            )
            parts["logprobs"].append(logprobs)
            parts["entropy"].append(entropy)
            parts["values"].append(completion_values(self.value_model, chunk.input_ids, chunk.attention_mask, length))
            ref = self.reference.logprobs(chunk.input_ids, chunk.attention_mask, length, temperature)
            if ref is not None:
                parts["ref_logprobs"].append(ref)
        ref_logprobs = torch.cat(parts["ref_logprobs"]) if parts["ref_logprobs"] else None
        return torch.cat(parts["logprobs"]), ref_logprobs, torch.cat(parts["values"]), torch.cat(parts["entropy"])

    def _score_all_tokens(self, batch: RolloutBatch, local_count: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """:meth:`_score_tokens` of the whole ``batch``: each process scores its own ``local_count``
        rows and the parts are gathered."""
        with self.mixed_precision():
            if self.num_processes == 1:
                return self._score_tokens(batch)
            start = self.process_index * local_count
            own = batch.select(torch.arange(start, start + local_count, device=self.device))
            parts = self._score_tokens(own)
            logprobs, ref_logprobs, values, entropy = (
                None if part is None else self.accelerator.gather(part.contiguous()) for part in parts
            )
            return logprobs, ref_logprobs, values, entropy

    def make_experience(self, records: list[dict[str, Any]], first_index: int, step: int, kl_coef: float) -> Experience:
        """The experience of the step's global rollout, the same on every process.

        ``records`` are this process's share of the prompts, at ``first_index`` in the global
        batch; ``kl_coef`` is the KL controller's coefficient for this step.
        """
        algorithm = self.algorithm
        rollouts, scores = self.rollout(records, self.sampling, algorithm.num_generations, first_index, step)
        local_count = len(rollouts)
        rollouts, scores = self._gather(rollouts, scores)
        # Padded to the global widths, so each row is scored as one process would score it.
        batch = collate_rollouts(rollouts, self.pad_token_id).to(self.device)
        mask = batch.completion_mask
        score = sequence_scores(scores, batch.truncated, algorithm.missing_eos_penalty, self.device)
        logprobs, ref_logprobs, values, entropy = self._score_all_tokens(batch, local_count)
        is_weights, is_metrics = behaviour_importance_weights(rollouts, logprobs, mask, algorithm.behaviour_is_cap)
        kl = token_kl(logprobs, ref_logprobs, mask, algorithm.kl_estimator)
        kl_coef = kl_coef if ref_logprobs is not None else 0.0  # reference_policy: none has no KL penalty
        advantages, returns = advantages_and_returns(score, kl, values, mask, kl_coef, algorithm)

        sequence_kl = kl.sum(dim=1)
        non_score_reward = (-kl_coef * sequence_kl).mean().item()
        metrics = {
            **scores.metrics(),
            "kl": sequence_kl.mean().item(),
            "kl_coef": kl_coef,
            "entropy": masked_mean(entropy, mask).item(),
            "non_score_reward": non_score_reward,
            "rlhf_reward": score.mean().item() + non_score_reward,
            "completion_length": mask.sum(dim=1).mean().item(),
            "truncated_fraction": batch.truncated.float().mean().item(),
            "value_explained_variance": explained_variance(values, returns, mask).item(),
            **is_metrics,
        }
        return Experience(batch, logprobs, ref_logprobs, values, advantages, returns, metrics, is_weights)
