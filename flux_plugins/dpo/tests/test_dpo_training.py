"""End-to-end DPO runs on the tiny model: what a user sees after fit()."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from flux_core.trainer import FluxTrainer

REQUIRED_METRICS = {
    "loss",
    "chosen_reward",
    "rejected_reward",
    "reward_margin",
    "accuracy",
    "learning_rate",
    "grad_norm",
}


def test_loss_falls_and_margin_grows_with_every_metric_every_step(dpo_config, preferences_file):
    config = dpo_config(num_steps=20, checkpoint={"save_steps": 10})
    trainer = FluxTrainer(config, show_progress=False)
    seen = []

    @trainer.add_step_callback
    def record(result):
        seen.append(result)

    assert record is not None and callable(record)  # the decorator returns the function
    result = trainer.fit(prompts=str(preferences_file), data_format="preferences")

    assert [r.step for r in seen] == list(range(1, 21))
    for step in seen:
        assert REQUIRED_METRICS <= set(step.metrics), step.metrics.keys()
    losses = result.metric("loss")
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    assert result.metric("reward_margin")[-1] > 0.5
    assert result.final_loss == losses[-1] and result.steps == 20
    output = Path(config.output_dir)
    assert result.checkpoint_paths == [str(output / "checkpoint-10"), str(output / "checkpoint-20")]
    assert result.best_path == str(output / "best") and result.final_path == str(output / "final")
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, 21))
    assert [row["loss"] for row in logged] == losses


def test_reference_free_loads_no_reference_and_uses_a_zero_reference(dpo_config, preference_records, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module

    def no_reference_allowed(*args, **kwargs):
        raise AssertionError("a reference model was loaded")

    monkeypatch.setattr(dpo_module, "create_model_from_path", no_reference_allowed)
    config = dpo_config({"reference_free": True}, num_steps=3)
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)

    step = result.history[0].metrics
    # With a zero reference, the implicit reward is beta * policy log-prob itself.
    assert step["chosen_reward"] == pytest.approx(0.1 * step["chosen_logp"], rel=1e-4)
    assert step["rejected_reward"] == pytest.approx(0.1 * step["rejected_logp"], rel=1e-4)


def test_with_a_reference_the_first_step_rewards_are_zero(dpo_config, preference_records):
    result = FluxTrainer(dpo_config(num_steps=1), show_progress=False).fit(prompts=preference_records)
    step = result.history[0].metrics
    assert step["chosen_reward"] == pytest.approx(0.0, abs=1e-6)
    assert step["chosen_logp"] < -1.0  # so the zero above is policy - reference, not a zero policy


def test_lora_uses_the_disabled_adapter_as_reference_and_saves_merged_models(dpo_config, preference_records):
    from peft import PeftModel

    # fp32: the merged-vs-live comparison below is to 1e-4, which bf16 (on a GPU under auto) cannot hold
    config = dpo_config({}, num_steps=6, learning_rate=5e-3, lora={"r": 4, "alpha": 8}, precision="fp32")
    trainer = FluxTrainer(config, show_progress=False)
    result = trainer.fit(prompts=preference_records)

    assert isinstance(trainer.model, PeftModel)
    assert result.history[0].metrics["chosen_reward"] == pytest.approx(0.0, abs=1e-6)
    assert result.metric("reward_margin")[-1] > 0
    device = next(trainer.model.parameters()).device  # the GPU when training ran on one
    for name in ("best", "final"):
        directory = Path(config.output_dir) / name
        assert (directory / "adapter" / "adapter_config.json").exists()
        merged = AutoModelForCausalLM.from_pretrained(directory).to(device)
        input_ids = torch.tensor([[5, 17, 42, 99, 7]], device=device)
        with torch.no_grad():
            expected = trainer.model.eval()(input_ids).logits if name == "final" else None
            got = merged.eval()(input_ids).logits
        if expected is not None:
            assert torch.allclose(got, expected, atol=1e-4)
        assert not any("lora" in key for key in merged.state_dict())


def test_reloaded_checkpoint_generates_the_same_greedy_text(dpo_config, preference_records):
    config = dpo_config(num_steps=6, checkpoint={"save_steps": 3})
    trainer = FluxTrainer(config, show_progress=False)
    trainer.fit(prompts=preference_records)
    prompt = "Explain machine learning."
    expected = trainer.generate(prompt, max_new_tokens=20)

    fresh = FluxTrainer(config, show_progress=False)
    fresh.load_checkpoint(Path(config.output_dir) / "final")
    assert fresh.generate(prompt, max_new_tokens=20) == expected
    untrained = FluxTrainer(config, show_progress=False).generate(prompt, max_new_tokens=20)
    assert untrained != expected  # training changed the model, so the match above means something

    for name in ("checkpoint-3", "checkpoint-6", "best", "final"):
        directory = Path(config.output_dir) / name
        assert {"model.safetensors", "tokenizer.json", "flux_config.yaml", "flux_checkpoint.json"} <= {
            p.name for p in directory.iterdir()
        }
        assert AutoModelForCausalLM.from_pretrained(directory) is not None
    assert json.loads((Path(config.output_dir) / "checkpoint-3" / "flux_checkpoint.json").read_text())["step"] == 3


def test_eval_data_is_scored_and_picks_best(dpo_config, preference_records):
    config = dpo_config(num_steps=4, checkpoint={"save_steps": 2})
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records, eval_data=preference_records[:16])
    # evaluating at save points must not swallow those steps' training metrics
    assert [step.step for step in result.history] == [1, 2, 3, 4]
    assert all(REQUIRED_METRICS <= set(step.metrics) for step in result.history)
    meta = json.loads((Path(result.best_path) / "flux_checkpoint.json").read_text())
    assert meta["score_name"] == "eval_loss"
    scores = [json.loads((Path(p) / "flux_checkpoint.json").read_text())["score"] for p in result.checkpoint_paths]
    assert meta["score"] == min(scores)
    # the evaluations are in the history and metrics.jsonl (flux plot's eval points), named as the training metrics
    rows = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    evaluated = {row["step"]: row["eval_loss"] for row in rows if "eval_loss" in row}
    assert sorted(evaluated) == [2, 4] and sorted(evaluated.values()) == sorted(scores)
    assert {"eval_chosen_reward", "eval_accuracy"} <= set(rows[1]) and "eval_runtime" not in rows[1]
    assert [step.metrics.get("eval_loss") for step in result.history] == [None, evaluated[2], None, evaluated[4]]


def test_a_plugin_loss_is_the_one_used(dpo_config, preference_records, register_plugin):
    from flux_core import hookimpl

    calls = []

    def doubled_sigmoid(inputs, *, beta, label_smoothing, scale):
        import torch.nn.functional as F

        calls.append(scale)
        return -scale * F.logsigmoid(beta * (inputs.chosen_logratios - inputs.rejected_logratios))

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("scaled_sigmoid", doubled_sigmoid, algorithm="dpo")

    register_plugin(Plugin(), name="test-loss")
    config = dpo_config({"loss": "scaled_sigmoid", "loss_kwargs": {"scale": 3.0}}, num_steps=2)
    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    assert calls and set(calls) == {3.0}
    assert result.metric("loss")[0] == pytest.approx(3 * 0.693147, abs=1e-4)  # 3 x log 2 at step 1


def test_pairs_whose_prompt_fills_max_length_are_reported(dpo_config, preference_records):
    import warnings

    from flux_core.errors import FluxError

    records = [dict(record) for record in preference_records[:16]]
    records[0]["prompt"] = "a long prompt " * 40
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        FluxTrainer(dpo_config(num_steps=1, max_length=48), show_progress=False).fit(prompts=records)
    assert "data: 1 of 16 pairs dropped: their prompt alone fills max_length 48" in [str(w.message) for w in seen]
    with pytest.raises(FluxError, match="max_length 1 is too small: the prompt alone fills it in every pair of data"):
        FluxTrainer(dpo_config(num_steps=1, max_length=1, output_dir=str(dpo_config().output_dir) + "-1")).fit(
            prompts=records
        )


def test_metrics_reach_the_host_once_per_optimizer_step(dpo_config, preferences_file, monkeypatch):
    # On a GPU every .item()/.tolist() is a host-device sync that stalls the next launch: the loss
    # step queues its metrics on the device and log() moves them in one transfer per step.
    from flux_dpo.trainer import FluxDPOTrainer

    where = {"in": None}
    transfers = {"loss": 0, "log": 0}
    for method in ("item", "tolist"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            if where["in"]:
                transfers[where["in"]] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)

    def inside(name, method):
        def wrapper(self, *args, **kwargs):
            outer, where["in"] = where["in"], where["in"] or name
            try:
                return method(self, *args, **kwargs)
            finally:
                where["in"] = outer

        return wrapper

    monkeypatch.setattr(FluxDPOTrainer, "compute_loss", inside("loss", FluxDPOTrainer.compute_loss))
    monkeypatch.setattr(FluxDPOTrainer, "log", inside("log", FluxDPOTrainer.log))
    config = dpo_config(num_steps=3, batch_size=4, trl={"gradient_accumulation_steps": 2})
    result = FluxTrainer(config, show_progress=False).fit(prompts=str(preferences_file), data_format="preferences")

    assert transfers["loss"] == 0, transfers
    assert 3 <= transfers["log"] <= 4, transfers  # one per optimizer step, plus the end-of-training summary's
    assert [s.step for s in result.history] == [1, 2, 3]
    assert all(-5 < s.metrics["reward_margin"] < 5 and 0 <= s.metrics["accuracy"] <= 1 for s in result.history)
    assert result.history[-1].metrics["num_tokens"] > result.history[0].metrics["num_tokens"] > 0
