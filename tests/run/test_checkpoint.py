"""Checkpoints are written atomically and best/ follows the documented rule."""

import json
from pathlib import Path

import pytest
from fakes import FakeConfig

from flux_core.run import checkpoint
from flux_core.run.checkpoint import CheckpointManager, resolve_checkpoint, write_checkpoint


class FakeModel:
    """Saves like a transformers model; optionally dies half-way through."""

    def __init__(self, tag: str, crash: bool = False):
        self.tag, self.crash = tag, crash

    def save_pretrained(self, directory):
        (Path(directory) / "config.json").write_text(json.dumps({"tag": self.tag}))
        if self.crash:
            raise RuntimeError("disk full")
        (Path(directory) / "model.safetensors").write_text(self.tag)


class FakeTokenizer:
    def save_pretrained(self, directory):
        (Path(directory) / "tokenizer.json").write_text("{}")


def write(path, tag, crash=False):
    return write_checkpoint(path, FakeModel(tag, crash), FakeTokenizer(), FakeConfig(), {"step": 1})


def test_a_crash_while_writing_leaves_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    monkeypatch.setattr(
        checkpoint, "save_model", lambda model, tok, d, **_: (model.save_pretrained(d), tok.save_pretrained(d))
    )
    target = tmp_path / "best"
    write(target, "good")
    with pytest.raises(RuntimeError, match="disk full"):
        write(target, "new", crash=True)
    assert (target / "model.safetensors").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no half-written directory left anywhere


def test_a_crash_between_the_renames_is_recovered_on_load(tmp_path, monkeypatch):
    monkeypatch.setattr(
        checkpoint, "save_model", lambda model, tok, d, **_: (model.save_pretrained(d), tok.save_pretrained(d))
    )
    monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)  # where no atomic exchange exists
    target = tmp_path / "final"
    write(target, "good")
    real_replace = checkpoint.os.replace
    calls = []

    def crash_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_second_rename)
    with pytest.raises(OSError):
        write(target, "new")
    assert not target.exists()
    recovered = resolve_checkpoint(target)
    assert json.loads((recovered / "config.json").read_text())["tag"] == "good"


def test_best_is_the_lowest_eval_loss_among_save_points(tmp_path, monkeypatch):
    monkeypatch.setattr(
        checkpoint, "save_model", lambda model, tok, d, **_: (model.save_pretrained(d), tok.save_pretrained(d))
    )
    scores = iter([3.0, 1.0, 2.0, 2.5])
    manager = CheckpointManager(tmp_path, FakeConfig(), FakeTokenizer(), save_steps=2, evaluate=lambda: next(scores))
    for step in range(1, 7):
        manager.on_step(step, 1.0, FakeModel(f"step{step}"))
    manager.finalize(6, FakeModel("final"))
    best = json.loads((tmp_path / "best" / "flux_checkpoint.json").read_text())
    assert (best["step"], best["score"], best["score_name"]) == (4, 1.0, "eval_loss")
    assert (tmp_path / "best" / "model.safetensors").read_text() == "step4"
    assert [Path(p).name for p in manager.checkpoint_paths] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_without_eval_data_best_follows_the_smoothed_training_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(
        checkpoint, "save_model", lambda model, tok, d, **_: (model.save_pretrained(d), tok.save_pretrained(d))
    )
    manager = CheckpointManager(tmp_path, FakeConfig(), FakeTokenizer(), save_steps=3)
    losses = [1.0, 0.9, 0.8, 0.2, 0.2, 0.2, 2.0, 2.0, 2.0]  # improves, then diverges
    for step, loss in enumerate(losses, start=1):
        manager.on_step(step, loss, FakeModel(f"step{step}"))
    manager.finalize(9, FakeModel("final"))
    best = json.loads((tmp_path / "best" / "flux_checkpoint.json").read_text())
    assert best["step"] == 6 and best["score_name"] == "smoothed_train_loss"
    ema = 0.0
    for t, loss in enumerate(losses[:6], start=1):
        ema = 0.9 * ema + 0.1 * loss
    assert best["score"] == pytest.approx(ema / (1 - 0.9**6))


def test_missing_and_non_checkpoint_directories_are_clear_errors(tmp_path):
    from flux import FluxError

    with pytest.raises(FluxError, match="checkpoint directory not found"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FluxError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path)


def test_lora_merged_from_gathered_weights_equals_peft_s_own_merge(tiny_model_dir):
    # Under FSDP the live LoRA weights are shards: the merge is folded from the gathered full state dict instead.
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    initial = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        live = checkpoint.merged_state_dict(model)
        gathered = checkpoint.merged_state_dict(model, {k: v.clone() for k, v in model.state_dict().items()})
        expected = model.merge_and_unload().state_dict()  # peft's own merge (changes the model: last)
    assert gathered.keys() == live.keys() and set(gathered) <= set(expected)
    assert all(torch.allclose(gathered[k], expected[k], atol=1e-6) for k in gathered)
    assert any(not torch.equal(gathered[k], initial[k]) for k in gathered)  # the adapters were folded in
