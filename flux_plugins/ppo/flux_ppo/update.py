"""Phase 4 of a PPO step: the update, ``ppo_epochs`` passes over one :class:`~flux_ppo.experience.Experience`.

:class:`flux_ppo.experience.ExperienceMaker` makes the experience (phases 1-3);
:class:`PPOUpdater` trains on it: each epoch shuffles the rollout into ``num_minibatches``
minibatches and takes one optimizer step per minibatch on ``policy_loss + vf_coef *
value_loss``. The policy loss is the registered one ``algorithm.loss`` names (the plugin
seam, see :mod:`flux_ppo.losses`), weighted by the importance weights of a server's rollouts;
the value loss is clipped around the rollout's values.

Several processes: every process holds the whole rollout and shuffles it alike; each
minibatch is split into ``num_processes`` shares, one per process, and DDP averages the
gradients of the wrapped policy and critic (:func:`trained_modules`).

The runner builds the update's pieces with :func:`trained_modules` and :func:`build_optimizer`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flux_core import FluxConfig, FluxError, Loss, NonFiniteGuard, optimizer_learning_rate
from flux_ppo.advantages import masked_mean
from flux_ppo.config import PPOAlgorithmConfig
from flux_ppo.experience import Experience, RolloutBatch
from flux_ppo.losses import PolicyLossInputs, approx_kl, clipped_value_loss, policy_clip_fraction, value_clip_fraction
from flux_ppo.models import CriticForward, completion_logprobs


def trained_modules(policy: nn.Module, value_model: nn.Module, accelerator: Any) -> tuple[nn.Module, nn.Module]:
    """Policy and critic as the update calls them: the critic as a :class:`CriticForward`.

    The trained networks go through accelerate: under several processes DDP all-reduces
    (averages) their gradients in backward. The frozen reference and reward models are
    not wrapped (no gradients to reduce); the rollout and no-grad scoring passes use the
    plain modules, which share the wrapped ones' parameters.
    """
    policy_train: nn.Module = policy
    critic_train: nn.Module = CriticForward(value_model)
    if accelerator.num_processes > 1:
        policy_train, critic_train = accelerator.prepare(policy_train, critic_train)
    return policy_train, critic_train


def build_optimizer(
    config: FluxConfig, policy: nn.Module, value_model: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """One AdamW over the policy's then the critic's trainable parameters, and its LR schedule."""
    algorithm = config.algorithm
    value_lr = algorithm.value_learning_rate or config.learning_rate
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr},
        ],
        eps=algorithm.adam_epsilon,
        weight_decay=0.0,
    )
    num_steps = config.num_steps
    decay = (lambda step: 1.0 - step / num_steps) if algorithm.lr_scheduler == "linear" else (lambda step: 1.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, decay)


@dataclass(frozen=True)
class MinibatchLosses:
    """One process's share of a minibatch after the forward: the loss and what its statistics read."""

    inputs: PolicyLossInputs
    values: Tensor
    old_values: Tensor
    returns: Tensor
    policy_loss: Tensor
    value_loss: Tensor
    loss: Tensor

    def diagnostics(self, cliprange: float, cliprange_value: float) -> list[Tensor]:
        """Policy and value loss, policy and value clip fractions and approximate KL (token means)."""
        mask = self.inputs.completion_mask
        return [
            self.policy_loss,
            self.value_loss,
            policy_clip_fraction(self.inputs, cliprange),
            value_clip_fraction(self.values, self.old_values, self.returns, mask, cliprange_value),
            approx_kl(self.inputs.logprobs, self.inputs.old_logprobs, mask),
        ]


