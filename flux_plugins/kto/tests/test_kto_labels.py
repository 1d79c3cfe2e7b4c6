"""KTO data whose labels are all the same: one warning saying which side is missing."""

from __future__ import annotations

import re
import warnings

import pytest
from datasets import Dataset
from flux_kto.data import warn_one_sided_labels


def examples(*labels: bool) -> Dataset:
    return Dataset.from_dict({"prompt": ["p"] * len(labels), "completion": ["c"] * len(labels), "label": list(labels)})


@pytest.mark.parametrize(
    ("label", "said"),
    [
        (True, "all 3 examples are desirable (label true), none undesirable (label false)"),
        (False, "all 3 examples are undesirable (label false), none desirable (label true)"),
    ],
)
def test_one_sided_labels_are_named(label, said):
    with pytest.warns(UserWarning, match=rf"^training data: {re.escape(said)}: KTO learns from one side only"):
        warn_one_sided_labels(examples(label, label, label))


def test_mixed_labels_pass_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_one_sided_labels(examples(True, False, True))
