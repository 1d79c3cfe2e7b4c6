"""`flux data`: the first examples as the algorithm trains on them (the trained tokens those TRL's trainer
puts in its loss), token lengths over the data, rows longer than max_length and rows the trainer drops."""

import json

import pytest

from flux_core import hookimpl
from flux_core.cli import main

CHAT_PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Explain topic {i}."}],
        "chosen": [{"role": "assistant", "content": f"Topic {i} is clear and simple."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    for i in range(6)
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_config(tmp_path, model_dir, algorithm: dict, **keys) -> str:
    import yaml

    config = {"model_path": str(model_dir), "output_dir": str(tmp_path / "out"), "algorithm": algorithm, **keys}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def flux_data_json(capsys, *argv) -> tuple[list[dict], dict]:
    """``flux data ... --json``: the example objects and the summary; stdout holds nothing else."""
    assert main(["data", *argv, "--json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "summary" in objects[-1] and all("summary" not in example for example in objects[:-1])
    return objects[:-1], objects[-1]["summary"]


def tokenizer_of(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_dpo_pairs_show_the_chat_templated_prompt_and_train_the_completions(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=write_jsonl(tmp_path / "p.jsonl", CHAT_PAIRS))

    examples, summary = flux_data_json(capsys, config, "-n", "2")

    tokenizer = tokenizer_of(tiny_model_dir)
    assert [example["row"] for example in examples] == [0, 1]
    for example, pair in zip(examples, CHAT_PAIRS):
        assert example["example"]["chosen"] == pair["chosen"]  # the normalised fields
        assert example["shape"] == "explicit pairs (chat)"
        for side in ("chosen", "rejected"):
            prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
            whole = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
            assert example[f"{side}_text"] == whole and whole.startswith(prompt)
            assert "".join(example[f"{side}_trained"]) == whole[len(prompt) :]  # the reply, not the prompt
            assert pair[side][0]["content"] in whole[len(prompt) :]
            assert 0 < example[f"{side}_trained_tokens"] < example[f"{side}_tokens"]
    assert summary["rows"] == summary["sampled_rows"] == len(CHAT_PAIRS)
    assert summary["algorithm"] == "dpo" and summary["dropped"] == {} and summary["longer_than_max_length"] == 0
    for side in ("chosen", "rejected"):
        lengths = summary["lengths"][side]
        assert list(lengths) == ["p50", "p90", "p99", "max"]
        assert 0 < lengths["p50"] <= lengths["p90"] <= lengths["p99"] <= lengths["max"]
    assert summary["lengths"]["chosen"]["max"] > summary["lengths"]["rejected"]["max"]  # longer replies


@pytest.mark.filterwarnings("ignore:.*column 'index' is not used")
def test_pair_tokens_and_dropped_rows_match_trl_dpo_trainer(tiny_model_dir, preference_records, tmp_path):
    """Parity: the ids and trained tokens are those raw trl.DPOTrainer prepares, and the rows the preview
    says it drops (the prompt fills max_length) are the ones it drops."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from flux_core.config import FluxConfig
    from flux_core.data.load import load_data
    from flux_core.data.views import default_view

    tokenizer = tokenizer_of(tiny_model_dir)
    records = [dict(pair, index=i) for i, pair in enumerate(preference_records[:16])]
    prompt_lengths = sorted(len(tokenizer(pair["prompt"]).input_ids) for pair in records)
    max_length = prompt_lengths[len(records) // 2]  # some prompts fill it, some do not
    config = FluxConfig.from_dict(
        {"model_path": str(tiny_model_dir), "max_length": max_length, "algorithm": {"name": "dpo"}}
    )
    view = default_view(config, tokenizer, load_data(records, "preferences"))
    from flux_core.data.preview import preview_data

    preview = preview_data(config, records, num_examples=len(records))

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), max_length=max_length, report_to="none", use_cpu=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer)
    kept = {row["index"]: row for row in trainer.train_dataset}

    assert 0 < len(kept) < len(records)
    assert {example.row for example in preview.examples if not example.dropped} == set(kept)
    assert sum(preview.summary.dropped.values()) == len(records) - len(kept)
    for index, row in kept.items():
        for side in ("chosen", "rejected"):
            assert view.dataset[index][f"{side}_input_ids"] == row["prompt_ids"] + row[f"{side}_ids"]
            assert view.dataset[index][f"{side}_trained"] == [0] * len(row["prompt_ids"]) + [1] * len(
                row[f"{side}_ids"]
            )


def test_grpo_prompts_are_shown_as_the_rollout_encodes_them_and_nothing_is_trained(tiny_model_dir, tmp_path, capsys):
    prompts = [{"prompt": [{"role": "user", "content": f"Count to {i}."}], "answer": str(i)} for i in range(4)]
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    algorithm = {"name": "grpo", "rewards": [{"name": "exact_match"}]}
    config = write_config(tmp_path, tiny_model_dir, algorithm, data=data)

    examples, summary = flux_data_json(capsys, config, "-n", "1")

    expected = tokenizer_of(tiny_model_dir).apply_chat_template(
        prompts[0]["prompt"], add_generation_prompt=True, tokenize=False
    )
    (example,) = examples
    assert example["text"] == expected and example["trained"] == [] and example["trained_tokens"] == 0
    assert example["example"]["answer"] == "0"  # the columns rewards get
    assert summary["max_length"] is None and summary["dropped"] == {}
    assert "no token of the dataset is trained on" in summary["note"]
    assert summary["lengths"]["prompt"]["max"] == example["tokens"]


def text_pairs(tmp_path, rows=8) -> str:
    pairs = [{"prompt": f"Question {i}?", "chosen": " A good answer.", "rejected": " Bad."} for i in range(rows)]
    return write_jsonl(tmp_path / "pairs.jsonl", pairs)


def test_the_terminal_view_marks_the_trained_tokens_in_colour_or_brackets(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=text_pairs(tmp_path))

    assert main(["data", config, "-n", "1", "--color", "always"]) == 0
    coloured = capsys.readouterr().out
    assert "\x1b[2mQuestion 0?\x1b[0m\x1b[32m A good answer.<|endoftext|>\x1b[0m" in coloured

    assert main(["data", config, "-n", "1", "--color", "never"]) == 0
    plain = capsys.readouterr().out
    assert "\x1b[" not in plain
    assert "Question 0?[[ A good answer.<|endoftext|>]]" in plain and "Question 0?[[ Bad.<|endoftext|>]]" in plain
    assert "=== example 1 (row 0) ===" in plain and "=== example 2" not in plain
    assert "shape: explicit pairs (text)" in plain
    assert "token lengths over all 8 rows:" in plain and "p50" in plain and "p99" in plain


def test_colour_is_used_on_a_terminal_unless_no_color_is_set(monkeypatch):
    from flux_core.data.preview import wants_colour

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_colour("auto", Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour("auto", Terminal())
    assert wants_colour("always", Terminal()) and not wants_colour("never", Terminal())


def test_tokens_past_max_length_are_marked_cut_and_rows_without_a_trained_token_left_are_dropped(
    tiny_model_dir, tmp_path, capsys
):
    pairs = [
        {"prompt": "Hi?", "chosen": " Yes, and a long answer follows here.", "rejected": " No."},
        {
            "prompt": "A prompt that alone is long enough to fill the whole window?",
            "chosen": " Yes.",
            "rejected": " No.",
        },
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=data, max_length=8)

    examples, summary = flux_data_json(capsys, config)

    first, second = examples
    assert first["dropped"] is None and first["chosen_cut_tokens"] == first["chosen_tokens"] - 8
    assert first["chosen_trained_tokens"] == 8 - len(tokenizer_of(tiny_model_dir)("Hi?").input_ids)
    assert second["dropped"] == "no trained token within max_length 8 (the prompt fills it)"
    assert summary["longer_than_max_length"] == 2 and summary["cut_at_max_length"] is True
    assert summary["dropped"] == {"no trained token within max_length 8 (the prompt fills it)": 1}

    assert main(["data", config, "--color", "never"]) == 0
    plain = capsys.readouterr().out
    assert "<<" in plain and "--- dropped by the trainer: no trained token within max_length 8" in plain
    assert "dropped: 1 of 2 rows: no trained token within max_length 8 (the prompt fills it)" in plain


def test_the_pipelines_warnings_are_part_of_the_preview(tiny_model_dir, tmp_path, capsys):
    pairs = [{"prompt": f"Q{i}?", "chosen": " Same.", "rejected": " Same." if i < 2 else " Other."} for i in range(4)]
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=write_jsonl(tmp_path / "p.jsonl", pairs))

    _, summary = flux_data_json(capsys, config)
    assert any("2 of 4 pairs have chosen == rejected" in warning for warning in summary["warnings"])

    assert main(["data", config, "--color", "never"]) == 0
    assert "warning: " in capsys.readouterr().out


def test_large_data_is_measured_on_a_random_sample(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from flux_core.data import preview

    monkeypatch.setattr(preview, "SAMPLE_ROWS", 5)
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=text_pairs(tmp_path, rows=12))

    examples, summary = flux_data_json(capsys, config, "-n", "2")

    assert [example["row"] for example in examples] == [0, 1]  # the first rows, whatever the sample
    assert summary["rows"] == 12 and summary["sampled_rows"] == 5
    assert main(["data", config, "--color", "never"]) == 0
    assert "token lengths over a random sample of 5 of 12 rows:" in capsys.readouterr().out


def test_data_flag_and_set_override_the_config(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"}, data=str(tmp_path / "missing.jsonl"))
    other = write_jsonl(tmp_path / "other.jsonl", CHAT_PAIRS)

    _, summary = flux_data_json(capsys, config, "--data", other, "--set", "max_length=9")

    assert summary["source"] == other and summary["max_length"] == 9


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--data", "{tmp}/missing.jsonl"], "missing.jsonl"),
        (["--set", "algorithm.bta=0.2"], "algorithm.bta"),
    ],
    ids=["missing file", "misspelled key"],
)
def test_bad_input_is_one_line_and_exit_1(tiny_model_dir, tmp_path, capsys, argv, expected):
    config = write_config(tmp_path, tiny_model_dir, {"name": "dpo"})

    assert main(["data", config, *[arg.format(tmp=tmp_path) for arg in argv]]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("flux: error: ") and captured.err.count("\n") == 1 and expected in captured.err


def test_no_data_is_one_line_naming_the_fix(tiny_model_dir, tmp_path, capsys):
    assert main(["data", write_config(tmp_path, tiny_model_dir, {"name": "dpo"})]) == 1
    assert capsys.readouterr().err == "flux: error: no data to show: give --data FILE or a data: key in the config\n"


# ---------------------------------------------------------------------- an algorithm plugin's own preview


def every_token_view(config, tokenizer, dataset):
    """A plugin's view: the prompt alone, every token trained."""
    from flux_core import TrainingView

    ids = [tokenizer(prompt).input_ids for prompt in dataset["prompt"]]
    columns = {"prompt_input_ids": ids, "prompt_trained": [[1] * len(row) for row in ids]}
    from datasets import Dataset

    return TrainingView(Dataset.from_dict(columns), ("prompt",), None, truncation_mode=None, note="every token")


def one_row_too_few(config, tokenizer, dataset):
    view = every_token_view(config, tokenizer, dataset)
    return type(view)(view.dataset.select(range(len(view.dataset) - 1)), view.sequences, None, None)


@pytest.mark.parametrize("preview", ["every_token_view", "one_row_too_few"])
def test_an_algorithm_plugin_renders_its_own_preview(register_plugin, tiny_model_dir, tmp_path, capsys, preview):
    from flux_core.config import AlgorithmConfig
    from flux_core.registry import Algorithm

    class ShoutConfig(AlgorithmConfig):
        pass

    class Plugin:
        @hookimpl
        def register_algorithms(self, register):
            register(
                Algorithm(
                    name="shout",
                    config_schema=ShoutConfig,
                    runner="x:y",
                    data_format="prompts",
                    preview=f"{__name__}:{preview}",
                )
            )

    register_plugin(Plugin(), name="test-preview")
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": "Say bye."}])
    config = write_config(tmp_path, tiny_model_dir, {"name": "shout"}, data=data)

    if preview == "one_row_too_few":
        assert main(["data", config]) == 1
        assert capsys.readouterr().err == (
            "flux: error: algorithm 'shout': its preview returned 1 rows; "
            "it must return a TrainingView with one row per row given (2)\n"
        )
        return
    examples, summary = flux_data_json(capsys, config)
    assert [example["trained"] for example in examples] == [["Say hi."], ["Say bye."]]
    assert summary["note"] == "every token"


def test_a_character_split_between_prompt_and_trained_tokens_is_shown_whole(tiny_model_dir):
    from flux_core.data.preview import CONTEXT, TRAINED, _segments

    tokenizer = tokenizer_of(tiny_model_dir)
    ids = tokenizer("café ü").input_ids
    assert tokenizer.decode(ids[-1:]) == "\ufffd"  # ü is two byte tokens in the tiny vocabulary

    segments = _segments(tokenizer, ids, [CONTEXT] * (len(ids) - 1) + [TRAINED])

    assert segments == ((CONTEXT, "café "), (TRAINED, "ü"))
