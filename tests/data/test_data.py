"""Training data: every source and shape users have, checked row by row, one error line each."""

import json
import warnings

import pytest
from make_preferences import make_shaped_pairs

from flux import DataError
from flux_core.data.load import load_data, load_training_data

GOOD = '{"prompt": "p", "chosen": "c", "rejected": "r"}'
ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(6)]


def rows_of(dataset, columns=("prompt", "chosen", "rejected")) -> list[dict]:
    return dataset.select_columns(list(columns)).to_list()


def error_of(source, data_format="preferences", **options) -> str:
    with pytest.raises(DataError) as info:
        load_data(source, data_format, **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def jsonl(tmp_path, *lines, name="preferences.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ---------------------------------------------------------------------- sources


def write_sources(tmp_path) -> dict:
    """The same six rows in every source kind Flux reads."""
    from datasets import Dataset, DatasetDict

    dataset = Dataset.from_list(ROWS)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    dataset.to_csv(str(tmp_path / "rows.csv"), index=False)
    (tmp_path / "shards").mkdir()
    dataset.select(range(3)).to_parquet(str(tmp_path / "shards" / "train-00000.parquet"))
    dataset.select(range(3, 6)).to_parquet(str(tmp_path / "shards" / "train-00001.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    DatasetDict(train=dataset, test=dataset.select(range(2))).save_to_disk(str(tmp_path / "saved-dict"))
    return {
        "jsonl": str(tmp_path / "rows.jsonl"),
        "json": str(tmp_path / "rows.json"),
        "parquet": str(tmp_path / "rows.parquet"),
        "csv": str(tmp_path / "rows.csv"),
        "glob of shards": str(tmp_path / "shards" / "*.parquet"),
        "folder of shards": str(tmp_path / "shards"),
        "save_to_disk": str(tmp_path / "saved"),
        "save_to_disk DatasetDict": str(tmp_path / "saved-dict"),
        "Path": tmp_path / "rows.jsonl",
        "Dataset": dataset,
        "DatasetDict": DatasetDict(train=dataset),
        "list": ROWS,
    }


def test_every_source_kind_loads_the_same_rows(tmp_path):
    for kind, source in write_sources(tmp_path).items():
        assert rows_of(load_data(source, "preferences")) == ROWS, kind


def test_file_data_stays_memory_mapped_and_a_second_load_is_served_from_the_cache(tmp_path):
    path = write_sources(tmp_path)["jsonl"]
    first = load_data(path, "preferences")
    assert first.cache_files, "rows should live in an Arrow file on disk, not in Python memory"
    second = load_data(path, "preferences")
    assert second.cache_files == first.cache_files  # no second conversion of the JSON


def test_a_split_of_a_saved_dataset_dict(tmp_path):
    path = write_sources(tmp_path)["save_to_disk DatasetDict"]
    assert rows_of(load_data(path, "preferences", split="test")) == ROWS[:2]
    assert error_of(path, split="validation").endswith("no split 'validation' (splits: train, test); set data.split")


def test_a_hub_id_goes_through_load_dataset_with_its_subset_and_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_data("trl-lib/ultrafeedback_binarized", "preferences", name="default", split="train")
    assert calls == [("trl-lib/ultrafeedback_binarized", {"name": "default", "split": "train"})]
    assert rows_of(loaded) == ROWS


def test_a_hub_id_without_a_split_takes_train(monkeypatch):
    import datasets

    splits = datasets.DatasetDict(train=datasets.Dataset.from_list(ROWS), test=datasets.Dataset.from_list(ROWS[:1]))
    monkeypatch.setattr(datasets, "load_dataset", lambda path, **kwargs: splits)
    assert rows_of(load_data("org/prefs", "preferences")) == ROWS


def test_an_unreachable_hub_dataset_is_one_line():
    # conftest sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: the real load_dataset fails at once.
    assert error_of("trl-lib/no-such-dataset") == (
        "cannot load dataset 'trl-lib/no-such-dataset' from the hub (offline?): download it or pass a local path"
    )


def test_missing_files_and_unsupported_sources(tmp_path):
    assert error_of(str(tmp_path / "nope.jsonl")) == f"data: {tmp_path / 'nope.jsonl'}: file not found"
    assert error_of(str(tmp_path / "*.parquet")) == f"data: {tmp_path / '*.parquet'}: no files match this pattern"
    (tmp_path / "notes.txt").write_text("hello")
    assert "cannot read .txt files" in error_of(str(tmp_path / "notes.txt"))
    assert "not int" in error_of(42)
    assert error_of([GOOD]) == "data list item 1: expected a dict of columns, not str"
    assert "unknown data_format 'prefs'" in error_of([], "prefs")


# ---------------------------------------------------------------------- bad rows


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
        ('{"prompt": "p", "chosen": "c", "rejected": null}', ":3: missing key 'rejected'"),
        ('["p", "c", "r"]', ":3: expected a JSON object, not list"),
        (
            '{"prompt": [{"role": "user", "content": "x"}], "chosen": "c", "rejected": "r"}',
            ":3: 'prompt' is a chat message list here but a string on line 1; use one kind of value per key",
        ),
    ],
)
def test_bad_line_is_named(tmp_path, bad_line, expected):
    path = jsonl(tmp_path, GOOD, "", GOOD, bad_line, GOOD)  # the blank line 2 holds no row: the bad one is line 4
    assert error_of(path).startswith(path + expected.replace(":3:", ":4:"))


def test_bad_chat_messages_are_named_by_row_and_message(tmp_path):
    chat = '{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], '
    good = chat + '"rejected": [{"role": "assistant", "content": "b"}]}'
    bad = chat + '"rejected": [{"role": "assistant", "content": "b"}, {"role": "assistant"}]}'
    path = jsonl(tmp_path, good, good, bad)
    assert error_of(path) == f"{path}:3: 'rejected'[1] must be a message like " + '{"role": "user", "content": "..."}'


def test_rows_of_other_files_are_named_by_row(tmp_path):
    from datasets import Dataset

    rows = ROWS[:4] + [{"prompt": "p", "chosen": "c", "rejected": None}]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "pairs.parquet"))
    assert error_of(str(tmp_path / "pairs.parquet")).startswith(f"{tmp_path / 'pairs.parquet'} row 5: missing key")
    assert error_of(Dataset.from_list(rows)).startswith("dataset row 5: missing key 'rejected'")
    assert error_of([{"prompt": "p"}]) == (
        "data list item 1: missing key 'chosen' (each example needs prompt, chosen, rejected)"
    )


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        (GOOD + "\n").encode() + '{"prompt": "caf\xe9", "chosen": "c", "rejected": "r"}\n'.encode("latin-1")
    )
    assert error_of(str(path)) == f"{path}:2: 'prompt' is not UTF-8 text; save the file as UTF-8"


