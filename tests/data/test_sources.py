"""Data sources as they are shipped: compressed files, one-object JSON, content-true caching, fast failures."""

import bz2
import gzip
import json
import lzma
import os

import pytest
import zstandard

from flux import DataError
from flux_core.data.load import load_data
from flux_core.paths import looks_like_path

ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(6)]
CODECS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def rows_of(dataset) -> list[dict]:
    return dataset.select_columns(["prompt", "chosen", "rejected"]).to_list()


def error_of(source, data_format="preferences", **options) -> str:
    with pytest.raises(DataError) as info:
        load_data(source, data_format, **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def json_lines(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def csv_text(rows) -> bytes:
    return (
        "prompt,chosen,rejected\n" + "".join(f"{r['prompt']},{r['chosen']},{r['rejected']}\n" for r in rows)
    ).encode()


# ---------------------------------------------------------------------- compressed files


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_compressed_files_load_as_shipped(tmp_path, kind, compression):
    content = {"jsonl": json_lines(ROWS), "json": json.dumps(ROWS).encode(), "csv": csv_text(ROWS)}[kind]
    path = tmp_path / f"pairs.{kind}{compression}"
    path.write_bytes(CODECS[compression](content))
    assert rows_of(load_data(str(path), "preferences")) == ROWS


def test_a_glob_of_compressed_shards(tmp_path):
    (tmp_path / "train-0.jsonl.gz").write_bytes(gzip.compress(json_lines(ROWS[:3])))
    (tmp_path / "train-1.jsonl.gz").write_bytes(gzip.compress(json_lines(ROWS[3:])))
    assert rows_of(load_data(str(tmp_path / "train-*.jsonl.gz"), "preferences")) == ROWS


def test_a_bad_row_of_a_glob_is_named_by_its_own_shard_and_line(tmp_path):
    """Not ``part-*.jsonl row 5``: the shard and its line (blank lines counted) or, for Parquet, its row."""
    (tmp_path / "part-0.jsonl.gz").write_bytes(gzip.compress(json_lines(ROWS[:4])))
    (tmp_path / "part-1.jsonl.gz").write_bytes(
        gzip.compress(json_lines(ROWS[4:5]) + b'\n{"prompt": "p", "chosen": "c"}\n')
    )
    error = error_of(str(tmp_path / "part-*.jsonl.gz"))
    assert error.startswith(f"{tmp_path / 'part-1.jsonl.gz'}:3: missing key 'rejected'")

    from datasets import Dataset

    Dataset.from_list(ROWS[:3]).to_parquet(str(tmp_path / "part-0.parquet"))
    Dataset.from_list([ROWS[3], {**ROWS[4], "rejected": None}]).to_parquet(str(tmp_path / "part-1.parquet"))
    error = error_of(str(tmp_path / "part-*.parquet"))
    assert error.startswith(f"{tmp_path / 'part-1.parquet'} row 2: missing key 'rejected'")


def test_a_shard_whose_values_are_of_another_kind_is_named_not_converted(tmp_path):
    """``datasets`` types a glob's columns by its first shard and would read a later shard's ``5`` as ``"5"``."""
    (tmp_path / "part-0.jsonl").write_bytes(json_lines([{**row, "score": 0.5} for row in ROWS[:3]]))
    (tmp_path / "part-1.jsonl").write_bytes(json_lines([*ROWS[3:5], {**ROWS[5], "chosen": 5}]))
    error = error_of(str(tmp_path / "part-*.jsonl"))
    assert error == (
        f"{tmp_path / 'part-1.jsonl'}:3: 'chosen' must be a string or a list of chat messages, not int"
    )
    (tmp_path / "part-1.jsonl").write_bytes(json_lines([{**row, "score": "high"} for row in ROWS[3:]]))
    error = error_of(str(tmp_path / "part-*.jsonl"))
    assert error == (
        f"{tmp_path / 'part-1.jsonl'}:1: 'score' is a str here but a number in {tmp_path / 'part-0.jsonl'}:1; "
        "use one kind of value per key"
    )
    (tmp_path / "part-1.jsonl").write_bytes(json_lines([{**row, "score": 2} for row in ROWS[3:]]))
    loaded = load_data(str(tmp_path / "part-*.jsonl"), "preferences")  # an int beside a float is a number too
    assert rows_of(loaded) == ROWS and loaded["score"] == [0.5] * 3 + [2.0] * 3


@pytest.mark.parametrize("compression", CODECS)
def test_a_bad_line_of_a_compressed_file_is_named_by_file_and_line(tmp_path, compression):
    lines = json_lines(ROWS[:2]) + b'{"prompt": "p", "chosen": "c"}\n'
    path = tmp_path / f"pairs.jsonl{compression}"
    path.write_bytes(CODECS[compression](lines))
    assert error_of(str(path)) == (f"{path}:3: missing key 'rejected' (each example needs prompt, chosen, rejected)")
    path.write_bytes(CODECS[compression](json_lines(ROWS[:1]) + b'{"prompt": "p",\n'))
    assert error_of(str(path)).startswith(f"{path}:2: invalid JSON: ")


def test_a_file_that_does_not_decompress_is_one_line(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(json_lines(ROWS))  # not gzip at all
    assert error_of(str(path)).startswith(f"{path}: cannot read as json: ")


def test_compressed_parquet_is_refused_in_one_line(tmp_path):
    from datasets import Dataset

    Dataset.from_list(ROWS).to_parquet(str(tmp_path / "pairs.parquet"))
    path = tmp_path / "pairs.parquet.gz"
    path.write_bytes(gzip.compress((tmp_path / "pairs.parquet").read_bytes()))
    assert error_of(str(path)) == (
        f"{path}: parquet files compress their own contents and cannot be read .gz-compressed; decompress it"
    )


# ---------------------------------------------------------------------- a .json file holding one object


def test_one_json_object_is_one_row(tmp_path):
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(ROWS[0], indent=2))
    assert rows_of(load_data(str(path), "preferences")) == ROWS[:1]
    conversation = {
        "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}],
    }
    path.write_text(json.dumps(conversation))  # every value a list, of chat messages: still one row
    loaded = load_data(str(path), "preferences")
    assert len(loaded) == 1 and loaded[0]["prompt"] == [{"role": "user", "content": "Sky?"}]


def test_one_json_object_of_columns_is_a_row_per_list_item(tmp_path):
    columns = {key: [row[key] for row in ROWS] for key in ("prompt", "chosen", "rejected")}
    path = tmp_path / "columns.json.gz"
    path.write_bytes(gzip.compress(json.dumps(columns).encode()))
    assert rows_of(load_data(str(path), "preferences")) == ROWS
    columns["rejected"] = columns["rejected"][:4]
    path.write_bytes(gzip.compress(json.dumps(columns).encode()))
    assert error_of(str(path)) == (
        f"{path}: one JSON object of columns whose lists differ in length ('prompt' 6, 'chosen' 6, 'rejected' 4); "
        "give every column one value per row, or write one JSON object per row (JSON lines)"
    )


def test_an_openassistant_message_tree_is_refused_in_one_line(tmp_path):
    tree = {
        "message_id": "m1",
        "text": "What is a volcano?",
        "role": "prompter",
        "replies": [{"message_id": "m2", "text": "A mountain that erupts.", "role": "assistant", "replies": []}],
    }
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(tree, indent=2))
    assert error_of(str(path)) == f"{path} row 1: missing key 'chosen' (each example needs prompt, chosen, rejected)"


# ---------------------------------------------------------------------- content-true caching


def test_a_file_rewritten_under_the_same_mtime_is_read_again(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json_lines(ROWS))
    before = os.stat(path)
    first = load_data(str(path), "preferences")
    changed = [{**row, "prompt": row["prompt"].upper()} for row in ROWS]
    path.write_bytes(json_lines(changed))  # the same size, as cp -p or rsync -t would leave it
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns and os.stat(path).st_size == before.st_size
    second = load_data(str(path), "preferences")
    assert rows_of(second) == changed  # datasets alone serves the first rows from its cache here
    assert second._fingerprint != first._fingerprint


def test_the_fingerprint_follows_the_content_not_the_path_or_mtime(tmp_path):
    first, copy = tmp_path / "a.jsonl", tmp_path / "elsewhere" / "b.jsonl"
    copy.parent.mkdir()
    first.write_bytes(json_lines(ROWS))
    copy.write_bytes(json_lines(ROWS))
    os.utime(copy, (1, 1))
    assert load_data(str(first), "preferences")._fingerprint == load_data(str(copy), "preferences")._fingerprint
    copy.write_bytes(json_lines(ROWS[:5]))
    assert load_data(str(first), "preferences")._fingerprint != load_data(str(copy), "preferences")._fingerprint


# ---------------------------------------------------------------------- paths that fail fast


@pytest.fixture
def hub_calls(monkeypatch):
    """Calls that go to the hub (``datasets.load_dataset`` of a non-file, huggingface_hub downloads), recorded;
    ``load_dataset`` answers with ROWS."""
    import datasets
    import huggingface_hub

    calls = []

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            return result

        return record

    monkeypatch.setattr(datasets, "load_dataset", recorder("load_dataset", datasets.Dataset.from_list(ROWS)))
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, recorder(name))
    return calls


