"""Every checkpoint carries a Hugging Face model card; push_to_hub uploads best/ or fails in one line."""

from pathlib import Path

import pytest
import yaml

from flux_core.errors import FluxError
from flux_core.trainer import FluxTrainer


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_each_checkpoint_has_a_card_whose_front_matter_parses(dpo_config, preference_records):
    config = dpo_config(num_steps=4, checkpoint={"save_steps": 2}, lora={"r": 4, "alpha": 8})
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    for name in ("checkpoint-2", "checkpoint-4", "best", "final"):
        card = Path(config.output_dir) / name / "README.md"
        meta = front_matter(card)
        assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
        assert meta["tags"] == ["flux", "dpo", "trl", "lora", "peft"]
        assert "base_model" not in meta  # a local directory is no hub id
        text = card.read_text()
        assert f"checkpoint: `{name}` at step" in text
        assert "| `loss` |" in text and "AutoModelForCausalLM.from_pretrained" in text
    best = (Path(result.best_path) / "README.md").read_text()
    assert "checkpoint: `best` at step" in best and "smoothed_train_loss" in best


def test_a_hub_model_and_dataset_reach_the_front_matter(tmp_path):
    from flux_core.config import FluxConfig
    from flux_core.report.model_card import card_text

    config = FluxConfig.from_dict(
        {
            "model_path": "Qwen/Qwen3-8B",
            "output_dir": str(tmp_path),
            "data": {"path": "trl-lib/ultrafeedback_binarized", "split": "train"},
            "algorithm": {"name": "dpo"},
        }
    )
    card = card_text(config, {"step": 10, "score": 0.5, "score_name": "eval_loss"}, {"loss": 0.5}, "best")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "Qwen/Qwen3-8B"
    assert meta["datasets"] == ["trl-lib/ultrafeedback_binarized"]
    assert "checkpoint: `best` at step 10 of 1000; eval_loss 0.5000" in card


def test_push_to_hub_uploads_best_with_its_card(dpo_config, preference_records, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create", repo_id))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, Path(folder_path).name, (Path(folder_path) / "README.md").exists()))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    config = dpo_config(num_steps=2, push_to_hub="me/my-dpo")
    FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    assert calls == [("create", "me/my-dpo"), ("upload", "me/my-dpo", "best", True)]


def test_push_to_hub_offline_is_one_line_and_keeps_the_checkpoint(dpo_config, preference_records, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    config = dpo_config(num_steps=2, push_to_hub="me/my-dpo")
    trainer = FluxTrainer(config, show_progress=False)
    with pytest.raises(FluxError) as error:
        trainer.fit(prompts=preference_records)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"push_to_hub: cannot upload {Path(config.output_dir) / 'best'} to 'me/my-dpo'")
    assert message.endswith(
        f"upload it later with `huggingface-cli upload me/my-dpo {Path(config.output_dir) / 'best'}`"
    )
    assert (Path(config.output_dir) / "best" / "model.safetensors").exists()
    assert trainer.model is not None  # the trained model is still there to use