def test_empty_data(tmp_path):
    assert error_of(jsonl(tmp_path, "")).endswith(
        "no examples found (expected preference pairs: prompt, chosen, "
        "rejected (strings or chat message lists; prompt may be implicit "
        "in chosen and rejected))"
    )


# ---------------------------------------------------------------------- shapes


def test_hh_rlhf_strings_get_the_shared_prefix_up_to_the_last_assistant_marker():
    pairs = make_shaped_pairs(4, seed=0, shape="hh")
    loaded = load_data(pairs, "preferences")
    original = make_shaped_pairs(4, seed=0, shape="explicit")
    for row, pair in zip(loaded, original):
        assert row["prompt"] == f"\n\nHuman: {pair['prompt']}\n\nAssistant:"
        assert row["chosen"] == " " + pair["chosen"]  # the whole reply, even where both replies start alike
        assert row["rejected"] == " " + pair["rejected"]


def test_a_reply_that_starts_alike_stays_in_the_completion():
    pair = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there!", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello."}
    row = load_data([pair], "preferences")[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        "\n\nHuman: Hi\n\nAssistant:",
        " Hello there!",
        " Hello.",
    )


def test_implicit_prompt_without_a_marker_follows_trl():
    from trl.data_utils import extract_prompt

    pair = {"chosen": "The sky is blue today", "rejected": "The sky is green today"}
    assert load_data([pair], "preferences").to_list() == [extract_prompt(pair)]