@pytest.mark.parametrize("path", ["data/hh/train", "./prefs", "~/no-such-prefs.jsonl", "org/prefs.jsonl.gz", "p.csv"])
def test_a_missing_path_that_looks_local_fails_at_once_without_the_hub(path, hub_calls):
    assert error_of(path) == f"data: {path}: file not found"
    assert error_of(path, what="eval_data") == f"eval_data: {path}: file not found"
    assert hub_calls == []


def test_a_hub_id_still_goes_to_the_hub(hub_calls):
    assert rows_of(load_data("org/prefs", "preferences", split="train")) == ROWS
    assert hub_calls == [("load_dataset", ("org/prefs",), {"split": "train"})]


@pytest.mark.parametrize(
    "value, is_path",
    [
        ("./prefs", True),
        ("../data/prefs", True),
        ("/data/prefs", True),
        ("~/prefs", True),
        (".hidden/prefs", True),
        ("data/hh/train", True),  # more than one slash
        ("prefs.jsonl", True),
        ("org/prefs.jsonl.gz", True),
        ("org/model.safetensors", True),
        ("trl-lib/ultrafeedback_binarized", False),
        ("Qwen/Qwen2.5-0.5B", False),  # ends in .5B, which is no file extension
        ("imdb", False),
    ],
)
def test_looks_like_path(value, is_path):
    assert looks_like_path(value) is is_path
