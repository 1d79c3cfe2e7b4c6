"""flux-distill: per-step losses equal raw TRL DistillationTrainer's; SFT conversations distill from their prompt
turns; a teacher that cannot be distilled from is one line naming algorithm.teacher."""

import subprocess
import sys
from pathlib import Path

import pytest
from make_prompts import make_prompts
from raw_trl import raw_trl_args

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError
from flux_core.trainer import FluxTrainer

STEPS = 3


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """Another tiny model of the student's family (same tokenizer), initialised from another seed."""
    from flux_core.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("teacher"), seed=1)


def distill_config(dpo_config, teacher, **overrides):
    algorithm = {"name": "distill", "teacher": str(teacher), "max_completion_length": 8}
    # max_length at its default: distill caps completions with max_completion_length and warns about max_length
    return dpo_config(algorithm, num_steps=STEPS, batch_size=4, precision="fp32", seed=0, max_length=1024, **overrides)


def distillation_config(max_length, **fields):
    """``trl.DistillationConfig`` from the shared raw-TRL settings: it has no ``max_length`` (nothing is cut)."""
    from trl import DistillationConfig

    return DistillationConfig(**fields)


def raw_trl_losses(config, records, lora: bool) -> list[float]:
    """Per-step losses of an unmodified trl.DistillationTrainer with the same student, teacher and settings, in
    fp32; both sides seed torch alike before the student's first samples, so they sample the same completions."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationTrainer

    algorithm = config.algorithm
    lora_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(config.model_path, dtype=torch.float32),
        teacher_model=AutoModelForCausalLM.from_pretrained(algorithm.teacher, dtype=torch.float32),
        args=raw_trl_args(
            distillation_config,
            config,
            STEPS,
            max_completion_length=algorithm.max_completion_length,
            beta=algorithm.beta,
        ),
        train_dataset=Dataset.from_list(records),
        processing_class=AutoTokenizer.from_pretrained(config.model_path),
        peft_config=lora_config if lora else None,
    )
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_per_step_losses_match_raw_trl(dpo_config, teacher_dir, lora):
    config = distill_config(dpo_config, teacher_dir, lora={"r": 4, "alpha": 8, "dropout": 0.0} if lora else None)
    records = make_prompts(16, seed=0)

    result = FluxTrainer(config, show_progress=False).fit(prompts=records)
    trl_losses = raw_trl_losses(config, records, lora)

    assert len(result.metric("loss")) == len(trl_losses) == STEPS
    assert result.metric("loss") == pytest.approx(trl_losses, abs=1e-5)
    assert len(set(result.metric("loss"))) == STEPS and min(result.metric("loss")) > 0  # a real divergence, moving
    last = result.history[-1].metrics
    for name in ("completion_length", "truncated_fraction", "entropy"):
        assert name in last, sorted(last)
    assert (Path(config.output_dir) / "final").is_dir()
    assert not (Path(config.output_dir) / "final" / "teacher").exists()


def test_sft_conversations_distill_from_their_prompt_turns():
    from flux_core.data.load import load_data

    user = {"role": "user", "content": "Explain tides."}
    answer = {"role": "assistant", "content": "The moon pulls the sea."}
    follow_up = {"role": "user", "content": "And the sun?"}
    rows = [{"messages": [user, answer, follow_up, {"role": "assistant", "content": "It pulls too, less."}]}]

    dataset = load_data(rows, "prompts")

    assert dataset[0]["prompt"] == [user, answer, follow_up]  # the student writes the last reply itself


def test_a_teacher_with_another_vocabulary_is_one_line(dpo_config, tmp_path):
    from flux_core.testing import build_tiny_model

    teacher = build_tiny_model(tmp_path / "other-family", vocab_size=300)
    config = distill_config(dpo_config, teacher)

    with pytest.raises(ConfigError) as info:
        FluxTrainer(config, show_progress=False).fit(prompts=make_prompts(8, seed=0))
    message = str(info.value)
    assert message.startswith(f"algorithm.teacher: {teacher} has a vocabulary of ")
    assert "pick a teacher of the student's model family" in message and "\n" not in message


def test_a_missing_teacher_directory_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        FluxConfig.from_dict(
            {"model_path": "org/model", "algorithm": {"name": "distill", "teacher": str(tmp_path / "no-teacher")}}
        )
    assert "algorithm.teacher" in str(info.value) and "directory not found" in str(info.value)


@pytest.mark.parametrize(
    "rows, accumulation, steps", [(16, 1, 4), (18, 1, 4), (16, 2, 2)], ids=["whole", "left-over", "accumulated"]
)
def test_an_epoch_counts_whole_generation_batches(rows, accumulation, steps):
    config = FluxConfig.from_dict(
        {
            "model_path": "org/model",
            "batch_size": 4,
            "trl": {"gradient_accumulation_steps": accumulation},
            "algorithm": {"name": "distill", "teacher": "org/teacher"},
        }
    )
    assert config.algorithm.steps_per_epoch(config, rows, world_size=1) == steps


def test_the_demo_config_is_valid_and_flux_plugins_lists_distill():
    import yaml
    from paths import REPO

    demo = yaml.safe_load((REPO / "configs" / "distill-demo.yaml").read_text())
    assert demo["algorithm"]["name"] == "distill" and demo["model_path"] == ".cache/tiny-model"
    demo["algorithm"]["teacher"] = "org/teacher"  # written by the SFT demo, which this test does not run
    assert FluxConfig.from_dict(demo).algorithm.beta == demo["algorithm"]["beta"]

    flux = str(Path(sys.executable).with_name("flux"))
    result = subprocess.run([flux, "plugins"], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "distill (flux-distill 0.1.0): register_algorithms" in result.stdout
    assert "distill: On-policy distillation" in result.stdout and "[data_format=prompts]" in result.stdout