class PPOUpdater:
    """Minibatch updates of policy and critic on one experience; returns the mean of each statistic.

    Args:
        algorithm: the run's ``algorithm:`` block.
        policy, critic: the trained networks as the update calls them (DDP-wrapped under
            several processes); ``critic`` is a :class:`flux_ppo.models.CriticForward`.
        optimizer: one AdamW over two parameter groups, the policy's then the critic's.
        loss: the registered policy loss.
        guard: the run's non-finite guard (``on_nonfinite``).
        shuffle_generator: draws the minibatch order, apart from sampling's RNG stream.
        rollout_size, minibatch_size: this process's rows in the rollout and in a minibatch.
        accelerator: accelerate's process group (reduces the processes' statistics).
        mixed_precision: the runner's autocast context, read at each forward.
    """

    def __init__(
        self,
        algorithm: PPOAlgorithmConfig,
        *,
        policy: nn.Module,
        critic: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss: Loss,
        guard: NonFiniteGuard,
        shuffle_generator: torch.Generator,
        rollout_size: int,
        minibatch_size: int,
        accelerator: Any,
        mixed_precision: Callable[[], AbstractContextManager],
    ):
        self.algorithm = algorithm
        self.policy = policy
        self.critic = critic
        self.optimizer = optimizer
        self.loss = loss
        self.guard = guard
        self.shuffle_generator = shuffle_generator
        self.rollout_size = rollout_size
        self.minibatch_size = minibatch_size
        self.accelerator = accelerator
        self.mixed_precision = mixed_precision
        self.num_processes, self.process_index = accelerator.num_processes, accelerator.process_index

    def update(self, experience: Experience, step: int) -> dict[str, float]:
        """``ppo_epochs`` passes of minibatch updates; returns the mean of each statistic.

        Every process holds the whole rollout and shuffles it alike; each minibatch is split
        into ``num_processes`` shares, one per process. A process's loss is its share's
        token mean scaled by ``its tokens * num_processes / minibatch tokens``, so the
        gradients DDP averages are those of the minibatch's token mean, as on one process.

        Before each optimizer update the non-finite guard checks its loss, gradient norm
        and learning rate (``on_nonfinite``): ``stop`` raises, ``skip`` drops that update.
        Every process checks the same (reduced) numbers, so all take the same decision.
        """
        stats = defaultdict(list)
        for _ in range(self.algorithm.ppo_epochs):
            order = torch.randperm(self.rollout_size * self.num_processes, generator=self.shuffle_generator)
            for minibatch in order.split(self.minibatch_size * self.num_processes):
                for name, value in self._minibatch_update(experience, minibatch, step).items():
                    stats[name].append(value)
        return {name: sum(values) / len(values) for name, values in stats.items()}

    def _minibatch_update(self, experience: Experience, minibatch: Tensor, step: int) -> dict[str, float]:
        """One optimizer update on ``minibatch`` (global row ids), of which this process trains its share."""
        algorithm = self.algorithm
        share, rank = self.minibatch_size, self.process_index
        rows = minibatch[rank * share : (rank + 1) * share]
        batch = experience.batch.select(rows)
        tokens = batch.completion_mask.sum()
        total_tokens = experience.batch.completion_mask[minibatch].sum()
        losses = self._losses(experience, batch, rows)
        grad_norm, value_grad_norm = self._backward(losses.loss, tokens, total_tokens)
        with torch.no_grad():
            means = self._global_means(
                losses.diagnostics(algorithm.cliprange, algorithm.cliprange_value), tokens, total_tokens
            )
        policy_loss, value_loss, clipfrac, value_clipfrac, kl = means
        # One process: the loss itself, not the sum of its rounded parts.
        loss = losses.loss.item() if self.num_processes == 1 else policy_loss + algorithm.vf_coef * value_loss
        checked = {
            "loss": loss,
            "grad_norm": math.hypot(grad_norm.item(), value_grad_norm.item()),  # NaN/inf propagate
            "learning_rate": optimizer_learning_rate(self.optimizer),
        }
        self._step_unless_nonfinite(step, checked)
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "clipfrac": clipfrac,
            "value_clipfrac": value_clipfrac,
            "approx_kl": kl,
            "grad_norm": grad_norm.item(),
            "value_grad_norm": value_grad_norm.item(),
        }

    def _losses(self, experience: Experience, batch: RolloutBatch, rows: Tensor) -> MinibatchLosses:
        """Forward ``batch`` (the experience at ``rows``) through policy and critic; the PPO losses."""
        algorithm = self.algorithm
        mask, length = batch.completion_mask, batch.completion_length
        with self.mixed_precision():
            logprobs, _ = completion_logprobs(
                self.policy, batch.input_ids, batch.attention_mask, length, algorithm.temperature
            )
            values = self.critic(batch.input_ids, batch.attention_mask, length)
        inputs = PolicyLossInputs(
            logprobs=logprobs,
            old_logprobs=experience.logprobs[rows],
            advantages=experience.advantages[rows],
            completion_mask=mask,
            ref_logprobs=None if experience.ref_logprobs is None else experience.ref_logprobs[rows],
        )
        per_token_loss = self._policy_loss_per_token(inputs)
        if experience.is_weights is not None:  # server rollouts: truncated importance sampling
            per_token_loss = per_token_loss * experience.is_weights[rows]
        policy_loss = masked_mean(per_token_loss, mask)
        old_values, returns = experience.values[rows], experience.returns[rows]
        value_loss = clipped_value_loss(values, old_values, returns, mask, algorithm.cliprange_value)
        loss = policy_loss + algorithm.vf_coef * value_loss
        return MinibatchLosses(inputs, values, old_values, returns, policy_loss, value_loss, loss)

    def _policy_loss_per_token(self, inputs: PolicyLossInputs) -> Tensor:
        per_token = self.loss.fn(inputs, cliprange=self.algorithm.cliprange, **self.algorithm.loss_kwargs)
        if not isinstance(per_token, Tensor) or per_token.shape != inputs.logprobs.shape:
            shape = tuple(per_token.shape) if isinstance(per_token, Tensor) else type(per_token).__name__
            raise FluxError(
                f"ppo loss '{self.loss.name}' must return one value per completion token "
                f"(shape {tuple(inputs.logprobs.shape)}), got {shape}"
            )
        return per_token

    def _backward(self, loss: Tensor, tokens: Tensor, total_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Gradients of ``loss`` (scaled for DDP's average), clipped; the policy's and critic's norms."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.num_processes > 1:  # DDP averages the processes' gradients
            (loss * (tokens * self.num_processes / total_tokens.clamp(min=1))).backward()
        else:
            loss.backward()
        # Policy and critic are clipped each on its own: one joint norm lets the critic's
        # (large, early) value-loss gradient shrink the policy's step to almost nothing.
        policy_params, value_params = (group["params"] for group in self.optimizer.param_groups)
        max_norm = self.algorithm.max_grad_norm if self.algorithm.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(policy_params, max_norm)
        value_grad_norm = torch.nn.utils.clip_grad_norm_(value_params, max_norm)
        return grad_norm, value_grad_norm

    def _global_means(self, means: list[Tensor], tokens: Tensor, total_tokens: Tensor) -> list[float]:
        """Token-weighted means over the whole minibatch from each process's means over its rows."""
        if self.num_processes == 1:
            return [mean.item() for mean in means]
        stacked = torch.stack([mean.detach().float() for mean in means]) * (tokens / total_tokens.clamp(min=1))
        return self.accelerator.reduce(stacked, reduction="sum").tolist()

    def _step_unless_nonfinite(self, step: int, checked: dict[str, float]) -> None:
        """The optimizer step, unless the guard drops it (``on_nonfinite: skip``; ``stop`` raises)."""
        if self.guard.check(step, checked):
            self.optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient alone
        else:
            self.optimizer.step()
