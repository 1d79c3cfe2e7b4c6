"""flux-kto: per-step losses equal raw TRL KTOTrainer's; pairs are unpaired; bad labels are one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO
from raw_trl import raw_trl_args
from raw_trl import raw_trl_losses as train_raw_trl

from flux_core.trainer import FluxTrainer

STEPS = 4


def unpaired_records(preference_records: list[dict]) -> list[dict]:
    """One row per pair, desirable and undesirable alternating, so that every batch holds both."""
    return [
        {"prompt": pair["prompt"], "completion": pair["chosen" if i % 2 == 0 else "rejected"], "label": i % 2 == 0}
        for i, pair in enumerate(preference_records)
    ]


def kto_config(dpo_config, **overrides):
    return dpo_config({"name": "kto", "beta": 0.1}, num_steps=STEPS, precision="fp32", **overrides)


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step training losses of an unmodified trl.KTOTrainer with the same settings, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32)
    args = raw_trl_args(KTOConfig, config, STEPS, beta=config.algorithm.beta)
    return train_raw_trl(KTOTrainer, args, model, config.model_path, records, lora)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_match_raw_trl(dpo_config, preference_records, lora):
    lora_block = {"r": 4, "alpha": 8, "dropout": 0.0} if lora else None
    config = kto_config(dpo_config, lora=lora_block)
    records = unpaired_records(preference_records)

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)
    flux_losses = result.metric("loss")
    trl_losses = raw_trl_losses(config, records, lora)

    assert len(flux_losses) == len(trl_losses) == STEPS
    assert flux_losses == pytest.approx(trl_losses, abs=1e-5)
    assert flux_losses[-1] < flux_losses[0] - 1e-3  # it trained (the LoRA run too): not a trivial match
    last = result.history[-1].metrics
    for name in ("kl", "desirable_reward", "undesirable_reward", "reward_margin"):
        assert name in last, sorted(last)  # TRL's rewards/chosen etc. under readable names
    assert (Path(config.output_dir) / "final").is_dir()


def test_preference_pairs_are_unpaired_into_alternating_labels(preference_records):
    from flux_core.data.load import load_data

    pairs = preference_records[:6]
    dataset = load_data(pairs, "unpaired")

    assert len(dataset) == 12
    assert dataset["label"] == [True, False] * 6  # every batch has desirable and undesirable rows
    assert dataset[0] == {"prompt": pairs[0]["prompt"], "completion": pairs[0]["chosen"], "label": True}
    # the undesirable neighbour comes from another pair (KTO's KL term pairs prompts with neighbours' completions)
    assert dataset[1] == {"prompt": pairs[3]["prompt"], "completion": pairs[3]["rejected"], "label": False}
    assert sorted(dataset["completion"]) == sorted([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])


def test_chat_preference_pairs_are_unpaired_as_chat():
    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_shaped_pairs

    from flux_core.data.load import load_data

    dataset = load_data(make_shaped_pairs(4, 0, "conversational"), "unpaired")

    assert len(dataset) == 8
    assert dataset[0]["prompt"][0]["role"] == "user"
    assert dataset[0]["completion"][0]["role"] == "assistant"


def test_kto_trains_on_preference_pairs(dpo_config, preference_records):
    result = FluxTrainer(kto_config(dpo_config), show_progress=False).fit(prompts=preference_records)

    assert len(result.metric("loss")) == STEPS
    assert result.metric("loss")[-1] < result.metric("loss")[0]


@pytest.mark.parametrize(
    "label_line, expected",
    [
        ('"label": "yes"', "kto.jsonl:3: 'label' must be true or false, not 'yes'"),
        ('"label": 1', "kto.jsonl:3: 'label' must be true or false, not 1"),
        ('"label": null', "kto.jsonl:3: missing key 'label'"),
    ],
    ids=["string", "number", "null"],
)
def test_bad_label_is_a_one_line_error_naming_the_row(tmp_path, tiny_model_dir, label_line, expected):
    rows = [
        '{"prompt": "a", "completion": "b", "label": true}',
        '{"prompt": "c", "completion": "d", "label": false}',
        '{"prompt": "e", "completion": "f", ' + label_line + "}",
    ]
    data = tmp_path / "kto.jsonl"
    data.write_text("\n".join(rows) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'out'}\nnum_steps: 1\nalgorithm:\n  name: kto\n"
    )
    process = subprocess.run(
        [sys.executable, "-m", "flux_core.cli", "train", str(config), "--data", str(data)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # refused before any model loaded or run started


def test_missing_label_names_the_key(preference_records):
    from flux_core.data.load import load_data
    from flux_core.errors import DataError

    with pytest.raises(
        DataError, match=r"item 1: missing key 'label' \(each example needs prompt, completion, label\)"
    ):
        load_data([{"prompt": "a", "completion": "b"}], "unpaired")


def test_flux_plugins_lists_kto():
    flux = str(Path(sys.executable).with_name("flux"))
    result = subprocess.run([flux, "plugins"], check=False, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "kto (flux-kto 0.1.0): register_algorithms" in result.stdout
    assert "kto: Kahneman-Tversky Optimization" in result.stdout and "[data_format=unpaired]" in result.stdout
