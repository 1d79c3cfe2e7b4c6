"""Training data: every problem is one error naming file and line; nothing half-read trains."""

import pytest

from flux import DataError
from flux_core.data import load_records


def error_of(source, data_format="preferences") -> str:
    with pytest.raises(DataError) as info:
        load_records(source, data_format)
    assert "\n" not in str(info.value)
    return str(info.value)


def jsonl(tmp_path, *lines) -> str:
    path = tmp_path / "preferences.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD = '{"prompt": "p", "chosen": "c", "rejected": "r"}'


def test_valid_sources_load(tmp_path):
    from datasets import Dataset

    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    assert load_records(jsonl(tmp_path, GOOD, "", GOOD), "preferences") == rows * 2
    assert load_records(rows, "preferences") == rows
    assert load_records(Dataset.from_list(rows), "preferences") == rows
    chat = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        }
    ]
    assert load_records(chat, "preferences") == chat


@pytest.mark.parametrize(
    "bad_line,expected",
    [
        ('{"prompt": "p", "chosen": "c"', ":3: invalid JSON: Expecting ',' delimiter"),
        ('{"prompt": "p", "chosen": "c"}', ":3: missing key 'rejected'"),
        (
            '{"prompt": "p", "chosen": 5, "rejected": "r"}',
            ":3: 'chosen' must be a string or a list of chat messages, not int",
        ),
        ('{"prompt": "", "chosen": "c", "rejected": "r"}', ":3: 'prompt' is empty"),
        ('["p", "c", "r"]', ":3: expected a JSON object"),
        ('{"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}', ":3: 'prompt'[0] must be a message"),
        (
            '{"prompt": [{"role": "user", "content": "x"}], "chosen": "c", "rejected": "r"}',
            ":3: prompt, chosen, rejected must all be strings",
        ),
    ],
)
def test_bad_line_is_named(tmp_path, bad_line, expected):
    path = jsonl(tmp_path, GOOD, GOOD, bad_line, GOOD)
    assert error_of(path).startswith(path + expected)


def test_empty_missing_and_wrong_sources(tmp_path):
    assert error_of(jsonl(tmp_path, "")).endswith(
        "no examples found (expected preference pairs: prompt, chosen, rejected (strings or chat message lists))"
    )
    assert error_of(str(tmp_path / "nope.jsonl")) == f"{tmp_path / 'nope.jsonl'}: file not found"
    assert "must be a JSONL file path" in error_of(42)
    assert (
        error_of([{"prompt": "p"}])
        == "data list item 1: missing key 'chosen' (each example needs prompt, chosen, rejected)"
    )
    assert "unknown data_format 'prefs'" in error_of([], "prefs")


def test_a_bad_line_stops_the_run_before_any_model_loads(dpo_config, tmp_path, monkeypatch):
    import flux_core.modeling as modeling
    from flux import FluxTrainer

    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: pytest.fail("model loaded before data was valid"))
    path = jsonl(tmp_path, GOOD, '{"prompt": "p"}')
    with pytest.raises(DataError, match=r"preferences.jsonl:2: missing key 'chosen'"):
        FluxTrainer(dpo_config(), show_progress=False).fit(prompts=path, data_format="preferences")
    with pytest.raises(Exception, match="trains on data_format='preferences', not 'prompts'"):
        FluxTrainer(dpo_config(), show_progress=False).fit(prompts=path, data_format="prompts")
