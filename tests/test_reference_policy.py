"""Reference policies: auto picks the cheapest correct one; precompute is cached across runs."""

import functools
from pathlib import Path

import pytest

from flux_core.reference import auto_policy
from flux_core.trainer import FluxTrainer


@pytest.mark.parametrize(
    "use_lora,steps,batch,examples,expected",
    [
        (False, 96, 8, 256, "precompute"),  # 3 epochs: pay the reference forward once, not three times
        (True, 96, 8, 256, "precompute"),
        (True, 10, 8, 256, "adapter"),
        (False, 10, 8, 256, "copy"),
        (False, 32, 8, 256, "copy"),  # exactly one epoch
        (False, 1000, 8, None, "copy"),  # online algorithms never precompute
        (True, 1000, 8, None, "adapter"),
    ],
)
def test_auto_picks_the_cheapest_correct_policy(use_lora, steps, batch, examples, expected):
    assert auto_policy(use_lora, steps, batch, examples)[0] == expected


def test_precomputed_reference_is_cached_on_disk_and_reused(dpo_config, preference_records, monkeypatch):
    from trl import DPOTrainer

    config = dpo_config({"reference_policy": "precompute"}, num_steps=3, precision="fp32")  # compared to 1e-6
    first = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    cache = list((Path(config.output_dir) / ".flux-cache").glob("ref-logps-*.pt"))
    assert len(cache) == 1

    # wraps: the TRL canary reads the signature it patches over (it follows __wrapped__).
    @functools.wraps(DPOTrainer._precompute_ref_logps)
    def no_second_pass(*args, **kwargs):
        raise AssertionError("reference log-probs were recomputed despite the cache")

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", no_second_pass)
    # A rerun replacing the first run's checkpoints keeps the cache (it is not a checkpoint).
    second = FluxTrainer(config, show_progress=False).fit(prompts=preference_records, overwrite=True)
    assert second.metric("loss") == pytest.approx(first.metric("loss"), abs=1e-5)  # CUDA fp32: 1.1e-6 apart

    # Different data (or model, or max_length) must not hit that cache.
    monkeypatch.undo()
    changed = dpo_config({"reference_policy": "precompute"}, num_steps=3, max_length=64)
    assert changed.output_dir == config.output_dir
    FluxTrainer(changed, show_progress=False).fit(prompts=preference_records, overwrite=True)
    assert len(list((Path(config.output_dir) / ".flux-cache").glob("ref-logps-*.pt"))) == 2
