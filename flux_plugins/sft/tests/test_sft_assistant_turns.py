"""SFT conversations without an assistant turn: one warning naming them, an error when none has one."""

from __future__ import annotations

import warnings

import pytest
from datasets import Dataset
from flux_sft.data import check_assistant_turns

from flux_core import DataError
from flux_core.data.sources import RowNamer


def conversations(*roles: tuple[str, ...]) -> Dataset:
    return Dataset.from_list(
        [{"messages": [{"role": role, "content": f"turn {i}"} for i, role in enumerate(row)]} for row in roles]
    )


def test_conversations_without_a_reply_are_one_warning_with_their_count_and_first_rows():
    data = conversations(("user",), ("user", "assistant"), ("system", "user"), ("user",), ("user",), ("user",))
    with pytest.warns(UserWarning) as caught:
        check_assistant_turns(data, RowNamer("chats.parquet"))
    assert [str(w.message) for w in caught] == [
        "chats.parquet: 5 of 6 conversations have no assistant turn, so nothing to learn a reply from "
        "(chats.parquet row 1, chats.parquet row 3, chats.parquet row 4, ...)"
    ]


def test_no_conversation_with_a_reply_is_refused():
    with pytest.raises(DataError, match=r"^chats.parquet: no conversation has an assistant turn \(2 rows\)"):
        check_assistant_turns(conversations(("user",), ("system", "user")), RowNamer("chats.parquet"))


def test_conversations_that_all_have_a_reply_pass_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_assistant_turns(conversations(("user", "assistant"), ("assistant",)), RowNamer("chats.parquet"))
