"""FluxConfig: the tutorial's YAML loads, and every mistake is one line naming file, line and key."""

import re
import warnings
from pathlib import Path

import pytest
from paths import REPO

from flux import ConfigError, FluxConfig


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "dpo-config.yaml"
    path.write_text(text)
    return path


def error_of(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        FluxConfig.from_yaml(path, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_tutorial_config_loads_with_every_key():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the headline config runs clean
        config = FluxConfig.from_yaml(REPO / "configs" / "dpo.yaml")
    assert config.model_path == "Qwen/Qwen3-8B"  # a hub id stays a hub id
    assert (config.num_steps, config.batch_size, config.learning_rate) == (1000, 8, 5e-7)
    assert (config.algorithm.name, config.algorithm.beta) == ("dpo", 0.1)
    assert config.algorithm.reference_free is False and config.algorithm.label_smoothing == 0.0
    assert config.sglang.base_url == "http://localhost:8000"
    assert config.adaptive_async.enabled is False and config.checkpoint.save_steps == 200


def test_the_tutorial_config_on_a_local_model_builds_a_trainer_without_a_warning(tiny_model_dir):
    from flux import FluxTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = FluxConfig.from_yaml(REPO / "configs" / "dpo.yaml", overrides=[f"model_path={tiny_model_dir}"])
        FluxTrainer(config, show_progress=False)
    assert config.model_path == str(tiny_model_dir)


@pytest.mark.parametrize("algorithm", ["dpo", "sft", "kto", "reward_model"])
def test_asking_an_offline_algorithm_for_async_rollouts_warns(tmp_path, algorithm):
    path = write(tmp_path, f"model_path: m\nadaptive_async: {{enabled: true}}\nalgorithm: {{name: {algorithm}}}\n")
    with pytest.warns(UserWarning, match=r"has no rollouts: adaptive_async.enabled is ignored"):
        FluxConfig.from_yaml(path)


def test_misspelled_key_names_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, "model_path: m\nalgorithm:\n  name: dpo\n  bta: 0.2\n")
    assert error_of(path) == f"{path}:4: algorithm.bta: unknown key (did you mean 'beta'?)"


def test_misspelled_top_level_key(tmp_path):
    path = write(tmp_path, "model_path: m\nnum_step: 3\nalgorithm: {name: dpo}\n")
    assert error_of(path) == f"{path}:2: num_step: unknown key (did you mean 'num_steps'?)"


@pytest.mark.parametrize(
    "block,expected",
    [
        ("beta: 0", "algorithm.beta: Input should be greater than 0"),
        ("label_smoothing: 0.5", "algorithm.label_smoothing: Input should be less than 0.5"),
        ("loss: sigmod", "unknown dpo loss 'sigmod' (did you mean 'sigmoid'?)"),
        ("reference_free: true\n  reference_policy: copy", "reference_free: true contradicts reference_policy: copy"),
    ],
)
def test_algorithm_block_is_validated_by_the_dpo_schema(tmp_path, block, expected):
    path = write(tmp_path, f"model_path: m\nalgorithm:\n  name: dpo\n  {block}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:")
    assert expected in message


def test_missing_algorithm_package_names_the_pip_install(tmp_path):
    path = write(tmp_path, "model_path: m\nalgorithm:\n  name: nosuch_grpo_like\n")
    assert "unknown algorithm 'nosuch_grpo_like'" in error_of(path)
    from flux_core.registry import KNOWN_ALGORITHM_PACKAGES, get_registry

    missing = [name for name in KNOWN_ALGORITHM_PACKAGES if name not in get_registry().algorithms]
    for name in missing:  # algorithms whose plugin is not installed here
        path = write(tmp_path, f"model_path: m\nalgorithm:\n  name: {name}\n")
        assert error_of(path).endswith(
            f"algorithm '{name}' is not installed: pip install {KNOWN_ALGORITHM_PACKAGES[name]}"
        )


def test_trl_block_keys_must_be_real_dpo_config_fields(tmp_path):
    path = write(
        tmp_path, "model_path: m\nalgorithm: {name: dpo}\ntrl:\n  warmup_steps: 2\n  gradient_acumulation_steps: 2\n"
    )
    assert error_of(path) == (
        f"{path}:5: trl.gradient_acumulation_steps: not a field of DPOConfig "
        "(did you mean 'gradient_accumulation_steps'?)"
    )
    owned = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\ntrl:\n  beta: 0.3\n")
    assert error_of(owned).endswith("trl.beta: is set by Flux: use algorithm.beta")
    good = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\ntrl:\n  warmup_steps: 2\n")
    assert FluxConfig.from_yaml(good).trl == {"warmup_steps": 2}


def test_liger_without_liger_kernel_installed_fails_at_load_naming_the_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a)
    )
    path = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\ntrl:\n  use_liger_kernel: true\n")
    assert error_of(path) == (
        f"{path}:4: trl.use_liger_kernel: needs liger-kernel, which is not installed: pip install liger-kernel "
        "(Triton kernels, for CUDA GPUs)"
    )


