"""Model loading: local directories, hub ids (offline here), precision that never crashes on CPU."""

import pytest
import torch

from flux import FluxError
from flux_core.modeling import load_model, load_tokenizer, looks_local, resolve_precision


def test_hub_ids_go_through_the_hub_path_and_fail_cleanly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not looks_local("Qwen/Qwen3-8B")
    with pytest.raises(FluxError, match=r"^cannot load tokenizer from 'Qwen/Qwen3-8B-flux-test-missing': ") as info:
        load_tokenizer("Qwen/Qwen3-8B-flux-test-missing")
    assert "\n" not in str(info.value)


def test_local_directories_load_and_missing_ones_are_named(tiny_model_dir, tmp_path):
    assert looks_local(str(tiny_model_dir)) and looks_local("./model")
    model = load_model(str(tiny_model_dir))
    assert model.dtype == torch.float32
    assert load_tokenizer(str(tiny_model_dir)).pad_token is not None
    with pytest.raises(FluxError, match=r"^model_path '\./nope': directory not found$"):
        load_model("./nope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_auto_precision_is_fp32_on_cpu_and_half_precision_is_refused():
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(FluxError, match="precision: bf16 needs a GPU"):
        resolve_precision("bf16")


def test_the_trl_config_gets_the_resolved_setting(dpo_config, preference_records):
    from datasets import Dataset
    from flux_dpo.runner import DPORunner

    dataset = Dataset.from_list(preference_records)
    runner = DPORunner(dpo_config(num_steps=1), show_progress=False)
    assert runner.build_trainer(dataset, None).args.gradient_checkpointing is False
    runner = DPORunner(dpo_config(num_steps=1, gradient_checkpointing=True), show_progress=False)
    assert runner.build_trainer(dataset, None).args.gradient_checkpointing is True
