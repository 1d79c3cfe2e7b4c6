"""QLoRA (``lora: {quantize: 4bit|8bit}``): the base loads through bitsandbytes, only the adapter trains, and
every checkpoint holds the adapter plus a merged model that loads as an ordinary model and computes what the
quantized base with the adapter computes. Runs on CPU (bitsandbytes >= 0.48 quantizes there) and on CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install 'flux-train[qlora]'")


def qlora_config(tiny_model_dir, output_dir, quantize: str, **overrides):
    from flux_core.config import FluxConfig

    return FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(output_dir),
            "num_steps": 2,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "max_length": 64,
            "precision": "fp32",
            "lora": {"r": 4, "quantize": quantize},
            "checkpoint": {"save_steps": 1},
            "algorithm": {"name": "dpo", "beta": 0.1},
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def qlora_run(tiny_model_dir, preferences_file, tmp_path_factory):
    """A 2-step DPO run with a 4-bit base, saved at each step."""
    from flux import FluxTrainer

    config = qlora_config(tiny_model_dir, tmp_path_factory.mktemp("qlora") / "out", "4bit")
    trainer = FluxTrainer(config, show_progress=False)
    result = trainer.fit(prompts=str(preferences_file))
    return trainer, result


def test_the_base_is_4bit_and_only_the_adapter_trains(qlora_run):
    import bitsandbytes

    trainer, result = qlora_run
    quantized = [m for m in trainer.model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert quantized, "no layer was loaded as NF4"
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable), trainable
    assert len(result.metric("loss")) == 2


def test_the_merged_checkpoint_loads_plain_and_computes_what_base_plus_adapter_computes(qlora_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from flux_core.modeling import load_model

    _, result = qlora_run
    final = Path(result.final_path)
    config = (final / "config.json").read_text()
    assert "quantization_config" not in config  # an ordinary model: loads without bitsandbytes
    merged = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    base = load_model(str(tiny_model_dir), "fp32", quantize="4bit")
    adapted = PeftModel.from_pretrained(base, final / "adapter").eval()
    ids = torch.arange(3, 19, device=merged.device).reshape(2, 8)
    with torch.no_grad():
        expected = adapted(input_ids=ids.to(adapted.device)).logits.float().cpu()
        merged_logits = merged(input_ids=ids).logits.float().cpu()
    # Not bit-exact: TRL keeps a QLoRA adapter in bf16 (the QLoRA paper's recipe), and the quantized forward
    # adds it through its own kernels; merged and unmerged agree to ~1e-3 of the logits' scale.
    difference = (merged_logits - expected).abs().max()
    assert difference <= 2e-3 * expected.abs().max(), difference


def test_an_8bit_base_saves_a_merged_model_close_to_the_quantized_one(tiny_model_dir, tmp_path):
    """LLM.int8 also quantizes the activations in its forward, so the merged (dequantized) model matches
    the quantized one to int8 precision rather than exactly."""
    import torch
    from transformers import AutoModelForCausalLM

    from flux_core.modeling import load_model, load_tokenizer, peft_config
    from flux_core.run.checkpoint import save_model

    config = qlora_config(tiny_model_dir, tmp_path / "out", "8bit")
    from peft import get_peft_model

    model = get_peft_model(load_model(str(tiny_model_dir), "fp32", quantize="8bit"), peft_config(config.lora))
    save_model(model, load_tokenizer(str(tiny_model_dir)), tmp_path / "saved")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32).eval()
    ids = torch.arange(3, 19).reshape(2, 8)
    with torch.no_grad():
        quantized = model.eval()(input_ids=ids.to(model.device)).logits.float().cpu()
        plain = merged(input_ids=ids).logits.float().cpu()
    assert (plain - quantized).abs().max() < 0.05 * quantized.abs().max()


def test_without_bitsandbytes_the_run_stops_in_one_line_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    from flux_core.errors import FluxError
    from flux_core.modeling import load_model

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(FluxError, match=r"^lora.quantize: 4bit needs bitsandbytes .*pip install 'flux-train\[qlora\]'"):
        load_model(str(tiny_model_dir), "fp32", quantize="4bit")


def test_ppo_refuses_a_quantized_base_in_one_line(tiny_model_dir, tmp_path):
    pytest.importorskip("flux_ppo")
    import torch
    from flux_ppo.models import load_policy

    from flux_core.config import FluxConfig
    from flux_core.errors import FluxError

    config = FluxConfig.from_dict(
        {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path),
            "lora": {"quantize": "4bit"},
            "algorithm": {"name": "ppo", "rewards": [{"name": "length_target", "kwargs": {"target": 8}}]},
        }
    )
    with pytest.raises(FluxError, match="^lora.quantize: PPO"):
        load_policy(config, "adapter", torch.device("cpu"))