def test_conversational_pairs_split_at_the_last_shared_turn():
    pairs = make_shaped_pairs(3, seed=0, shape="conversational")
    for row, pair in zip(load_data(pairs, "preferences"), make_shaped_pairs(3, seed=0)):
        assert row["prompt"] == [{"role": "user", "content": pair["prompt"]}]
        assert row["chosen"] == [{"role": "assistant", "content": pair["chosen"]}]
        assert row["rejected"] == [{"role": "assistant", "content": pair["rejected"]}]


def test_h4_shape_moves_the_repeated_user_turn_into_the_prompt_and_keeps_extra_columns():
    pairs = make_shaped_pairs(3, seed=0, shape="h4")
    loaded = load_data(pairs, "preferences")
    assert set(loaded.column_names) >= {"prompt_id", "messages", "score_chosen", "score_rejected"}
    for row, pair in zip(loaded, make_shaped_pairs(3, seed=0)):
        assert row["prompt"] == [{"role": "user", "content": pair["prompt"]}]
        assert row["chosen"] == [{"role": "assistant", "content": pair["chosen"]}]
        assert row["score_chosen"] == 8.0


def test_string_prompt_with_replies_only_becomes_a_user_turn():
    pair = {
        "prompt": "Sky?",
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    assert load_data([pair], "preferences")[0]["prompt"] == [{"role": "user", "content": "Sky?"}]


def test_shapes_that_cannot_be_made_sense_of_are_named():
    turns = [{"role": "user", "content": "Other question"}, {"role": "assistant", "content": "x"}]
    other = {"prompt": "Sky?", "chosen": turns, "rejected": turns[:1] + [{"role": "assistant", "content": "y"}]}
    assert error_of([other]).startswith(
        "data list item 1: 'prompt' is a string but chosen and rejected start with a different user turn"
    )
    chat_prompt = {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
    assert "'prompt' is a chat message list but chosen and rejected are strings" in error_of([chat_prompt])
    assert error_of([{"chosen": "abc", "rejected": "xyz"}]) == (
        "data list item 1: chosen and rejected share no prompt; add a 'prompt' column (or map one with data.columns)"
    )


def test_column_mapping():
    rows = [{"question": "q", "good": "a", "bad": "b", "source": "s"}]
    loaded = load_data(rows, "preferences", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert loaded.to_list() == [{"prompt": "q", "chosen": "a", "rejected": "b", "source": "s"}]
    assert error_of(rows, columns={"prompt": "query"}) == (
        "data.columns.prompt: data list has no column 'query' (columns: question, good, bad, source)"
    )
    assert error_of(rows, columns={"answer": "good"}).startswith("data.columns.answer: not a preferences column")
    clash = [{"prompt": "p", "question": "q", "chosen": "a", "rejected": "b"}]
    assert error_of(clash, columns={"prompt": "question"}).startswith(
        "data.columns.prompt: data list already has a 'prompt' column"
    )


def test_prompt_data_from_messages_keeps_extra_columns():
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ],
            "answer": "4",
        },
        {"messages": [{"role": "user", "content": "Hi"}], "answer": "hello"},
    ]
    loaded = load_data(rows, "prompts")
    assert loaded[0]["prompt"] == rows[0]["messages"][:2]
    assert loaded[1]["prompt"] == rows[1]["messages"]
    assert loaded["answer"] == ["4", "hello"]
    mapped = load_data([{"question": "2+2?", "answer": "4"}], "prompts", columns={"prompt": "question"})
    assert mapped.to_list() == [{"prompt": "2+2?", "answer": "4"}]
    assert error_of([{"messages": [{"role": "assistant", "content": "x"}]}], "prompts") == (
        "data list item 1: 'messages' has no turn before its assistant reply to use as the prompt"
    )
    assert error_of([{"question": "q"}], "prompts") == (
        "data list item 1: missing key 'prompt' (each example needs prompt (or messages))"
    )


def test_normalising_in_several_processes_gives_the_same_rows():
    pairs = make_shaped_pairs(40, seed=0, shape="h4")
    assert load_data(pairs, "preferences", num_proc=2).to_list() == load_data(pairs, "preferences").to_list()


# ---------------------------------------------------------------------- warnings


