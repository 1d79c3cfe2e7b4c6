"""``flux data`` for reward models: pairs tokenized as for DPO, dropped as RewardTrainer drops them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flux_core import TrainingView, pair_view


def preview_pairs(config: Any, tokenizer: Any, dataset: Any) -> TrainingView:
    """prompt + chosen and prompt + rejected (the same token ids RewardTrainer scores), the completions
    marked. RewardTrainer does not truncate: it drops a pair with a sequence longer than ``max_length``."""
    note = "the reward model scores the whole of each sequence, read at its last token; the completions are marked"
    return replace(pair_view(config, tokenizer, dataset), truncation_mode=None, drops="too_long", note=note)
