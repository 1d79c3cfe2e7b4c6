"""Every hook: a plugin implementing it changes the outcome. Plus the datasette-style meta-test."""

import inspect
import re

import pytest
from paths import REPO

from flux_core import hookimpl, hookspecs
from flux_core.errors import FluxError
from flux_core.trainer import FluxTrainer

HOOK_NAMES = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "flux_spec"))


def test_reference_policy_hook_overrides_the_default(dpo_config, preference_records, register_plugin):
    class ReferenceFree:
        @hookimpl
        def reference_policy(self, config, use_lora):
            return "none"

    register_plugin(ReferenceFree(), name="test-reference")
    result = FluxTrainer(dpo_config(num_steps=1), show_progress=False).fit(prompts=preference_records)
    step = result.history[0].metrics
    # the default ("copy") gives a zero reward at step 1; "none" gives beta * policy log-prob
    assert step["chosen_reward"] == pytest.approx(0.1 * step["chosen_logp"], rel=1e-4)


def test_reference_policy_precompute_matches_copy(dpo_config, preference_records, tmp_path):
    # fp32: in bf16 (auto on a GPU) the reference's log-probs move ~1e-4 with the batch they are scored in
    copy = FluxTrainer(dpo_config(num_steps=3, precision="fp32"), show_progress=False).fit(prompts=preference_records)
    precompute = dpo_config(
        {"reference_policy": "precompute"}, num_steps=3, precision="fp32", output_dir=str(tmp_path / "precompute")
    )
    pre = FluxTrainer(precompute, show_progress=False).fit(prompts=preference_records)
    assert pre.metric("loss") == pytest.approx(copy.metric("loss"), abs=1e-5)


def test_collate_batch_hook_supplies_the_collator(dpo_config, preference_records, register_plugin):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batches = []

    class CountingCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            batches.append(len(examples))
            return super().torch_call(examples)

    class Plugin:
        @hookimpl
        def collate_batch(self, config, tokenizer, algorithm):
            assert algorithm == "dpo"
            return CountingCollator(pad_token_id=tokenizer.pad_token_id)

    register_plugin(Plugin(), name="test-collator")
    FluxTrainer(dpo_config(num_steps=2), show_progress=False).fit(prompts=preference_records)
    assert batches[:2] == [8, 8]


def test_step_metrics_hook_adds_metrics_and_clashes_are_errors(
    dpo_config, preference_records, register_plugin, tmp_path
):
    class Plugin:
        @hookimpl
        def step_metrics(self, step, metrics, config):
            return {"loss_x100": metrics["loss"] * 100}

    register_plugin(Plugin(), name="test-metrics")
    result = FluxTrainer(dpo_config(num_steps=2), show_progress=False).fit(prompts=preference_records)
    for step in result.history:
        assert step.metrics["loss_x100"] == pytest.approx(step.metrics["loss"] * 100)

    class Clash:
        @hookimpl
        def step_metrics(self, step, metrics, config):
            return {"loss": 0.0}

    register_plugin(Clash(), name="test-clash")
    with pytest.raises(FluxError, match="step metric 'loss' from plugin 'test-clash' clashes with built-in metrics"):
        FluxTrainer(dpo_config(num_steps=1, output_dir=str(tmp_path / "clash")), show_progress=False).fit(
            prompts=preference_records
        )


def test_register_algorithms_adds_a_selectable_algorithm(register_plugin, tiny_model_dir):
    from flux_core.config import AlgorithmConfig, FluxConfig
    from flux_core.registry import Algorithm

    class EchoConfig(AlgorithmConfig):
        pass

    class Plugin:
        @hookimpl
        def register_algorithms(self, register):
            register(Algorithm(name="echo", config_schema=EchoConfig, runner="x:y", data_format="prompts"))

    register_plugin(Plugin(), name="test-algorithm")
    config = FluxConfig(model_path=str(tiny_model_dir), algorithm={"name": "echo"})
    assert type(config.algorithm) is EchoConfig


def test_register_rewards_adds_a_named_reward(register_plugin):
    from flux_core.registry import get_registry

    def shout(prompts, completions, **kwargs):
        return [float(c.isupper()) for c in completions]

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register("test_shout", shout)

    register_plugin(Plugin(), name="test-reward")
    reward = get_registry().get_reward("test_shout")
    assert reward.fn is shout and reward.plugin == "test-reward"