def test_compile_reaches_the_trl_config_and_the_trl_block_cannot_set_it(tmp_path):
    from flux_core.trl_based.settings import shared_trl_settings

    path = write(tmp_path, "model_path: m\ncompile: true\nalgorithm: {name: dpo}\n")
    assert shared_trl_settings(FluxConfig.from_yaml(path), "fp32", False)["torch_compile"] is True
    owned = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\ntrl:\n  torch_compile: true\n")
    assert error_of(owned).endswith("trl.torch_compile: is set by Flux: use compile")


def test_set_overrides_apply_before_validation(tmp_path):
    path = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\n")
    config = FluxConfig.from_yaml(path, overrides=["algorithm.beta=0.25", "lora.r=4", "num_steps=7"])
    assert (config.algorithm.beta, config.lora.r, config.num_steps) == (0.25, 4, 7)
    assert "algorithm.bet: unknown key (did you mean 'beta'?)" in error_of(path, ["algorithm.bet=1"])
    assert "expected KEY=VALUE" in error_of(path, ["algorithm.beta"])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", "config file is empty"),
        ("- a\n- b\n", "expected a mapping of settings at the top level"),
        ("model_path: m\nalgorithm: [\n", "invalid YAML"),
        ("algorithm: {name: dpo}\n", "model_path: required key is missing"),
    ],
)
def test_broken_files(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, text))


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


def test_label_smoothing_with_a_loss_that_ignores_it_warns(tmp_path):
    path = write(tmp_path, "model_path: m\nalgorithm: {name: dpo, label_smoothing: 0.1}\n")
    with pytest.warns(UserWarning, match="has no effect with loss 'sigmoid'"):
        FluxConfig.from_yaml(path)


def test_every_config_field_is_documented():
    from pydantic import BaseModel

    from flux_core.registry import get_registry

    models = {FluxConfig} | {a.config_schema for a in get_registry().algorithms.values()}
    seen = set()
    while models:
        model = models.pop()
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in seen:
                    models.add(arg)
    assert len(seen) >= 6


def test_compile_in_a_ppo_run_warns_that_ppo_does_not_apply_it():
    data = {
        "model_path": "m",
        "compile": True,
        "algorithm": {"name": "ppo", "rewards": [{"name": "length_target", "kwargs": {"target": 8}}]},
    }
    with pytest.warns(UserWarning, match="compile: true is not applied by PPO's own training loop"):
        FluxConfig.from_dict(data)


# ---------------------------------------------------------------------- num_steps or num_epochs


