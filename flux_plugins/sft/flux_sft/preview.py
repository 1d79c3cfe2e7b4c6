"""``flux data`` for SFT: examples tokenized as SFTTrainer tokenizes them, with this run's loss settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flux_core import TrainingView, sequence_view
from flux_sft.runner import resolve_assistant_only_loss


def preview_examples(config: Any, tokenizer: Any, dataset: Any) -> TrainingView:
    """SFT examples with the tokens the loss reads marked: the completion (``completion_only_loss``),
    the assistant turns (``assistant_only_loss``, resolved as a run resolves it: ``auto`` warns the same
    way where the chat template cannot mark them) or every token. With packing, TRL's default ``bfd``
    strategy cuts sequences at ``max_length`` and drops none; the other strategies cut none either."""
    algorithm = config.algorithm
    assistant_only = resolve_assistant_only_loss(algorithm.assistant_only_loss, tokenizer, dataset, config.model_path)
    view = sequence_view(
        config,
        tokenizer,
        dataset,
        completion_only_loss=algorithm.completion_only_loss,
        assistant_only_loss=assistant_only,
    )
    if not algorithm.packing:
        return view
    strategy = config.trl.get("packing_strategy", "bfd")
    note = f"packing ({strategy}): examples share rows of up to max_length tokens; none is dropped"
    if strategy != "bfd":  # bfd_split and wrapped carry what is past max_length into further rows
        return replace(view, truncation_mode=None, drops="none", note=note + " or cut")
    return replace(view, truncation_mode="keep_start", drops="none", note=note)