def test_two_plugins_registering_one_name_is_an_error(register_plugin):
    from flux_core.registry import get_registry

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("sigmoid", lambda *a, **k: None, algorithm="dpo")

    register_plugin(Plugin(), name="test-dup")
    with pytest.raises(FluxError, match="dpo loss 'sigmoid' is registered twice: by plugin '.*' and by plugin '.*'"):
        get_registry()


# ------------------------------------------------------------------ meta-test


def test_every_hook_is_documented_and_exercised_by_a_test():
    readme = (REPO / "README.md").read_text()
    tests = "\n".join(p.read_text() for folder in ("tests", "flux_plugins") for p in (REPO / folder).rglob("test_*.py"))
    assert HOOK_NAMES, "no hook specs found"
    for name in HOOK_NAMES:
        spec = getattr(hookspecs, name)
        doc = inspect.getdoc(spec) or ""
        assert len(doc) > 60, f"hook {name} needs a docstring"
        assert f"`{name}" in readme, f"hook {name} is not documented in README.md"
        assert re.search(rf"def {name}\(self", tests), f"no test implements hook {name} in a plugin"


def test_a_plugin_can_supply_reference_logps_from_elsewhere(
    dpo_config, preference_records, register_plugin, monkeypatch
):
    import trl.trainer.dpo_trainer as dpo_module

    monkeypatch.setattr(dpo_module, "create_model_from_path", lambda *a, **k: pytest.fail("reference model loaded"))

    class FileReference:
        """Stands in for log-probs produced by another system and read from a file."""

        name = "from-file"

        def reference_logps(self, examples):
            assert {"prompt", "chosen", "rejected"} <= set(examples[0])
            return [(-50.0, -60.0)] * len(examples)

    class Plugin:
        @hookimpl
        def reference_policy(self, config, use_lora, num_examples):
            assert num_examples == len(preference_records)
            return FileReference()

    register_plugin(Plugin(), name="test-file-reference")
    result = FluxTrainer(dpo_config(num_steps=1), show_progress=False).fit(prompts=preference_records)
    step = result.history[0].metrics
    assert step["chosen_reward"] == pytest.approx(0.1 * (step["chosen_logp"] + 50.0), rel=1e-4)
    assert step["rejected_reward"] == pytest.approx(0.1 * (step["rejected_logp"] + 60.0), rel=1e-4)


def test_built_in_step_metrics_report_throughput_and_memory(dpo_config, preference_records):
    result = FluxTrainer(dpo_config(num_steps=3), show_progress=False).fit(prompts=preference_records)
    assert all(step.metrics["peak_memory_mb"] > 50 for step in result.history)  # torch alone needs more
    rates = [step.metrics.get("tokens_per_second") for step in result.history[1:]]
    assert all(rate is not None and rate > 0 for rate in rates)


def test_a_loss_for_an_unknown_algorithm_is_an_error_naming_the_plugin(register_plugin):
    from flux_core.errors import FluxError
    from flux_core.registry import get_registry

    class Misspelled:
        @hookimpl
        def register_losses(self, register):
            register("my_loss", lambda inputs, **kwargs: inputs, algorithm="dop")

    register_plugin(Misspelled(), name="misspelled-losses")
    with pytest.raises(
        FluxError,
        match=r"plugin 'misspelled-losses' registers loss 'my_loss' for unknown algorithm 'dop' \(did you mean 'dpo'\?\)",
    ):
        get_registry()


def test_a_loss_for_an_algorithm_that_takes_none_is_an_error(register_plugin):
    from flux_core.errors import FluxError
    from flux_core.registry import get_registry

    class ForGrpo:
        @hookimpl
        def register_losses(self, register):
            register("my_loss", lambda inputs, **kwargs: inputs, algorithm="grpo")

    register_plugin(ForGrpo(), name="grpo-losses")
    with pytest.raises(
        FluxError, match="plugin 'grpo-losses' registers loss 'my_loss' for 'grpo', which takes no registered losses"
    ):
        get_registry()


def test_a_loss_registered_without_its_algorithm_is_an_error_naming_the_plugin(register_plugin):
    # Core has no default algorithm: a loss that names none would silently become a DPO loss.
    from flux_core.errors import FluxError
    from flux_core.registry import get_registry

    class NoAlgorithm:
        @hookimpl
        def register_losses(self, register):
            register("my_loss", lambda inputs, **kwargs: inputs)

    register_plugin(NoAlgorithm(), name="vague-losses")
    with pytest.raises(FluxError, match="plugin 'vague-losses' registers loss 'my_loss' without naming its algorithm"):
        get_registry()
