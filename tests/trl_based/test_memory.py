"""gradient_checkpointing: auto: the memory estimate counts what training really holds, and an
out-of-memory step falls back to checkpointing instead of killing the run (issue #16)."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from paths import REPO
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from flux_core.errors import FluxError
from flux_core.trainer import FluxTrainer
from flux_core.trl_based import memory

# Qwen3-0.6B's shape (tied embeddings) and Llama-2-7B's, built from configs alone.
QWEN3_06B = {
    "vocab_size": 151936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": True,
}
LLAMA2_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}


# ---------------------------------------------------------------------- the count itself


def saved_bytes_per_layer_token(model_class, config_class, dtype, attention, batch=4, length=64) -> float:
    """Bytes autograd saves per token per decoder layer: a 3-layer minus a 1-layer model's
    saved tensors (each storage counted once, parameters left out), on a padded batch."""
    totals = []
    for layers in (1, 3):
        config = config_class(
            vocab_size=512,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
        )
        config._attn_implementation = attention
        model = model_class(config).to(dtype).train()
        parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor, parameters=parameters, saved=saved):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
            return tensor

        ids = torch.randint(0, 512, (batch, length))
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, -16:] = 0  # padding: transformers then passes SDPA a mask and repeats the kv heads
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.model(input_ids=ids, attention_mask=mask)
        totals.append(sum(saved.values()))
    return (totals[1] - totals[0]) / 2 / (batch * length)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "model_class, config_class",
    [(Qwen3ForCausalLM, Qwen3Config), (LlamaForCausalLM, LlamaConfig)],
    ids=["qwen3", "llama"],
)
def test_the_per_layer_count_is_exactly_what_autograd_saves(model_class, config_class, dtype, attention):
    config = config_class(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    )
    config._attn_implementation = attention
    shape = memory.ModelShape.from_config(config)
    element = torch.empty(0, dtype=dtype).element_size()
    counted = sum(memory.layer_activation_bytes(shape, element, tokens_per_sequence=64).values())
    assert counted == saved_bytes_per_layer_token(model_class, config_class, dtype, attention)


def test_qwen3_estimate_by_hand():
    """Qwen3-0.6B, bf16, full fine-tuning, DPO batch 8 (16 sequences) at max_length 1024, on a GPU."""
    config = Qwen3Config(**QWEN3_06B)
    # embeddings 151936*1024 (tied head) + 28 layers of q 1024*2048, k and v 1024*1024, o 2048*1024,
    # q/k norms 128 each, MLP 3*1024*3072, two norms 1024 + the final norm 1024
    layer = 1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024 + 2 * 128 + 3 * 1024 * 3072 + 2 * 1024
    parameters = 151936 * 1024 + 28 * layer + 1024
    assert parameters == 596_049_920 == memory.count_parameters(config)

    estimate = memory.estimate_training_memory(
        config, parameters=parameters, dtype_bytes=2, sequences=16, tokens_per_sequence=1024
    )
    # Per token per layer, e = 2 bytes:
    norms = 2 * ((4 + 2) * 1024 + 4 + 2 * 1024)  # fp32 input, bf16 normalised, 1/rms; output kept by q/k/v, gate/up
    qk_norm = ((4 + 2) * 2048 + 4 * 16) + ((4 + 2) * 1024 + 4 * 8)  # per-head RMSNorm on 16 query, 8 key heads
    attention = 4 * 2 * 2048 + 4 * 16 + 2 * 1024  # q, repeated k and v, output; fp32 lse per head; bf16 mask row
    mlp = 4 * 2 * 3072  # gate, up, SiLU(gate), product
    assert estimate.per_layer_token == {"norms": norms, "qk_norm": qk_norm, "attention": attention, "mlp": mlp}
    assert norms + qk_norm + attention + mlp == 77_992  # vs the old 17 elements x 2 bytes x 1024 = 34_816
    assert estimate.activations == 16 * 1024 * 28 * 77_992

    tokens = 16 * 1024
    saved = tokens * ((4 + 2) * 1024 + 4 + 2 * 1024 + 4 * 4)  # final norm, the head's copy of the hidden states
    workspace = tokens * 1024 * (4 + 2) + 4096 * 32768 * 2 + 151936 * 1024 * 4  # fp32 grads, one bf16 tile
    assert estimate.lm_head == saved + workspace
    assert estimate.weights == estimate.gradients == parameters * 2
    assert estimate.optimizer == parameters * 2 * 2  # two bf16 Adam moments
    assert estimate.frozen_copies == 0
    assert estimate.total == sum(
        (estimate.weights, estimate.gradients, estimate.optimizer, estimate.activations, estimate.lm_head)
    )
    assert 38 < estimate.total / 2**30 < 39  # GiB
    assert "activations 33.32" in estimate.summary()


def test_llama_lora_estimate_by_hand():
    """Llama-2-7B, bf16, LoRA r=16 on q/k/v/o, 8 sequences of 512 tokens, on a GPU; then eager attention."""
    config = LlamaConfig(**LLAMA2_7B)
    # embeddings and an untied head 32000*4096 each + 32 layers of 4*4096^2, 3*4096*11008, two norms + final norm
    parameters = 2 * 32000 * 4096 + 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096) + 4096
    assert parameters == 6_738_415_616 == memory.count_parameters(config)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    lora = memory.lora_parameter_count(model, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert lora == 32 * 4 * 16 * (4096 + 4096) == 16_777_216
    assert memory.lora_parameter_count(model, 16, r".*\.(q|k|v|o)_proj") == lora  # peft's regex form

    estimate = memory.estimate_training_memory(
        config, parameters=parameters, dtype_bytes=2, sequences=8, tokens_per_sequence=512, lora_parameters=lora
    )
    norms = 2 * ((4 + 2) * 4096 + 4 + 2 * 4096)
    attention = 4 * 2 * 4096 + 4 * 32 + 2 * 512
    mlp = 4 * 2 * 11008
    assert estimate.per_layer_token == {"norms": norms, "qk_norm": 0, "attention": attention, "mlp": mlp}
    assert estimate.activations == 8 * 512 * 32 * (65_544 + 33_920 + 88_064)
    assert estimate.weights == parameters * 2 + lora * 4  # frozen bf16 base, fp32 adapters
    assert estimate.gradients == lora * 4 and estimate.optimizer == lora * 8
    tokens = 8 * 512
    # the head is frozen: no fp32 gradient of its 32000 x 4096 weight
    assert estimate.lm_head == tokens * ((4 + 2) * 4096 + 4 + 2 * 4096 + 16) + tokens * 4096 * 6 + 4096 * 32000 * 2

    config._attn_implementation = "eager"  # the attention matrix: fp32 softmax + its bf16 copy, per head
    eager = memory.estimate_training_memory(
        config, parameters=parameters, dtype_bytes=2, sequences=8, tokens_per_sequence=512, lora_parameters=lora
    )
    assert eager.per_layer_token["attention"] == 4 * 2 * 4096 + 32 * 512 * (4 + 2)


def test_the_h100_measurements_of_issue_16_are_reproduced():
    """One H100, a 0.44B Qwen3 (tiny vocabulary), DPO, bf16, max_length 512: peak
    max_memory_allocated 70.7 GiB at batch 32 and 77.4 GiB at 36 (the old estimate: 34.7, 38.4)."""
    config = Qwen3Config(**{**QWEN3_06B, "vocab_size": 512, "tie_word_embeddings": False})
    parameters = memory.count_parameters(config)
    for batch, measured in ((32, 70.7), (36, 77.4)):
        estimate = memory.estimate_training_memory(
            config, parameters=parameters, dtype_bytes=2, sequences=2 * batch, tokens_per_sequence=512
        )
        assert estimate.total / 2**30 == pytest.approx(measured, rel=0.03)
    # and checkpointing's own peak: 9.6 GiB measured at batch 48
    estimate = memory.estimate_training_memory(
        config, parameters=parameters, dtype_bytes=2, sequences=96, tokens_per_sequence=512
    )
    assert estimate.checkpointed_total / 2**30 == pytest.approx(9.6, rel=0.1)


def test_auto_needs_the_estimate_with_a_quarter_to_spare_in_free_memory(tiny_model_dir, monkeypatch, caplog):
    from flux_core.modeling import load_model

    model = load_model(str(tiny_model_dir))
    needed = memory.estimate_for_model(model, 16, 128).total
    assert memory.use_gradient_checkpointing(True, model, 16, 128) is True  # explicit settings win
    assert memory.use_gradient_checkpointing(False, model, 16, 128) is False
    monkeypatch.setattr(memory, "free_memory_bytes", lambda model=None: (int(needed * 1.25), "RAM available"))
    with caplog.at_level("INFO", logger="flux"):
        assert memory.use_gradient_checkpointing("auto", model, 16, 128) is False
    assert "gradient checkpointing: off" in caplog.text and "activations" in caplog.text
    monkeypatch.setattr(memory, "free_memory_bytes", lambda model=None: (int(needed * 1.2), "RAM available"))
    assert memory.use_gradient_checkpointing("auto", model, 16, 128) is True  # fits, but not with the margin
    assert memory.estimate_for_model(model, 16, 128, lora=True).total < needed


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
@pytest.mark.slow
def test_the_estimate_matches_cpu_training_memory_at_two_batch_sizes(tmp_path):
    """Peak RSS growth once train() starts (DPO, no checkpointing, fp32, every sequence
    max_length long, 2 steps), measured by benchmarks/bench_memory.py in a fresh process.

    Tolerance: the estimate must lie within [0.95, 1.2] x the measured growth. Measured on
    this 2-core machine under load: 1.11 at batch 2 and 1.08 at batch 8 (it adds all
    gradients to all activations and counts seven fp32 LM-head temporaries; the true peak
    frees some activations before the last gradients appear, and a fixed few MiB weigh
    more in the small batch's 76 MiB). RSS itself is exact here (the kernel's high-water
    mark, glibc returning freed memory at once), so what moves between runs is a few MiB
    of Python and allocator bookkeeping. An estimate more than 5% below the measurement is
    the failure issue #16 is about, so the low side is strict."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_memory

    model = bench_memory.model_dir(256, 4, root=tmp_path)
    results = bench_memory.run_worker({"model": str(model), "batch_sizes": [2, 8], "max_length": 128, "steps": 2})
    growth = [result["growth"] for result in results]
    assert growth[1] > 2.5 * growth[0]  # activations dominate: the measurement sees the batch
    for result in results:
        ratio = result["estimate"]["beyond_weights"] / result["growth"]
        assert 0.95 <= ratio <= 1.2, (result["batch_size"], result["growth"] / 2**20, ratio)


