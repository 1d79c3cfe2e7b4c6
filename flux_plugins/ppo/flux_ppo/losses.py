"""PPO's losses and their diagnostics, each a small standalone function.

The policy loss is the plugin seam: a function registered with
``register(name, fn, algorithm="ppo")`` and selected by ``algorithm.loss`` is called as::

    fn(inputs: PolicyLossInputs, *, cliprange: float, **loss_kwargs) -> Tensor[batch, tokens]

returning a loss per completion token; Flux averages it over the completion tokens
(padding is masked out for you). ``loss_kwargs`` are the user's ``algorithm.loss_kwargs``.
torch is imported inside the functions so that registering them (``flux plugins``)
stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class PolicyLossInputs:
    """What a PPO policy loss sees for one minibatch (tensors ``[batch, tokens]``).

    Attributes:
        logprobs: log-probs of the sampled tokens under the policy being trained (with grad).
        old_logprobs: the same under the policy that generated the rollout (no grad).
        advantages: per-token advantages (GAE, whitened when ``whiten_advantages``).
        completion_mask: 1 for completion tokens, 0 for padding.
        ref_logprobs: log-probs under the reference policy, or ``None`` without a
            reference (the KL penalty is already in the advantages; this is for losses
            that want a KL term of their own).
    """

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    completion_mask: Tensor
    ref_logprobs: Optional[Tensor] = None

    @property
    def ratio(self) -> Tensor:
        """Importance ratio pi_new / pi_old per token."""
        import torch

        return torch.exp(self.logprobs - self.old_logprobs)


def clipped_policy_loss(inputs: PolicyLossInputs, *, cliprange: float) -> Tensor:
    """PPO-clip surrogate per token: ``max(-A * r, -A * clip(r, 1 - eps, 1 + eps))``.

    Taking the max of the two negated objectives is the pessimistic bound of the paper
    (Schulman et al., 2017, eq. 7): no incentive to move the ratio beyond the clip range.
    """
    import torch

    ratio = inputs.ratio
    unclipped = -inputs.advantages * ratio
    clipped = -inputs.advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.maximum(unclipped, clipped)


def policy_clip_fraction(inputs: PolicyLossInputs, cliprange: float) -> Tensor:
    """Fraction of completion tokens where the clipped term of the PPO objective is active."""
    import torch

    from flux_ppo.advantages import masked_mean

    ratio = inputs.ratio
    unclipped = -inputs.advantages * ratio
    clipped = -inputs.advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return masked_mean((clipped > unclipped).to(ratio.dtype), inputs.completion_mask)


def approx_kl(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """``0.5 * E[(log pi_new - log pi_old)^2]``: how far one update moved the policy."""
    from flux_ppo.advantages import masked_mean

    return 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> Tensor:
    """Clipped value loss: ``0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2))``.

    Clipping the new prediction to within ``cliprange_value`` of the rollout's keeps
    the critic from jumping, mirroring the policy clip (a detail of OpenAI's baselines).
    """
    import torch

    from flux_ppo.advantages import masked_mean

    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)


def value_clip_fraction(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> Tensor:
    """Fraction of completion tokens where the clipped value error is the larger one."""
    import torch

    from flux_ppo.advantages import masked_mean

    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    return masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).to(values.dtype), mask)


# Registered by the plugin under these names for algorithm "ppo".
PPO_LOSSES = {"clipped": clipped_policy_loss}
