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
    assert message.endswith(f"upload it later with `hf upload me/my-dpo {Path(config.output_dir) / 'best'}`")
    assert (Path(config.output_dir) / "best" / "model.safetensors").exists()
    assert trainer.model is not None  # the trained model is still there to use


def test_push_to_hub_connection_error_names_the_hf_cli_command_that_uploads_it_later(tmp_path, monkeypatch):
    import shutil
    import subprocess
    import sys

    import httpx2
    import huggingface_hub

    from flux_core.report.model_card import push_to_hub

    class UnreachableApi:
        def create_repo(self, repo_id, exist_ok):
            pass

        def upload_folder(self, repo_id, folder_path, commit_message):
            raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "HfApi", UnreachableApi)
    checkpoint = tmp_path / "my run" / "best"  # a space: the suggested command must still be one shell word
    checkpoint.mkdir(parents=True)
    with pytest.raises(FluxError) as error:
        push_to_hub(checkpoint, "me/my-dpo")
    message = str(error.value)
    assert "\n" not in message and "Temporary failure in name resolution" in message
    assert message.endswith(f"upload it later with `hf upload me/my-dpo '{checkpoint}'`")
    # The suggested CLI is the one huggingface_hub installs (`huggingface-cli` is gone in 1.x), and takes
    # these arguments: REPO_ID LOCAL_PATH.
    beside_python = Path(sys.executable).with_name("hf")
    hf = str(beside_python) if beside_python.exists() else shutil.which("hf")
    assert hf, "huggingface_hub's `hf` command is not installed"
    usage = subprocess.run([hf, "upload", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "Usage: hf upload [OPTIONS] REPO_ID [LOCAL_PATH]" in usage


# ---------------------------------------------------------------------- what the card says


def hub_cache_snapshot(cache: Path, repo_id: str, license: str | None = "apache-2.0") -> Path:
    """``repo_id`` as huggingface_hub caches it (``models--org--name/snapshots/SHA``, ``refs/main``): its
    config.json, and a README.md whose front matter names ``license``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "config.json").write_text('{"model_type": "qwen3"}')
    front = f"---\nlicense: {license}\nlanguage: en\n---\n" if license else "---\nlanguage: en\n---\n"
    (snapshot / "README.md").write_text(front + "# The base model\n")
    return snapshot


def card_for(tmp_path: Path, model_path: str, **overrides) -> str:
    from flux_core.config import FluxConfig
    from flux_core.report.model_card import card_text

    settings = {"model_path": model_path, "output_dir": str(tmp_path / "my-run"), "algorithm": {"name": "dpo"}}
    config = FluxConfig.from_dict({**settings, **overrides})
    return card_text(config, {"step": 10, "score": 0.5, "score_name": "eval_loss"}, {"loss": 0.5}, "best")


def hub_card_data(text: str) -> dict:
    """The front matter as huggingface_hub reads it (what the Hub shows; validating needs the network)."""
    from huggingface_hub import ModelCard

    return ModelCard(text).data.to_dict()


def test_the_title_names_the_run_the_algorithm_and_the_base_model(tmp_path):
    card = card_for(tmp_path, "Qwen/Qwen3-8B")
    assert "\n# my-run: DPO fine-tune of Qwen/Qwen3-8B\n" in card
    assert "\n# best\n" not in card
    named = card_for(tmp_path, "Qwen/Qwen3-8B", run_name="beta-sweep-3")
    assert "\n# beta-sweep-3: DPO fine-tune of Qwen/Qwen3-8B\n" in named


def test_a_local_model_in_the_hub_cache_is_named_by_its_hub_id_and_keeps_its_license(tmp_path):
    snapshot = hub_cache_snapshot(tmp_path / "hub", "acme/base-7b")
    card = card_for(tmp_path, str(snapshot))
    data = hub_card_data(card)
    assert data["base_model"] == "acme/base-7b" and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["tags"] == ["flux", "dpo", "trl"]
    assert "# my-run: DPO fine-tune of acme/base-7b" in card
    assert f"[acme/base-7b](https://huggingface.co/acme/base-7b) (loaded from `{snapshot}`)" in card
    assert "- license:" not in card  # no "unknown license" note when there is one


def test_a_hub_id_gets_its_license_from_the_hub_cache_without_downloading(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub_cache_snapshot(tmp_path / "hub", "acme/base-7b", license="llama3.1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_card_data(card_for(tmp_path, "acme/base-7b"))["license"] == "llama3.1"
    uncached = card_for(tmp_path, "acme/other-7b")  # never fetched: no license, and a note saying so
    assert "license" not in hub_card_data(uncached)
    assert "- license: unknown (no local copy of the base model's card names one)" in uncached


def test_a_local_model_whose_config_records_its_hub_id_names_it(tmp_path):
    model = tmp_path / "my-copy"
    model.mkdir()
    (model / "config.json").write_text('{"_name_or_path": "acme/base-7b", "model_type": "qwen3"}')
    assert hub_card_data(card_for(tmp_path, str(model)))["base_model"] == "acme/base-7b"
    (model / "config.json").write_text('{"_name_or_path": "/home/me/models/x", "model_type": "qwen3"}')
    assert "base_model" not in hub_card_data(card_for(tmp_path, str(model)))  # a path is no hub id


def test_flux_train_with_data_and_lora_records_the_data_and_gives_the_adapter_a_peft_card(
    tmp_path, tiny_model_dir, preferences_file, capsys
):
    from flux_core.cli import main

    config = tmp_path / "lora.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'lora-run'}\nnum_steps: 2\nbatch_size: 8\n"
        "max_length: 128\nprecision: fp32\nlora: {r: 4, alpha: 8}\nalgorithm: {name: dpo}\n"
    )
    assert main(["train", str(config), "--data", str(preferences_file), "--no-progress"]) == 0
    best = tmp_path / "lora-run" / "best"
    card = (best / "README.md").read_text()
    assert f"- data: `{preferences_file}`" in card and "passed to `fit()`" not in card
    assert f"path: {preferences_file}" in (best / "flux_config.yaml").read_text()  # the config records it too
    adapter_card = (best / "adapter" / "README.md").read_text()
    data = hub_card_data(adapter_card)
    assert data["library_name"] == "peft" and data["tags"] == ["flux", "dpo", "trl", "lora", "peft"]
    assert "More Information Needed" not in adapter_card  # not peft's empty template
    assert "# lora-run: DPO fine-tune of" in adapter_card and "Rank 4, alpha 8.0" in adapter_card
    # the card's loading code works as written
    from peft import AutoPeftModelForCausalLM, PeftModel

    assert 'AutoPeftModelForCausalLM.from_pretrained("PATH_TO/adapter")' in adapter_card
    assert isinstance(AutoPeftModelForCausalLM.from_pretrained(str(best / "adapter")), PeftModel)


def test_a_base_card_whose_front_matter_does_not_parse_is_one_warning_and_no_license(tmp_path):
    model = tmp_path / "base"
    model.mkdir()
    (model / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# broken\n")
    with pytest.warns(UserWarning, match=f"^{model / 'README.md'}: front matter does not parse"):
        card = card_for(tmp_path, str(model))
    assert "license" not in hub_card_data(card)
