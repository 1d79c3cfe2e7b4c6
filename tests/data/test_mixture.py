"""Mixtures: data: and eval_data: as a list of sources, with weights or rows, each normalised before mixing."""

import json
import warnings
from collections import Counter

import pytest
import yaml
from make_preferences import SHAPES, make_pairs

from flux import ConfigError, DataError, FluxConfig
from flux_core.data.load import load_training_data, training_data_identity


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def pairs(prefix: str, count: int, **extra) -> list[dict]:
    return [{"prompt": f"{prefix}{i}", "chosen": f"c{i}", "rejected": f"r{i}", **extra} for i in range(count)]


def config(data, **overrides) -> FluxConfig:
    settings = {"model_path": "m", "algorithm": {"name": "dpo"}, "batch_size": 1, "data": data, **overrides}
    return FluxConfig.from_dict(settings)


def train_rows(data, data_format="preferences", **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # columns training ignores: tested in test_data.py
        return load_training_data(config(data, **overrides), data_format)[0]


def error_of(data, data_format="preferences", **overrides) -> str:
    with pytest.raises((DataError, ConfigError)) as info:
        train_rows(data, data_format, **overrides)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    return {
        "a": write_jsonl(tmp_path / "a.jsonl", pairs("a", 10, score=1.5)),
        "b": write_jsonl(tmp_path / "b.jsonl", pairs("b", 4, source="web", id=7)),
        "c": write_jsonl(tmp_path / "c.jsonl", pairs("c", 6)),
    }


def test_a_list_of_sources_is_concatenated_in_order(files):
    loaded = train_rows([files["a"], files["b"]])
    assert loaded["prompt"] == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(4)]


def test_two_preference_files_with_different_extra_columns_mix(files):
    """The extra columns neither training nor the other source has are dropped; the pairs all stay."""
    loaded = train_rows([{"path": files["a"], "weight": 1}, {"path": files["b"], "weight": 1}])
    assert loaded.column_names == ["prompt", "chosen", "rejected"]
    assert {prompt[0] for prompt in loaded["prompt"]} == {"a", "b"}


def test_weights_draw_by_share_until_every_source_is_used_whole_and_are_reproducible_by_seed(tmp_path):
    big, small = (
        write_jsonl(tmp_path / "big.jsonl", pairs("a", 300)),
        write_jsonl(tmp_path / "small.jsonl", pairs("c", 60)),
    )
    data = [{"path": big, "weight": 3}, {"path": small, "weight": 1}]
    first, again, other_seed = train_rows(data), train_rows(data), train_rows(data, seed=7)
    assert first["prompt"] == again["prompt"]
    assert first["prompt"] != other_seed["prompt"]
    assert set(first["prompt"]) == {f"a{i}" for i in range(300)} | {f"c{i}" for i in range(60)}  # nothing cut
    counts = Counter(prompt[0] for prompt in first["prompt"])
    assert 0.7 < counts["a"] / len(first) < 0.8  # drawn with probability 3/4 ...
    assert len(first) > 360  # ... so the small source repeats until the big one is used whole


def test_rows_take_the_first_rows_of_a_source(files):
    loaded = train_rows([{"path": files["a"], "rows": 3}, files["b"]])
    assert loaded["prompt"] == ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]
    assert train_rows({"path": files["a"], "rows": 2})["prompt"] == ["a0", "a1"]  # one source too
    assert error_of([files["a"], {"path": files["b"], "rows": 9}]) == (
        f"data[1] ({files['b']}): rows: 9 asks for more rows than it has (4)"
    )


def test_each_source_is_normalised_before_mixing(tmp_path, files):
    """HH-RLHF's implicit prompts mix with explicit pairs: each is brought to prompt/chosen/rejected first."""
    hh = write_jsonl(tmp_path / "hh.jsonl", [SHAPES["hh"](pair, i) for i, pair in enumerate(make_pairs(4, seed=0))])
    loaded = train_rows([files["c"], hh])
    assert loaded["prompt"][:6] == [f"c{i}" for i in range(6)]
    assert all(prompt.endswith("Assistant:") for prompt in loaded["prompt"][6:])


def test_errors_name_the_source_by_index_and_path(tmp_path, files):
    broken = write_jsonl(tmp_path / "broken.jsonl", [*pairs("x", 2), {"prompt": "p", "chosen": "c"}])
    assert error_of([files["a"], broken]) == (
        f"data[1]: {broken}:3: missing key 'rejected' (each example needs prompt, chosen, rejected)"
    )
    missing = str(tmp_path / "missing.jsonl")
    assert error_of([files["a"], missing]) == f"data[1]: {missing}: file not found"
    chat = write_jsonl(
        tmp_path / "chat.jsonl", [SHAPES["conversational"](pair, i) for i, pair in enumerate(make_pairs(3, seed=0))]
    )
    assert error_of([files["a"], chat]) == (
        f"data[1] ({chat}): 'prompt' is a chat message list here but a string in data[0] ({files['a']}); "
        "the sources of a mixture need one kind of value per column"
    )
    assert error_of([files["a"], {"path": files["b"], "columns": {"prompt": "question"}}]) == (
        f"data[1].columns.prompt: {files['b']} has no column 'question' (columns: prompt, chosen, rejected, source, id)"
    )


