"""An SFT mixture of an Alpaca file and a ShareGPT file: both become conversations before they mix."""

import json

import pytest

from flux_core.config import FluxConfig
from flux_core.data.load import load_training_data
from flux_core.errors import DataError


def sft_config(data) -> FluxConfig:
    return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "sft"}, "batch_size": 1, "data": data})


def test_alpaca_and_sharegpt_mix_as_conversations(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps([{"instruction": f"Name {i}.", "input": "", "output": f"Done {i}."} for i in range(3)])
    )
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(
        "".join(
            json.dumps(
                {"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": f"Hello {i}"}]}
            )
            + "\n"
            for i in range(2)
        )
    )
    mixed, _ = load_training_data(
        sft_config([{"path": str(alpaca), "weight": 1}, {"path": str(sharegpt), "weight": 1}]), "sft"
    )
    assert mixed.column_names == ["messages"]
    conversations = sorted(mixed["messages"], key=lambda turns: turns[0]["content"])
    assert conversations[0] == [{"role": "user", "content": "Hi 0"}, {"role": "assistant", "content": "Hello 0"}]
    assert [{"role": "user", "content": "Name 0."}, {"role": "assistant", "content": "Done 0."}] in conversations


def test_plain_text_does_not_mix_with_conversations(tmp_path):
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"Some text {i}."}) + "\n" for i in range(2)))
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
    with pytest.raises(DataError) as info:
        load_training_data(sft_config([str(text), str(chat)]), "sft")
    assert str(info.value) == (
        f"data[1] ({chat}): its rows have columns messages but data[0] ({text})'s have text ('messages' is in "
        f"data[1] ({chat}), not in data[0] ({text})); the sources of a mixture must normalise to the same columns"
    )
