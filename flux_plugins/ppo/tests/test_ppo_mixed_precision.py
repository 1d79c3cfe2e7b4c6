"""PPO under bf16 autocast computes its logits in fp32 (algorithm.fp32_lm_head): CPU autocast runs the GPU's path."""

from __future__ import annotations

import copy

import pytest
import torch
from flux_ppo.models import compute_logits_in_fp32
from transformers import AutoModelForCausalLM

IDS = torch.tensor([[11, 12, 13, 14, 15, 31, 32, 33]])


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def head_in_fp32(model, ids: torch.Tensor) -> torch.Tensor:
    """What the logits should be: the trunk under autocast, the head's matmul in fp32."""
    with torch.no_grad(), bf16_autocast():
        hidden = model.model(input_ids=ids).last_hidden_state
    return model.get_output_embeddings()(hidden.float())  # no autocast here: fp32


def logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad(), bf16_autocast():
        return model(input_ids=ids).logits


def test_the_logits_are_the_fp32_head_of_the_autocast_trunk(model):
    plain = logits(model)
    expected = head_in_fp32(model, IDS)
    compute_logits_in_fp32(model)
    patched = logits(model)
    assert patched.dtype == torch.float32
    torch.testing.assert_close(patched, expected, rtol=0, atol=1e-6)
    assert (plain.float() - expected).abs().max() > 1e-3  # bf16 logits: ~3 significant digits


def test_fp32_runs_are_unchanged(model):
    with torch.no_grad():
        before = model(input_ids=IDS).logits
    compute_logits_in_fp32(model)
    with torch.no_grad():
        after = model(input_ids=IDS).logits
    assert torch.equal(before, after)


def test_a_lora_adapter_on_the_head_still_applies(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"], init_lora_weights=False)
    )
    with peft_model.disable_adapter():
        base = logits(peft_model)
    compute_logits_in_fp32(peft_model)
    adapted = logits(peft_model)
    assert adapted.dtype == torch.float32
    assert (adapted - base.float()).abs().max() > 1e-2  # the adapter's delta is there


def test_a_deep_copy_runs_its_own_head(model):
    compute_logits_in_fp32(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.get_output_embeddings().weight.mul_(2.0)  # the copy's head only
    assert not torch.allclose(logits(twin), logits(model))
    torch.testing.assert_close(logits(twin), head_in_fp32(twin, IDS), rtol=0, atol=1e-6)
