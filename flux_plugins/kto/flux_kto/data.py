"""Preference pairs -> KTO's unpaired examples; the one-sided-labels warning."""

from __future__ import annotations

import warnings
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


def warn_one_sided_labels(dataset: Any, name: str = "training data") -> None:
    """One warning when every example of ``dataset`` is desirable (``label`` true) or every one undesirable.

    KTO then pushes only one way: TRL's own notice is about loss weights, which a user
    with a mislabelled file would not read as "my labels are all the same".
    """
    import pyarrow.compute as pc

    desirable = total = 0
    for batch in dataset.select_columns(["label"]).with_format("arrow").iter(batch_size=100_000):
        desirable += pc.sum(pc.cast(batch.column("label"), "int64")).as_py() or 0
        total += batch.num_rows
    if total and desirable in (0, total):
        if desirable:
            said = f"all {total} examples are desirable (label true), none undesirable (label false)"
        else:
            said = f"all {total} examples are undesirable (label false), none desirable (label true)"
        warnings.warn(f"{name}: {said}: KTO learns from one side only; check the labels", UserWarning, stacklevel=2)