def test_prompt_sources_keep_shared_columns_and_warn_about_the_ones_they_drop(tmp_path):
    """Prompt data hands every column to reward functions, so dropping one is said."""
    first = write_jsonl(tmp_path / "math.jsonl", [{"prompt": f"q{i}", "answer": str(i), "level": i} for i in range(3)])
    second = write_jsonl(tmp_path / "code.jsonl", [{"prompt": f"w{i}", "answer": "x", "tests": "t"} for i in range(2)])
    with pytest.warns(UserWarning) as caught:
        loaded = load_training_data(config([first, second]), "prompts")[0]
    assert loaded.column_names == ["prompt", "answer"]
    assert [str(w.message) for w in caught] == [
        f"data: mixing drops extra columns the sources do not share: 'level' (not in every source: data[0] "
        f"({first})), 'tests' (not in every source: data[1] ({second})); map them onto one name with columns: to "
        "keep them"
    ]


def test_eval_data_takes_a_list_too(files):
    train, evaluation = load_training_data(config(files["a"], eval_data=[files["b"], files["c"]]), "preferences")
    assert len(train) == 10 and len(evaluation) == 10
    assert error_of([files["a"], files["b"]], eval_data={"split": "test"}) == (
        "config: eval_data.path: required when data is a list of sources"
    )


def test_fit_takes_a_list_of_paths_and_the_identity_names_the_sources(files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixed, _ = load_training_data(config(None), "preferences", [files["a"], files["c"]])
        rows = load_training_data(config(None), "preferences", pairs("a", 3))[0]
    assert len(mixed) == 16 and len(rows) == 3  # a list of dicts is still rows
    identity = training_data_identity(mixed, [files["a"], {"path": files["c"], "rows": 6}])
    assert identity["sources"] == f"{files['a']} + {files['c']} (rows 6)"


# ---------------------------------------------------------------------- the config keys


@pytest.mark.parametrize(
    "data, line, message",
    [
        (
            [{"path": "a.jsonl", "weight": 2}, "b.jsonl"],
            7,
            "data.1.weight: give every source of a mixture a weight, or none",
        ),
        (
            [{"path": "a.jsonl", "weight": 2}, {"path": "b.jsonl", "weight": 1, "rows": 3}],
            9,
            "data.1.rows: give the sources weights or rows, not both",
        ),
        (
            {"path": "a.jsonl", "weight": 2},
            6,
            "data.weight: only in a list of sources (a mixture), where it is this source's share",
        ),
        (["a.jsonl", {"path": "b.jsonl", "wieght": 2}], 7, "data.1.wieght: unknown key (did you mean 'weight'?)"),
        ([{"path": "a.jsonl", "weight": 0}], 6, "data.0.weight: Input should be greater than 0"),
        (
            ["a.jsonl", {"split": "test"}],
            6,
            "data.1.path: required: a file, glob, saved dataset directory or hub dataset id",
        ),
        ([], 4, "data: an empty list; give one source or more"),
        (3, 4, "data: expected a path, glob or hub id, a {path: ...} mapping, or a list of them, not int"),
    ],
)
def test_mixture_config_errors_are_one_line_naming_the_key(tmp_path, data, line, message):
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({"model_path": "m", "algorithm": {"name": "dpo"}, "data": data}, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        FluxConfig.from_yaml(path)
    assert str(info.value) == f"{path}:{line}: {message}"


def test_a_mixture_in_yaml(tmp_path, files):
    path = tmp_path / "mix.yaml"
    mixture = [{"path": files["a"], "weight": 0.7}, {"path": files["c"], "weight": 0.3}]
    path.write_text(yaml.safe_dump({"model_path": "m", "algorithm": {"name": "dpo"}, "data": mixture}))
    loaded = FluxConfig.from_yaml(path)
    assert [(source.path, source.weight) for source in loaded.data] == [(files["a"], 0.7), (files["c"], 0.3)]
    assert FluxConfig.from_yaml(path).to_yaml() == loaded.to_yaml()  # round-trips into checkpoints


def test_the_model_card_names_every_source_of_a_mixture(files):
    from flux_core.report.model_card import card_text, front_matter

    mixture = config(["trl-lib/ultrafeedback_binarized", files["a"]])
    assert front_matter(mixture, classifier=False)["datasets"] == ["trl-lib/ultrafeedback_binarized"]
    card = card_text(mixture, {"step": 1}, {}, "best")
    assert f"- data: `trl-lib/ultrafeedback_binarized`, `{files['a']}`" in card.splitlines()


def test_repeated_data_options_on_the_command_line_are_a_mixture(tmp_path, files, monkeypatch):
    from flux_core.cli import main
    from flux_core.errors import FluxError
    from flux_core.trainer import FluxTrainer

    given = []

    def fit(self, prompts=None, **options):
        given.append(prompts)
        raise FluxError("stopped before training")

    monkeypatch.setattr(FluxTrainer, "fit", fit)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI replaces it; restored after
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump({"model_path": "m", "algorithm": {"name": "dpo"}}))
    assert main(["train", str(path), "--data", files["a"], "--data", files["b"]]) == 1
    assert main(["train", str(path), "--data", files["a"]]) == 1
    assert given == [[files["a"], files["b"]], files["a"]]
