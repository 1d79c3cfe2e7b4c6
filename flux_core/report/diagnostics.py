"""Read a run's metrics the way the DPO tutorial tells users to, and say what to try.

The tutorial's table of good and warning signs (loss decreasing, ``reward_margin`` > 0
and rising, ``chosen_reward`` above ``rejected_reward``) and its troubleshooting
remedies, as checks over ``metrics.jsonl``. Each warning sign found is one line with
the remedy; a healthy run gets no lines. Online runs (GRPO, PPO) are checked for a flat
reward and an exploding KL instead.

A run is judged by its first and last fifths of steps (means, so single noisy steps do
not decide) and only when it has at least :data:`MIN_STEPS` steps.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

MIN_STEPS = 10

REMEDY_LOSS = "try beta 0.1 → 0.2, a lower learning rate, or check that chosen and rejected differ clearly"
REMEDY_MARGIN = "the model may be degrading: raise beta (stronger pull to the reference), keep a reference model "
REMEDY_MARGIN += "(reference_free: false), or train fewer steps"
REMEDY_CHOSEN = "check data quality (a clear chosen/rejected distinction), or try beta 0.1 → 0.2"
REMEDY_REWARD = "check that the reward varies between completions, raise learning_rate or num_generations"
REMEDY_KL = "raise beta (the KL penalty), lower learning_rate, or train fewer steps"


def read_metrics(path: str | Path, warn: bool = True) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (one JSON object per step; ``null`` for non-finite values).

    A line that is not a JSON object with an integer ``step`` (cut off by a kill, edited by
    hand) is skipped, with one warning naming the file and the first such line (``warn``).
    """
    rows, skipped = [], []
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8
                row = None
            step = row.get("step") if isinstance(row, dict) else None
            if isinstance(step, int) and not isinstance(step, bool):
                rows.append(row)
            else:
                skipped.append(number)
    if skipped and warn:
        more = f" (and {len(skipped) - 1} more lines)" if len(skipped) > 1 else ""
        warnings.warn(
            f"{path}:{skipped[0]}: not a JSON object with an integer 'step'{more}; skipped, read the other "
            f"{len(rows)} steps",
            UserWarning,
            stacklevel=2,
        )
    return rows


def series(rows: Iterable[Mapping], name: str) -> list[float]:
    """The finite values of one metric, in step order."""
    values = (row.get(name) for row in rows)
    return [float(value) for value in values if isinstance(value, (int, float)) and math.isfinite(value)]


def _ends(values: Sequence[float]) -> tuple[float, float]:
    """Means of the first and last fifth."""
    width = max(1, len(values) // 5)
    return sum(values[:width]) / width, sum(values[-width:]) / width


def diagnose(rows: Sequence[Mapping]) -> list[str]:
    """One line per warning sign in ``rows`` (metrics.jsonl rows), with the remedy to try."""
    if len(rows) < MIN_STEPS:
        return []
    if series(rows, "reward_margin"):  # preference training (DPO and its kin)
        return _preference_signs(rows)
    if series(rows, "reward"):
        return _online_signs(rows)
    return []


def _preference_signs(rows: Sequence[Mapping]) -> list[str]:
    found = []
    loss = series(rows, "loss")
    if len(loss) >= MIN_STEPS:
        first, last = _ends(loss)
        if last > first - 0.01 * abs(first):  # less than a 1% drop
            found.append(f"loss not decreasing ({first:.4f} → {last:.4f} over {len(rows)} steps): {REMEDY_LOSS}")
    margin = series(rows, "reward_margin")
    first, last = _ends(margin)
    if last < 0:
        found.append(f"reward_margin is negative ({last:.4f} at the end): {REMEDY_MARGIN}")
    elif last < first:
        found.append(f"reward_margin is falling ({first:.4f} → {last:.4f}): {REMEDY_MARGIN}")
    chosen, rejected = series(rows, "chosen_reward"), series(rows, "rejected_reward")
    if chosen and rejected and _ends(chosen)[1] <= _ends(rejected)[1]:
        found.append(
            f"chosen_reward is not above rejected_reward ({_ends(chosen)[1]:.4f} vs {_ends(rejected)[1]:.4f} "
            f"at the end): {REMEDY_CHOSEN}"
        )
    return found


def _online_signs(rows: Sequence[Mapping]) -> list[str]:
    found = []
    first, last = _ends(series(rows, "reward"))
    if abs(last - first) <= 0.01 * max(1.0, abs(first)):
        found.append(f"reward is flat ({first:.4f} → {last:.4f} over {len(rows)} steps): {REMEDY_REWARD}")
    kl = series(rows, "kl")
    if len(kl) >= MIN_STEPS:
        kl_first, kl_last = _ends([abs(value) for value in kl])
        if kl_last > 1.0 and kl_last > 10 * max(kl_first, 1e-3):
            found.append(f"KL is exploding ({kl_first:.4f} → {kl_last:.4f}): {REMEDY_KL}")
    return found
