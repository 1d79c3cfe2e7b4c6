"""Preference pairs -> KTO's unpaired examples."""

from __future__ import annotations

from typing import Any


def unpair(pairs: Any, num_proc: int | None = None) -> Any:
    """Each checked pair (prompt, chosen, rejected; extra columns kept) becomes a desirable row
    (prompt, chosen, label true) and an undesirable one (prompt, rejected, label false).

    TRL's ``unpair_preference_dataset`` makes the rows (one pair per map batch, so pair i's rows
    are 2i and 2i+1 whatever ``num_proc`` is). They are then ordered chosen_0, rejected_h,
    chosen_1, rejected_h+1, ... with h = half the number of pairs: every KTO batch holds desirable and
    undesirable examples (TRL's own order puts up to a thousand desirable rows first), and
    neighbouring rows come from different pairs, which KTO's KL estimate needs (it pairs each
    prompt with its neighbour's completion).
    """
    from trl.data_utils import unpair_preference_dataset

    unpaired = unpair_preference_dataset(pairs, batch_size=1, num_proc=num_proc, desc="Unpairing preference pairs")
    count = len(pairs)
    shift = count // 2
    order = [row for i in range(count) for row in (2 * i, 2 * ((i + shift) % count) + 1)]
    return unpaired.select(order)
