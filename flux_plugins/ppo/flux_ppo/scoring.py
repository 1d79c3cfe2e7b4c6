"""Reward models that score the sampled token ids themselves, not a re-tokenisation of their text.

Flux's shared ``reward_model`` reward (``flux_core.online.builtin_rewards``) scores ``prompt +
decoded completion`` as text, which works for any reward model and any tokenizer. But the
decode/re-encode round trip is not the identity: on the tiny byte-level model 64 of 64
sampled completions re-encode to other token ids (bytes that are not valid UTF-8 decode to
U+FFFD, merges change across the prompt/completion boundary), and a reward model's score
hinges on its last tokens. The policy is then rewarded for token sequences it did not
produce, a noisy, weakly related signal. TRL <= 1.12's PPOTrainer scored the exact
``query + response`` ids. PPO does the same here whenever that is well defined: the reward
model's tokenizer has the policy's vocabulary and (for chat prompts) the same chat template.
Otherwise the text path is used, unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from flux_core import REWARD_MODEL, RewardFunction, load_reward_model


class TokenRewardModel:
    """Scores ``prompt_ids + completion_ids`` with a sequence-classification reward model, read
    where the model's own pooling reads: at the last token that is not its pad id.

    A completion that ended at a stop id ends in the reward model's EOS instead, as
    ``RewardTrainer`` trained it (it appends the EOS) and as the text path scores it. So the EOS
    itself is read when the pad id differs from it (TRL 1.12 read it there too), and the token
    before it when the pad id is the EOS (the tiny model's case). A completion cut at
    ``max_completion_length`` is scored as sampled, at its last token.

    Call :meth:`bind` with the rollouts before each scoring; the reward function then ignores
    the texts it is given and reads the bound ids, in the same order.
    """

    def __init__(self, path: str, stop_token_ids: Sequence[int], batch_size: int = 16):
        self.model, self.tokenizer = load_reward_model(path)  # the text path's cached copy: loaded once
        self.pad_token_id = self.model.config.pad_token_id
        self.eos_token_id = self.tokenizer.eos_token_id
        self.stop_token_ids = set(stop_token_ids)
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device
        self.sequences: list[list[int]] | None = None

    def bind(self, rollouts: Sequence[Any]) -> None:
        sequences = []
        for rollout in rollouts:
            completion = list(rollout.completion_ids)
            if completion and completion[-1] in self.stop_token_ids:
                completion.pop()
                if self.eos_token_id is not None:
                    completion.append(self.eos_token_id)
            while completion and completion[-1] == self.pad_token_id:  # the pooling skips trailing pads
                completion.pop()
            sequences.append(list(rollout.prompt_ids) + completion)
        self.sequences = sequences

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        if self.sequences is None or len(self.sequences) != len(completions):
            raise RuntimeError("TokenRewardModel: bind() the rollouts before scoring them")
        scores: list[float] = []
        for start in range(0, len(self.sequences), self.batch_size):
            chunk = self.sequences[start : start + self.batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([ids + [self.pad_token_id] * (width - len(ids)) for ids in chunk])
            attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk])
            logits = _last_token_scores(self.model, input_ids.to(self.device), attention_mask.to(self.device))
            scores.extend(logits.float().tolist())
        self.sequences = None
        return scores


def _last_token_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The score head at each row's last attended token (not where the pad id first appears:
    a completion may legitimately contain the pad id when pad and EOS share one)."""
    trunk = getattr(model, model.base_model_prefix)
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    rows = torch.arange(input_ids.size(0), device=input_ids.device)
    return model.score(hidden[rows, last])[:, 0]


def same_tokenization(policy_tokenizer: Any, reward_tokenizer: Any) -> bool:
    """Whether ids from the policy's tokenizer (chat template included) mean the same to the reward model."""
    if policy_tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        return False
    return getattr(policy_tokenizer, "chat_template", None) == getattr(reward_tokenizer, "chat_template", None)


def token_level_reward_functions(
    functions: Sequence[RewardFunction], policy_tokenizer: Any, stop_token_ids: Sequence[int]
) -> tuple[list[RewardFunction], list[TokenRewardModel]]:
    """``functions`` with each reward model that shares the policy's tokenization replaced by
    a :class:`TokenRewardModel` (same name, weight and metric); also returns those scorers."""
    replaced, scorers = [], []
    for function in functions:
        if function.spec.name == REWARD_MODEL:
            path = function.spec.kwargs["path"]
            scorer = TokenRewardModel(path, stop_token_ids)
            if same_tokenization(policy_tokenizer, scorer.tokenizer):
                # The wrapper passes the spec's kwargs (path, batch_size) along; the scorer ignores them.
                function = RewardFunction(function.spec, functools.partial(_call, scorer))
                scorers.append(scorer)
        replaced.append(function)
    return replaced, scorers


def _call(scorer: TokenRewardModel, prompts, completions, **kwargs):
    return scorer(prompts, completions)