def caught(function, *args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        function(*args, **kwargs)
    return [str(warning.message) for warning in seen]


def test_pairs_without_signal_are_counted_in_one_line_each():
    pairs = ROWS[:3] + [
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": "", "rejected": "r"},
        {"prompt": "p", "chosen": "c", "rejected": "  "},
    ]
    assert caught(load_data, pairs, "preferences") == [
        "data list: 1 of 6 pairs have chosen == rejected; they carry no preference signal",
        "data list: 2 of 6 pairs have an empty chosen or rejected completion",
    ]
    chat = make_shaped_pairs(2, seed=0, shape="conversational")
    chat[1]["rejected"] = chat[1]["chosen"]
    assert caught(load_data, chat, "preferences") == [
        "data list: 1 of 2 pairs have chosen == rejected; they carry no preference signal"
    ]
    assert caught(load_data, ROWS, "preferences") == []


def test_batch_size_larger_than_the_data_is_a_warning(dpo_config):
    assert caught(load_training_data, dpo_config(batch_size=8), "preferences", ROWS) == [
        "batch_size 8 is larger than the training data (6 rows): every step repeats examples"
    ]


# ---------------------------------------------------------------------- config and eval data


def test_yaml_long_form_with_columns_and_another_split_for_eval(tmp_path, tiny_model_dir):
    from datasets import Dataset, DatasetDict

    from flux_core.config import FluxConfig

    renamed = [{"q": row["prompt"], "good": row["chosen"], "bad": row["rejected"]} for row in ROWS]
    DatasetDict(train=Dataset.from_list(renamed), test=Dataset.from_list(renamed[:2])).save_to_disk(
        str(tmp_path / "saved")
    )
    (tmp_path / "config.yaml").write_text(
        f"model_path: {tiny_model_dir}\n"
        f"batch_size: 2\n"
        f"data:\n  path: {tmp_path / 'saved'}\n  split: train\n"
        f"  columns: {{prompt: q, chosen: good, rejected: bad}}\n"
        f"eval_data: {{split: test}}\n"
        f"algorithm: {{name: dpo}}\n"
    )
    config = FluxConfig.from_yaml(tmp_path / "config.yaml")
    train, evaluation = load_training_data(config, "preferences")
    assert rows_of(train) == ROWS
    assert rows_of(evaluation) == ROWS[:2]


def test_eval_fraction_carves_the_same_rows_for_the_same_seed(dpo_config):
    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(40)]
    train, evaluation = load_training_data(dpo_config(eval_fraction=0.1), "preferences", rows)
    assert (len(train), len(evaluation)) == (36, 4)
    assert set(train["prompt"]).isdisjoint(evaluation["prompt"])
    again = load_training_data(dpo_config(eval_fraction=0.1), "preferences", rows)[1]
    other_seed = load_training_data(dpo_config(eval_fraction=0.1, seed=7), "preferences", rows)[1]
    assert again["prompt"] == evaluation["prompt"]
    assert other_seed["prompt"] != evaluation["prompt"]


def test_config_refuses_ambiguous_data_settings(dpo_config):
    from flux_core.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_fraction: give eval_data or eval_fraction, not both"):
        dpo_config(eval_data="x.jsonl", eval_fraction=0.1)
    with pytest.raises(ConfigError, match=r"data\.path: required"):
        dpo_config(data={"split": "train"})
    with pytest.raises(ConfigError, match=r"data\.colums: unknown key \(did you mean 'columns'\?\)"):
        dpo_config(data={"path": "x.jsonl", "colums": {}})


def test_a_bad_line_stops_the_run_before_any_model_loads(dpo_config, tmp_path, monkeypatch):
    import flux_core.modeling as modeling
    from flux import FluxTrainer

    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: pytest.fail("model loaded before data was valid"))
    path = jsonl(tmp_path, GOOD, '{"prompt": "p"}')
    with pytest.raises(DataError, match=r"preferences.jsonl:2: missing key 'chosen'"):
        FluxTrainer(dpo_config(), show_progress=False).fit(prompts=path, data_format="preferences")
    with pytest.raises(Exception, match="trains on data_format='preferences', not 'prompts'"):
        FluxTrainer(dpo_config(), show_progress=False).fit(prompts=path, data_format="prompts")
