"""Padding-free ("packed") collation of preference pairs.

TRL 1.16 disables DPO's ``padding_free`` mode. This collator packs the batch's 2B
sequences (chosen first, then rejected, as TRL orders them) into one row with no pad
tokens, restarting ``position_ids`` per sequence and passing a block-diagonal causal
attention mask, so each sequence attends only to itself: per-sequence log-probs are
those of the padded batch (tested). It trades padding compute for a (T x T) mask,
which pays off on variable-length data and models whose linear layers dominate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference


@dataclass
class PackedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator (same truncation), then packed into a single row.

    Extra keys: ``sequence_ids`` (which sequence each token belongs to) and
    ``completion_lengths`` (completion tokens per sequence, as the padded batch counts them).
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        padded = super().torch_call(examples)
        keep = padded["attention_mask"].bool()
        lengths = keep.sum(dim=1)
        sequence_ids = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        starts = torch.cumsum(lengths, dim=0) - lengths
        position_ids = torch.arange(len(sequence_ids)) - starts[sequence_ids]
        completion_mask = padded["completion_mask"][keep].clone()
        # A sequence's first token is never scored in the padded layout either (nothing precedes it);
        # here it would be "predicted" from the previous sequence, so mask it.
        completion_mask[starts] = 0
        causal = torch.tril(torch.ones(len(sequence_ids), len(sequence_ids), dtype=torch.bool))
        same_sequence = sequence_ids[:, None] == sequence_ids[None, :]
        packed = {
            "input_ids": padded["input_ids"][keep].unsqueeze(0),
            "position_ids": position_ids.unsqueeze(0),
            "attention_mask": (causal & same_sequence)[None, None],
            "completion_mask": completion_mask.unsqueeze(0),
            "sequence_ids": sequence_ids,
            "completion_lengths": padded["completion_mask"].sum(dim=1),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in padded:
                packed[key] = padded[key]
        return packed


def sequence_sums(per_token: torch.Tensor, sequence_ids: torch.Tensor, num_sequences: int) -> torch.Tensor:
    """Sum a packed row's shifted per-token values ([1, T-1], token t+1's) per sequence."""
    return per_token.new_zeros(num_sequences).index_add(0, sequence_ids[1:].to(per_token.device), per_token[0])
