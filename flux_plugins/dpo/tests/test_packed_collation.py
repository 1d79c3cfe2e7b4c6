"""Packed (padding-free) DPO batches give the padded batches' losses.

Exact in fp32 (pinned, so a GPU runs the same check); bf16 gets its own tolerance (GPU only).
"""

import math

import pytest

from flux_core.trainer import FluxTrainer


def variable_length_pairs(records):
    # stretch some completions so the padded batch carries real padding
    return [
        {**r, "chosen": r["chosen"] + " More detail." * (i % 4), "rejected": r["rejected"] + " lol" * (i % 3)}
        for i, r in enumerate(records)
    ]


@pytest.mark.parametrize("algorithm", [{}, {"reference_free": True}, {"reference_policy": "precompute"}])
def test_packed_losses_equal_padded_losses(dpo_config, preference_records, algorithm, tmp_path):
    records = variable_length_pairs(preference_records)
    padded = FluxTrainer(dpo_config(algorithm, num_steps=4, precision="fp32"), show_progress=False).fit(prompts=records)
    packed_config = dpo_config(
        {**algorithm, "collation": "packed"}, num_steps=4, precision="fp32", output_dir=str(tmp_path / "packed")
    )
    packed = FluxTrainer(packed_config, show_progress=False).fit(prompts=records)
    assert packed.metric("loss") == pytest.approx(padded.metric("loss"), abs=1e-4)
    assert packed.metric("reward_margin") == pytest.approx(padded.metric("reward_margin"), abs=1e-3)
    # both count real tokens only: the packed row holds exactly the padded batch's non-pad tokens
    assert packed.metric("num_tokens")[-1] == padded.metric("num_tokens")[-1]
    if not algorithm.get("reference_free"):  # policy == reference at step 1, packed or not
        assert packed.metric("loss")[0] == pytest.approx(math.log(2), abs=1e-5)


def test_packed_with_lora_matches_padded(dpo_config, preference_records, tmp_path):
    records = variable_length_pairs(preference_records)
    lora = {"r": 4, "alpha": 8}
    padded = FluxTrainer(dpo_config({}, num_steps=3, lora=lora, precision="fp32"), show_progress=False).fit(
        prompts=records
    )
    packed_config = dpo_config(
        {"collation": "packed"}, num_steps=3, lora=lora, precision="fp32", output_dir=str(tmp_path / "packed")
    )
    packed = FluxTrainer(packed_config, show_progress=False).fit(prompts=records)
    assert packed.metric("loss") == pytest.approx(padded.metric("loss"), abs=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", [{}, {"reference_policy": "precompute"}])
def test_bf16_packed_losses_stay_close_to_padded_losses(dpo_config, preference_records, algorithm, tmp_path):
    """In bf16 the two layouts sum in different orders (one long row vs padded rows), so they
    differ in the last bits: one H100 measured 1.6e-4..7.2e-4 on the loss. 2e-3 is about a
    quarter of bf16's relative step (2**-7) at ln 2, and far below what a wrong mask costs."""
    records = variable_length_pairs(preference_records)
    padded = FluxTrainer(dpo_config(algorithm, num_steps=4, precision="bf16"), show_progress=False).fit(prompts=records)
    packed_config = dpo_config(
        {**algorithm, "collation": "packed"}, num_steps=4, precision="bf16", output_dir=str(tmp_path / "packed")
    )
    packed = FluxTrainer(packed_config, show_progress=False).fit(prompts=records)
    assert packed.metric("loss") == pytest.approx(padded.metric("loss"), abs=2e-3)
    assert packed.metric("reward_margin") == pytest.approx(padded.metric("reward_margin"), abs=2e-2)
    assert packed.metric("num_tokens")[-1] == padded.metric("num_tokens")[-1]
    assert padded.metric("loss")[-1] < padded.metric("loss")[0] - 1e-2  # it trained: the match is not ln 2 == ln 2


def test_collator_layout():
    from flux_dpo.collators import PackedPreferenceCollator

    examples = [
        {"prompt_ids": [1, 2], "chosen_ids": [3, 4, 5], "rejected_ids": [6]},
        {"prompt_ids": [7], "chosen_ids": [8], "rejected_ids": [9, 10]},
    ]
    batch = PackedPreferenceCollator(pad_token_id=0)(examples)
    # order: chosen 0, chosen 1, rejected 0, rejected 1 (as TRL's padded batch)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 7, 8, 1, 2, 6, 7, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 0, 1, 2]]
    assert batch["sequence_ids"].tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1]]
    assert batch["completion_lengths"].tolist() == [3, 1, 1, 2]
    assert "attention_mask" not in batch  # transformers reads the boundaries from position_ids


@pytest.mark.parametrize(
    "attention",
    ["sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.gpu)],  # flex compiles ~1 min on CPU
)
def test_a_packed_row_scores_each_sequence_as_if_it_were_alone(tiny_model_dir, attention):
    # What packing relies on: with restarting position_ids and no mask, no token attends across sequences.
    import torch
    from flux_dpo.collators import PackedPreferenceCollator
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention, dtype=torch.float32)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    examples = [
        {"prompt_ids": [11, 12, 13], "chosen_ids": [14, 15, 16, 17, 18], "rejected_ids": [19]},
        {"prompt_ids": [21], "chosen_ids": [22, 23], "rejected_ids": [24, 25, 26, 27, 28, 29, 30]},
    ]
    batch = PackedPreferenceCollator(pad_token_id=0)(examples)
    sequences = [[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23], [11, 12, 13, 19], [21, 24, 25, 26, 27, 28, 29, 30]]
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"].to(model.device),
            position_ids=batch["position_ids"].to(model.device),
            use_cache=False,
        ).logits[0]
        alone = [model(input_ids=torch.tensor([s], device=model.device), use_cache=False).logits[0] for s in sequences]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_auto_packs_only_where_flash_attention_runs(monkeypatch):
    import torch
    from flux_dpo import collators

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collators.resolve_collation("auto") == (False, None)  # CPU: a dense mask spends what packing saves
    assert collators.resolve_collation("packed") == (True, None)  # asked for: packed, default attention
    assert collators.resolve_collation("padded") == (False, None)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "flash_attn" else object())
    assert collators.resolve_collation("auto") == (False, None)  # FlexAttention: only when asked for (compiles)
    assert collators.resolve_collation("packed") == (True, "flex_attention")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert collators.resolve_collation("auto") == (True, "flash_attention_2")
    assert collators.resolve_collation("padded") == (False, None)
