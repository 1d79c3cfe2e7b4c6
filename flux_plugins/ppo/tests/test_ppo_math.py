"""PPO's math on hand-computed tensors: GAE, KL penalty, reward shaping, whitening,
both clipped losses, their diagnostics and the KL controllers.

Every expected value below was worked out by hand (the arithmetic is in the comments).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from flux_ppo.advantages import (  # noqa: E402
    explained_variance,
    generalized_advantage_estimation,
    kl_penalty,
    last_token_index,
    masked_mean,
    masked_var,
    masked_whiten,
    token_level_rewards,
)
from flux_ppo.kl_control import AdaptiveKLController, FixedKLController  # noqa: E402
from flux_ppo.losses import (  # noqa: E402
    PolicyLossInputs,
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    policy_clip_fraction,
    value_clip_fraction,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def assert_close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, atol=atol), f"{actual} != {expected}"


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_and_var_ignore_padding():
    values, mask = t([1, 2, 3], [4, 99, -99]), t([1, 1, 1], [1, 0, 0])
    assert_close(masked_mean(values, mask), 2.5)
    assert_close(masked_mean(values, mask, dim=1), [2.0, 4.0])
    # (2.25 + 0.25 + 0.25 + 2.25) / 3 (Bessel) = 5/3; biased: 5/4
    assert_close(masked_var(values, mask), 5 / 3)
    assert_close(masked_var(values, mask, unbiased=False), 1.25)


def test_masked_mean_of_empty_mask_is_zero_not_nan():
    assert masked_mean(t([1.0, 2.0]), t([0.0, 0.0])).item() == 0.0


def test_whitening_uses_only_completion_tokens_and_zeroes_padding():
    values, mask = t([1, 2, 3], [4, 99, -99]), t([1, 1, 1], [1, 0, 0])
    std = math.sqrt(5 / 3)
    expected = [[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]]
    assert_close(masked_whiten(values, mask), expected)
    # shift_mean=False keeps the mean (2.5) on the real tokens
    kept = [[2.5 - 1.5 / std, 2.5 - 0.5 / std, 2.5 + 0.5 / std], [2.5 + 1.5 / std, 0.0, 0.0]]
    assert_close(masked_whiten(values, mask, shift_mean=False), kept)


# ---------------------------------------------------------------- KL penalty and rewards


def test_kl_penalty_k1_is_the_log_ratio():
    assert_close(kl_penalty(t([-1.0, -2.0]), t([-1.5, -1.0]), "k1"), [[0.5, -1.0]])


def test_kl_penalty_k3_is_nonnegative_and_matches_formula():
    # log r = [0.5, -1]: k3 = exp(-log r) - 1 + log r = [e^-0.5 - 0.5, e - 2]
    expected = [[math.exp(-0.5) - 0.5, math.e - 2.0]]
    assert_close(kl_penalty(t([-1.0, -2.0]), t([-1.5, -1.0]), "k3"), expected)
    assert kl_penalty(torch.randn(4, 7), torch.randn(4, 7), "k3").min() >= 0


def test_kl_penalty_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="k2"):
        kl_penalty(t([0.0]), t([0.0]), "k2")


def test_last_token_index():
    mask = t([1, 1, 1], [1, 0, 0], [1, 1, 0])
    assert last_token_index(mask).tolist() == [2, 0, 1]


def test_token_level_rewards_put_score_on_last_completion_token():
    scores = torch.tensor([2.0, -1.0])
    kl = t([0.5, -1.0, 0.2], [1.0, 9.0, 9.0])
    mask = t([1, 1, 1], [1, 0, 0])
    # row 0: -0.1 * [0.5, -1, 0.2] + [0, 0, 2]; row 1: -0.1 * 1 - 1, padding stays 0
    expected = [[-0.05, 0.1, 1.98], [-1.1, 0.0, 0.0]]
    assert_close(token_level_rewards(scores, kl, mask, kl_coef=0.1), expected)


# ---------------------------------------------------------------- GAE


def test_gae_matches_hand_computation():
    rewards = t([0.0, 0.0, 1.0])
    values = t([0.5, 0.4, 0.3])
    advantages, returns = generalized_advantage_estimation(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.9)
    # deltas: t2 = 1 - 0.3 = 0.7; t1 = 0.3 - 0.4 = -0.1; t0 = 0.4 - 0.5 = -0.1
    # A2 = 0.7; A1 = -0.1 + 0.9 * 0.7 = 0.53; A0 = -0.1 + 0.9 * 0.53 = 0.377
    assert_close(advantages, [[0.377, 0.53, 0.7]])
    assert_close(returns, [[0.877, 0.93, 1.0]])


def test_gae_discounts_with_gamma():
    advantages, returns = generalized_advantage_estimation(
        t([1.0, 1.0]), t([0.0, 0.0]), torch.ones(1, 2), gamma=0.5, lam=1.0
    )
    # A1 = 1; A0 = 1 + 0.5 * 0 - 0 + 0.5 * 1 * 1 = 1.5
    assert_close(advantages, [[1.5, 1.0]])
    assert_close(returns, [[1.5, 1.0]])


def test_gae_ends_episode_at_last_completion_token_and_ignores_padding():
    # Garbage rewards/values on the padding position must not leak into real tokens.
    rewards = t([0.0, 2.0, 5.0])
    values = t([1.0, 1.0, 7.0])
    mask = t([1, 1, 0])
    advantages, returns = generalized_advantage_estimation(rewards, values, mask, gamma=1.0, lam=0.9)
    # t1 is terminal: delta = 2 + 0 - 1 = 1 -> A1 = 1; t0: delta = 0 + 1 - 1 = 0 -> A0 = 0.9
    assert_close(advantages, [[0.9, 1.0, 0.0]])
    assert_close(returns, [[1.9, 2.0, 0.0]])


def test_gae_rows_are_independent():
    rewards = torch.randn(3, 5)
    values = torch.randn(3, 5)
    mask = t([1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0])
    together, _ = generalized_advantage_estimation(rewards, values, mask, gamma=0.99, lam=0.95)
    for row in range(3):
        alone, _ = generalized_advantage_estimation(
            rewards[row : row + 1], values[row : row + 1], mask[row : row + 1], gamma=0.99, lam=0.95
        )
        assert_close(together[row : row + 1], alone)


# ---------------------------------------------------------------- policy loss


def _policy_inputs(ratios, advantages, mask=None):
    ratios = torch.tensor([ratios])
    return PolicyLossInputs(
        logprobs=ratios.log(),
        old_logprobs=torch.zeros_like(ratios),
        advantages=torch.tensor([advantages]),
        completion_mask=torch.ones_like(ratios) if mask is None else torch.tensor([mask], dtype=torch.float32),
    )


def test_clipped_policy_loss_matches_hand_computation():
    inputs = _policy_inputs([1.5, 0.5, 1.1, 0.7], [1.0, 1.0, -1.0, -2.0])
    # r=1.5,A=1:  max(-1.5, -1.2) = -1.2   (clipped: no reward for pushing past 1.2)
    # r=0.5,A=1:  max(-0.5, -0.8) = -0.5   (unclipped: the pessimistic side)
    # r=1.1,A=-1: max(1.1, 1.1)   =  1.1   (inside the range)
    # r=0.7,A=-2: max(1.4, 1.6)   =  1.6   (clipped)
    assert_close(clipped_policy_loss(inputs, cliprange=0.2), [[-1.2, -0.5, 1.1, 1.6]])


def test_clipped_policy_loss_gradient_vanishes_where_clipped():
    inputs = _policy_inputs([1.5, 0.5, 1.1, 0.7], [1.0, 1.0, -1.0, -2.0])
    logprobs = inputs.logprobs.clone().requires_grad_(True)
    clipped = PolicyLossInputs(logprobs, inputs.old_logprobs, inputs.advantages, inputs.completion_mask)
    clipped_policy_loss(clipped, cliprange=0.2).sum().backward()
    # d(-A r)/d log r = -A r where unclipped, 0 where the clip is active
    assert_close(logprobs.grad, [[0.0, -0.5, 1.1, 0.0]])


def test_policy_clip_fraction_counts_only_completion_tokens():
    inputs = _policy_inputs([1.5, 0.5, 1.1, 0.7], [1.0, 1.0, -1.0, -2.0])
    assert_close(policy_clip_fraction(inputs, cliprange=0.2), 0.5)  # tokens 0 and 3
    masked = _policy_inputs([1.5, 0.5, 1.1, 0.7], [1.0, 1.0, -1.0, -2.0], mask=[1, 1, 1, 0])
    assert_close(policy_clip_fraction(masked, cliprange=0.2), 1 / 3)


def test_approx_kl():
    # 0.5 * mean(0.1^2, 0.2^2) = 0.5 * 0.025; the padded 3.0 is ignored
    assert_close(approx_kl(t([0.1, -0.2, 3.0]), t([0.0, 0.0, 0.0]), t([1, 1, 0])), 0.0125)


# ---------------------------------------------------------------- value loss


def test_clipped_value_loss_matches_hand_computation():
    values, old_values, returns = t([1.0, 2.0, 0.0]), t([0.5, 2.1, 0.0]), t([2.0, 1.0, 0.3])
    # t0: clip(1.0) to 0.5 +- 0.2 = 0.7: max((1-2)^2, (0.7-2)^2) = 1.69
    # t1: change -0.1 is inside: (2-1)^2 = 1;  t2: (0-0.3)^2 = 0.09
    loss = clipped_value_loss(values, old_values, returns, torch.ones(1, 3), cliprange_value=0.2)
    assert_close(loss, 0.5 * (1.69 + 1.0 + 0.09) / 3)
    masked = clipped_value_loss(values, old_values, returns, t([1, 1, 0]), cliprange_value=0.2)
    assert_close(masked, 0.5 * (1.69 + 1.0) / 2)
    assert_close(value_clip_fraction(values, old_values, returns, torch.ones(1, 3), 0.2), 1 / 3)


def test_explained_variance():
    returns, mask = t([1.0, 2.0, 3.0, 4.0]), torch.ones(1, 4)
    assert_close(explained_variance(returns.clone(), returns, mask), 1.0)
    assert_close(explained_variance(torch.full_like(returns, 2.5), returns, mask), 0.0)
    # padding where the critic is wildly off does not count
    padded_values = t([1.0, 2.0, 3.0, 4.0, 100.0])
    padded_returns = t([1.0, 2.0, 3.0, 4.0, -100.0])
    assert_close(explained_variance(padded_values, padded_returns, t([1, 1, 1, 1, 0])), 1.0)


# ---------------------------------------------------------------- KL controllers


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, num_samples=64)
    assert controller.value == 0.05


def test_adaptive_kl_controller_follows_target():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=12.0, num_samples=64)  # error clipped to +0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10_000))
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=5.7, num_samples=64)  # error -0.05
    assert controller.value == pytest.approx(0.1 * (1 - 0.05 * 64 / 10_000))
