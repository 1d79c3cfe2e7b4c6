"""From rollout to advantages: masked statistics, the per-token KL penalty, reward
shaping, GAE and whitening.

Every tensor here is ``[batch, completion_tokens]`` unless said otherwise, and every
function takes a ``mask`` (1 for a real completion token, 0 for padding after the end
of the completion). Prompt tokens never appear: the runner slices them off before
calling these functions. Each row's mask is a prefix (completion tokens, then padding),
which is what generation produces and what :func:`generalized_advantage_estimation`
relies on to treat the last real token as terminal.

The recipe is InstructGPT's as written down in "The N Implementation Details of RLHF
with PPO" (Huang et al., 2024) and TRL <= 1.12's ``PPOTrainer``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k3"]


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``).

    An all-zero mask gives 0 rather than NaN.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``values`` where ``mask`` is 1; Bessel-corrected when ``unbiased``."""
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise ``values`` to unit variance over the masked entries; padding becomes 0.

    With ``shift_mean`` the result also has zero mean (used for advantages); without it
    the mean is kept (used for rewards, whose sign carries meaning).
    """
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    ``k1`` is the plain log-ratio ``log pi - log ref`` (unbiased, can be negative per
    token; the InstructGPT penalty). ``k3`` is ``exp(log ref - log pi) - 1 - (log ref -
    log pi)``: also unbiased, always >= 0, lower variance (Schulman's "Approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of ``mask`` (0 for an all-zero row)."""
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(dim=1)


def token_level_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Rewards per token: ``-kl_coef * kl`` on every completion token, plus the sequence
    score (shape ``[batch]``) on the last completion token, as in InstructGPT.

    The last token is the EOS token when the completion has one, else the last token
    before truncation at ``max_completion_length``.
    """
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def generalized_advantage_estimation(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) advantages and value targets (returns) per token.

    ``A_t = sum_l (gamma*lam)^l * delta_{t+l}`` with ``delta_t = r_t + gamma*V_{t+1} - V_t``.
    The value after the last completion token is 0 (the episode ends there), which the
    zeroed padding provides. Returns ``(advantages, returns)``, with ``returns =
    advantages + values``; both are 0 on padding.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    length = rewards.size(1)
    running = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over completion tokens.

    1 means the critic predicts the returns perfectly, 0 no better than their mean,
    negative worse than that.
    """
    return 1 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)