# ---------------------------------------------------------------------- the fallback


@pytest.fixture
def out_of_memory_in_backward(monkeypatch):
    """Make the first ``times`` backward passes raise torch.OutOfMemoryError (as a GPU would)."""
    from accelerate import Accelerator

    original = Accelerator.backward
    calls = {"failed": 0, "times": 1}

    def backward(self, loss, **kwargs):
        if calls["failed"] < calls["times"]:
            calls["failed"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return original(self, loss, **kwargs)

    monkeypatch.setattr(Accelerator, "backward", backward)
    return calls


TIMING = ("tokens_per_second", "peak_memory_mb", "step_time")


def comparable(result) -> list[dict[str, float]]:
    return [
        {name: value for name, value in step.metrics.items() if not any(t in name for t in TIMING)}
        for step in result.history
    ]


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_auto_turns_checkpointing_on_when_a_step_runs_out_of_memory(
    dpo_config, preference_records, out_of_memory_in_backward, tmp_path, lora
):
    settings = {"num_steps": 3, "lora": lora, "precision": "fp32"}  # two runs compared: the same precision
    reference = FluxTrainer(
        dpo_config(gradient_checkpointing=True, output_dir=str(tmp_path / "on"), **settings), show_progress=False
    )
    out_of_memory_in_backward["times"] = 0
    expected = reference.fit(prompts=preference_records)

    out_of_memory_in_backward["times"] = 1
    trainer = FluxTrainer(dpo_config(output_dir=str(tmp_path / "auto"), **settings), show_progress=False)
    with pytest.warns(UserWarning, match=r"^step 1 ran out of memory without gradient checkpointing") as caught:
        result = trainer.fit(prompts=preference_records)
    assert out_of_memory_in_backward["failed"] == 1
    assert sum("ran out of memory" in str(w.message) for w in caught) == 1
    assert trainer.model.is_gradient_checkpointing  # on from step 1 on
    assert [step.step for step in result.history] == [1, 2, 3]  # step 1 reported once, nothing skipped
    # rewards, token counts: nothing counted twice (approx: CUDA's kernels are not bitwise repeatable)
    assert len(result.history) == len(expected.history)
    for got, want in zip(comparable(result), comparable(expected)):
        if abs(want["reward_margin"]) < 1e-4:  # step 1: rewards are 0 up to rounding, accuracy a coin toss on CUDA
            del got["accuracy"], want["accuracy"]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    rows = (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


def test_explicit_false_makes_out_of_memory_a_one_line_error(dpo_config, preference_records, out_of_memory_in_backward):
    config = dpo_config(num_steps=3, gradient_checkpointing=False)
    with pytest.raises(FluxError) as info:
        FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    assert str(info.value) == (
        "out of memory at step 1 with gradient_checkpointing: false; set it to true or auto, "
        "or lower batch_size/max_length"
    )


def test_out_of_memory_again_with_checkpointing_on_is_a_one_line_error(
    dpo_config, preference_records, out_of_memory_in_backward
):
    out_of_memory_in_backward["times"] = 2
    with pytest.warns(UserWarning, match="ran out of memory"), pytest.raises(FluxError) as info:
        FluxTrainer(dpo_config(num_steps=3), show_progress=False).fit(prompts=preference_records)
    assert str(info.value).startswith("out of memory at step 1 even with gradient checkpointing on")
    assert "\n" not in str(info.value)


def test_grpo_falls_back_with_the_same_completions_and_losses(tiny_model_dir, tmp_path, out_of_memory_in_backward):
    from flux_core.config import FluxConfig

    sys.path.insert(0, str(REPO / "examples"))
    from make_prompts import make_prompts

    def config(name, **overrides):
        return FluxConfig.from_dict(
            {
                "model_path": str(tiny_model_dir),
                "output_dir": str(tmp_path / name),
                "num_steps": 2,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "seed": 0,
                "algorithm": {
                    "name": "grpo",
                    "num_generations": 4,
                    "max_completion_length": 8,
                    "rewards": [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}],
                },
                **overrides,
            }
        )

    prompts = make_prompts(16, seed=0)
    out_of_memory_in_backward["times"] = 0
    expected = FluxTrainer(config("on", gradient_checkpointing=True), show_progress=False).fit(prompts=prompts)
    out_of_memory_in_backward["times"] = 1
    with pytest.warns(UserWarning, match="^step 1 ran out of memory"):
        result = FluxTrainer(config("auto"), show_progress=False).fit(prompts=prompts)
    assert [step.step for step in result.history] == [1, 2]
    assert comparable(result) == comparable(expected)  # same sampled completions, rewards and losses
    assert all(math.isfinite(loss) for loss in result.metric("loss"))
