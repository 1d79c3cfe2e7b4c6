"""Prompt and padding tokens never reach PPO's losses: checked on the tiny model."""

from __future__ import annotations

import pytest
import torch
from flux_ppo.advantages import masked_mean, token_level_rewards
from flux_ppo.experience import collate_rollouts
from flux_ppo.losses import PolicyLossInputs, clipped_policy_loss
from flux_ppo.models import completion_logprobs, completion_values, load_value_model
from transformers import AutoModelForCausalLM

from flux_core.online.rollout import Rollout

PAD = 0
PROMPTS = [[11, 12, 13, 14, 15], [21, 22]]
COMPLETIONS = [[31, 32, 33], [41, 42, 43, 44, 45]]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def batch():
    rollouts = [
        Rollout(prompt_index=i, prompt_ids=p, completion_ids=c, text="", truncated=i == 1)
        for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS))
    ]
    return collate_rollouts(rollouts, pad_token_id=PAD)


def test_collate_left_pads_prompts_and_right_pads_completions(batch):
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 14, 15, 31, 32, 33, PAD, PAD],
        [PAD, PAD, PAD, 21, 22, 41, 42, 43, 44, 45],
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]]
    assert batch.completion_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.truncated.tolist() == [False, True]


@torch.no_grad()
def test_completion_logprobs_are_those_of_the_unpadded_sequence(policy, batch):
    logprobs, entropy = completion_logprobs(
        policy, batch.input_ids, batch.attention_mask, batch.completion_length, temperature=0.7, with_entropy=True
    )
    assert logprobs.shape == entropy.shape == (2, 5)
    for row, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS)):
        # Reference: one unpadded sequence, full forward, pick the completion tokens by hand.
        sequence = torch.tensor([prompt + completion])
        logits = policy(sequence).logits[0] / 0.7
        positions = range(len(prompt) - 1, len(prompt) + len(completion) - 1)
        expected = torch.stack([logits[p].log_softmax(-1)[sequence[0, p + 1]] for p in positions])
        got = logprobs[row, : len(completion)]
        assert torch.allclose(got, expected, atol=1e-5), (row, got, expected)


@torch.no_grad()
def test_values_do_not_depend_on_padding(tiny_model_dir, batch):
    torch.manual_seed(0)
    value_model = load_value_model(str(tiny_model_dir), torch.float32, key="model_path").eval()
    values = completion_values(value_model, batch.input_ids, batch.attention_mask, batch.completion_length)
    assert values.shape == (2, 5)
    prompt, completion = PROMPTS[1], COMPLETIONS[1]
    alone = completion_values(value_model, torch.tensor([prompt + completion]), torch.ones(1, 7, dtype=torch.long), 5)
    assert torch.allclose(values[1], alone[0], atol=1e-5)  # three pad tokens in front change nothing


def test_policy_loss_ignores_padding_positions(batch):
    mask = batch.completion_mask
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0, -1.0]])
    old = logprobs - 0.1
    advantages = torch.tensor([[1.0, -1.0, 0.5, 0.0, 0.0], [0.2, 0.2, -0.3, 0.1, 0.4]])

    def loss(logprobs, advantages):
        inputs = PolicyLossInputs(logprobs, old, advantages, mask)
        return masked_mean(clipped_policy_loss(inputs, cliprange=0.2), mask)

    garbage = torch.tensor([[0.0, 0.0, 0.0, 50.0, -50.0], [0.0] * 5])
    assert loss(logprobs, advantages) == loss(logprobs + garbage, advantages - garbage)
    # ... while a change on a real token does change it
    real = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.0], [0.0] * 5])
    assert loss(logprobs, advantages) != loss(logprobs, advantages + real)


def test_an_eos_that_is_also_the_pad_id_is_an_action_of_the_policy():
    """The tiny model pads with its EOS (id 0), as many models do. Its EOS must still count as the
    completion's last token: in the loss and the KL (so the policy learns when to stop) and as the
    token that carries the score. TRL 1.12 treated it as padding there, which is why its completions
    never end early (docs/ppo.md, "Against TRL 1.12")."""
    eos = PAD
    rollouts = [
        Rollout(prompt_index=0, prompt_ids=[11, 12], completion_ids=[31, eos], text="", truncated=False),
        Rollout(prompt_index=1, prompt_ids=[21], completion_ids=[41, 42, 43], text="", truncated=True),
    ]
    batch = collate_rollouts(rollouts, pad_token_id=PAD)
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]

    kl = torch.full((2, 3), 0.5)
    rewards = token_level_rewards(torch.tensor([2.0, 3.0]), kl, batch.completion_mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.05 + 2.0, 0.0], [-0.05, -0.05, -0.05 + 3.0]]))