def test_a_run_is_num_steps_long_or_num_epochs_long_never_both(tmp_path):
    neither = FluxConfig.from_yaml(write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\n"))
    assert (neither.num_steps, neither.num_epochs) == (1000, None)  # the default length stays 1000 steps
    epochs = FluxConfig.from_yaml(write(tmp_path, "model_path: m\nnum_epochs: 2.5\nalgorithm: {name: dpo}\n"))
    assert (epochs.num_steps, epochs.num_epochs) == (None, 2.5)

    both = write(tmp_path, "model_path: m\nnum_steps: 100\nnum_epochs: 3\nalgorithm: {name: dpo}\n")
    assert error_of(both) == f"{both}:3: num_epochs: give num_steps or num_epochs, not both"
    steps_file = write(tmp_path, "model_path: m\nnum_steps: 100\nalgorithm: {name: dpo}\n")
    assert error_of(steps_file, ["num_epochs=3"]) == (
        "--set 'num_epochs=3': num_epochs: give num_steps or num_epochs, not both"
    )
    assert FluxConfig.from_yaml(steps_file, overrides=["num_epochs=3", "num_steps=null"]).num_epochs == 3
    for bad, expected in (("0", "greater than 0"), ("true", "expected a number, not a boolean (true)")):
        assert expected in error_of(steps_file, ["num_steps=null", f"num_epochs={bad}"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trl.num_train_epochs=3", "trl.num_train_epochs: is set by Flux: use num_epochs"),
        ("trl.max_steps=3", "trl.max_steps: is set by Flux: use num_steps"),
        ("trl.save_strategy=steps", "trl.save_strategy: is set by Flux: it writes its own checkpoints; use "),
        ("trl.save_total_limit=2", "trl.save_total_limit: has no effect: Flux writes its own checkpoints"),
        ("trl.activation_checkpointing=true", "trl.activation_checkpointing: is set by Flux: use gradient_checkp"),
        ("trl.disable_tqdm=false", "trl.disable_tqdm: is set by Flux: it shows its own progress bar"),
        ("trl.push_to_hub=true", "trl.push_to_hub: is Flux's: use the top-level push_to_hub"),
    ],
)
def test_a_trl_field_flux_sets_is_refused_naming_the_flux_key(tmp_path, override, expected):
    """TRL would have run with Flux's value and ignored these silently (num_train_epochs: max_steps wins)."""
    path = write(tmp_path, "model_path: m\nalgorithm: {name: dpo}\n")
    assert error_of(path, [override]).startswith(f"--set '{override}': {expected}")


def test_chat_template_names_are_checked_when_the_config_loads(tmp_path):
    path = write(tmp_path, "model_path: m\nchat_template: llama3\nalgorithm: {name: dpo}\n")
    assert error_of(path) == (
        f"{path}:2: chat_template: 'llama3' is not a built-in name (chatml, llama-2, llama-3, llama-3.1, gemma, "
        "qwen2.5, qwen3), a .jinja file, or a model directory or hub id (did you mean 'llama-3'?)"
    )
    for value in ("chatml", "templates/mine.jinja", "./models/base", "Qwen/Qwen3-8B", "{{ messages }}"):
        assert FluxConfig.from_dict({"model_path": "m", "chat_template": value, "algorithm": {"name": "dpo"}})


def test_yaml_anchors_and_aliases_still_load_and_a_bomb_is_refused_at_once(tmp_path):
    """Aliases are read as before; ten lines that expand to 9**9 values fail in one line instead of hanging."""
    path = tmp_path / "cfg.yaml"
    path.write_text("model_path: m\nalgorithm: {name: dpo}\ntrl:\n  max_grad_norm: &norm 0.5\n  weight_decay: *norm\n")
    config = FluxConfig.from_yaml(path)
    assert config.trl["max_grad_norm"] == config.trl["weight_decay"] == 0.5

    levels = ['  a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"  a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    path.write_text("model_path: m\nalgorithm: {name: dpo}\ntrl:\n" + "\n".join(levels) + "\n")
    # line 9, a5, is the first past the bound: about 600,000 values
    with pytest.raises(ConfigError, match=rf"^{path}:9: invalid YAML: its aliases expand to more than "):
        FluxConfig.from_yaml(path)


def test_one_lora_module_name_is_a_one_item_list_and_a_regex_stays_a_regex():
    """peft reads a string as a regex over full names, where `q_proj` matches nothing: one name means [name]."""

    def targets(value):
        return FluxConfig.from_dict(
            {"model_path": "m", "lora": {"target_modules": value}, "algorithm": {"name": "dpo"}}
        )

    assert targets("q_proj").lora.target_modules == ["q_proj"]
    assert targets(".*self_attn.(q|v)_proj").lora.target_modules == ".*self_attn.(q|v)_proj"
    assert targets("all-linear").lora.target_modules == "all-linear"


def test_set_reaches_into_a_list_by_index(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model_path: m\nalgorithm: {name: dpo}\ndata: [a.jsonl, {path: b.jsonl}]\n")
    config = FluxConfig.from_yaml(path, overrides=["data.1.rows=5", "data.0=c.jsonl"])
    assert [(source.path, source.rows) for source in config.data] == [("c.jsonl", None), ("b.jsonl", 5)]
    with pytest.raises(ConfigError, match=r"^--set 'data.2.rows=5': data is a list of 2; index it with 0 to 1$"):
        FluxConfig.from_yaml(path, overrides=["data.2.rows=5"])


def test_loss_kwargs_are_checked_against_the_loss_signature():
    """Values convert as the annotation says (YAML's 5e-2 is a string); a loss taking **kwargs takes any key."""
    from flux_core.config_checks import checked_loss_kwargs

    config = FluxConfig.from_dict(
        {"model_path": "m", "algorithm": {"name": "dpo", "loss": "discopop", "loss_kwargs": {"tau": "5e-2"}}}
    )
    assert config.algorithm.loss_kwargs == {"tau": 0.05}

    def open_loss(inputs, *, beta, **settings):
        return inputs

    assert checked_loss_kwargs(open_loss, "mine", {"anything": 1}, {"beta": "algorithm.beta"}) == {"anything": 1}
    with pytest.raises(ValueError, match="is set by Flux: use algorithm.beta"):
        checked_loss_kwargs(open_loss, "mine", {"beta": 1}, {"beta": "algorithm.beta"})


def test_nan_and_infinity_are_refused_in_every_number_field_and_free_form_block():
    def load(**settings):
        return FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}, **settings})

    for settings, where in [
        ({"learning_rate": "inf"}, "learning_rate: Input should be a finite number"),
        ({"sglang": {"timeout": float("nan")}}, "sglang.timeout: nan is not a finite number"),
        ({"trl": {"max_grad_norm": "-inf"}}, "trl.max_grad_norm: Input should be a finite number"),
        ({"lora": {"alpha": float("inf")}}, "lora.alpha: inf is not a finite number"),
    ]:
        with pytest.raises(ConfigError, match=rf"^config: {re.escape(where)}"):
            load(**settings)
