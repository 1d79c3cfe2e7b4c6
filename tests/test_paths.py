"""A model_path or checkpoint that looks local and does not exist fails at once, before any hub call."""

from __future__ import annotations

import warnings

import pytest

from flux import FluxConfig, FluxError, FluxTrainer
from flux_core.cli import main
from flux_core.modeling import check_model_path, load_tokenizer

ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(8)]


@pytest.fixture
def hub_calls(monkeypatch):
    """The calls through which a model or dataset would come from the hub, recorded (none reaches it)."""
    import datasets
    import transformers

    calls = []

    class FakeTokenizer:
        pad_token, eos_token = None, "</s>"

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls.append((name, args))
            return result

        return record

    monkeypatch.setattr(datasets, "load_dataset", recorder("load_dataset"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder("tokenizer", FakeTokenizer()))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recorder("model"))
    return calls


@pytest.mark.parametrize("path", ["models/qwen/typo", "./typo", "~/no-such-model", "model.safetensors"])
def test_a_missing_local_model_path_fails_before_the_data_loads(tmp_path, path, hub_calls):
    config = FluxConfig.from_dict(
        {"model_path": path, "output_dir": str(tmp_path / "out"), "algorithm": {"name": "dpo"}, "data": "org/prefs"}
    )
    with pytest.raises(FluxError) as info:
        FluxTrainer(config, show_progress=False).fit()
    assert str(info.value) == f"model_path '{path}': directory not found"
    assert hub_calls == []  # not even the data (a hub id here) was asked for


def test_a_file_is_not_a_model_directory(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(FluxError, match=r"model_path '.*model.safetensors': a file, not a model directory"):
        check_model_path(str(weights))


def test_a_hub_id_still_goes_to_the_hub(hub_calls):
    tokenizer = load_tokenizer("org/name")
    assert hub_calls == [("tokenizer", ("org/name",))] and tokenizer.pad_token == "</s>"


def test_flux_generate_with_a_missing_checkpoint_fails_at_once(monkeypatch, capsys, hub_calls):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the CLI replaces it; restored after
    assert main(["generate", "outputs/dpo/bset", "Hello"]) == 1
    assert capsys.readouterr().err == "flux: error: outputs/dpo/bset: checkpoint directory not found\n"
    assert hub_calls == []
