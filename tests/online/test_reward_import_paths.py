"""A reward given by import path (`module:function`, or `module.function` as TRL's CLI takes it) works
without a plugin package: imported when the config is validated, settings checked like a registered
reward's, and one line naming the key, the module and the error when it cannot be used."""

import textwrap

import pytest

from flux import ConfigError, FluxConfig
from flux_core.online.rewards import build_reward_functions, score_completions

BREVITY = """
def brevity(prompts, completions, *, limit, **columns):
    return [1.0 if len(completion) <= limit else 0.0 for completion in completions]

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """Write ``my_rewards.py`` (or another module) into tmp_path and make it importable."""

    def write(name: str = "my_rewards", source: str = BREVITY) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    return write


def grpo_yaml(tmp_path, reward: str) -> str:
    path = tmp_path / "grpo.yaml"
    path.write_text(
        f"model_path: m\nbatch_size: 4\nalgorithm:\n  name: grpo\n  num_generations: 4\n  rewards:\n    - {reward}\n"
    )
    return str(path)


def config_error(path: str) -> str:
    with pytest.raises(ConfigError) as error:
        FluxConfig.from_yaml(path)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["my_rewards:brevity", "my_rewards.brevity"])
def test_an_import_path_reward_scores_with_its_settings(tmp_path, reward_module, name):
    reward_module()
    config = FluxConfig.from_yaml(grpo_yaml(tmp_path, f"{{name: {name}, kwargs: {{limit: 5}}}}"))
    [reward] = build_reward_functions(config.algorithm.rewards)
    assert reward.name == "brevity"  # metrics read reward_brevity, not reward_my_rewards:brevity
    scores = score_completions([reward], ["p", "p"], ["short", "far too long"])
    assert scores.total == [1.0, 0.0]
    assert scores.metrics()["reward_brevity"] == 0.5


def test_an_import_path_reward_in_a_ppo_config_and_beside_a_registered_one(tmp_path, reward_module):
    reward_module()
    path = tmp_path / "ppo.yaml"
    path.write_text(
        "model_path: m\nalgorithm:\n  name: ppo\n  rewards:\n"
        "    - {name: my_rewards:brevity, weight: 2.0, kwargs: {limit: 3}}\n"
        "    - {name: length_target, kwargs: {target: 3}}\n"
    )
    rewards = build_reward_functions(FluxConfig.from_yaml(path).algorithm.rewards)
    assert [reward.name for reward in rewards] == ["brevity", "length_target"]
    assert score_completions(rewards, ["p"], ["abc"]).total == [3.0]


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            "{name: my_rewards:brevity, kwargs: {limt: 5}}",
            "algorithm.rewards.0: reward 'my_rewards:brevity' has no setting 'limt' (did you mean 'limit'?); "
            "settings: limit",
        ),
        ("{name: my_rewards:brevity}", "algorithm.rewards.0: reward 'my_rewards:brevity' needs kwargs: {limit: ...}"),
    ],
)
def test_settings_are_checked_against_the_signature_as_for_a_registered_reward(tmp_path, reward_module, spec, message):
    reward_module()
    path = grpo_yaml(tmp_path, spec)
    assert config_error(path) == f"{path}:7: {message}"


@pytest.mark.parametrize(
    "name,message",
    [
        (
            "nowhere:brevity",
            "reward 'nowhere:brevity': cannot import module 'nowhere': ModuleNotFoundError: No module named 'nowhere'",
        ),
        (
            "nowhere.brevity",
            "reward 'nowhere.brevity': no reward is registered as 'nowhere.brevity', and as "
            "module.function: cannot import module 'nowhere': ModuleNotFoundError: No module named 'nowhere'",
        ),
        (
            "my_rewards:brevty",
            "reward 'my_rewards:brevty': module 'my_rewards' has no attribute 'brevty' (did you mean 'brevity'?)",
        ),
        (
            "my_rewards:NOT_A_FUNCTION",
            "reward 'my_rewards:NOT_A_FUNCTION': my_rewards:NOT_A_FUNCTION is not "
            "callable (int); point at a function taking (prompts, completions, **columns)",
        ),
        ("broken:fn", "reward 'broken:fn': cannot import module 'broken': ZeroDivisionError: division by zero"),
    ],
)
def test_an_unusable_import_path_is_one_line_naming_the_key_and_the_module(tmp_path, reward_module, name, message):
    reward_module()
    reward_module("broken", "x = 1 / 0\n")
    path = grpo_yaml(tmp_path, f"{{name: {name}}}")
    assert config_error(path) == f"{path}:7: algorithm.rewards.0.name: {message}"


def test_a_misspelled_registered_name_still_gets_the_closest_registered_one(tmp_path):
    message = config_error(grpo_yaml(tmp_path, "{name: exact_macth}"))
    assert "algorithm.rewards.0.name: unknown reward 'exact_macth' (did you mean 'exact_match'?)" in message


def test_flux_train_finds_a_reward_module_in_the_working_directory(tmp_path, tiny_model_dir):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from make_prompts import make_prompts

    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(BREVITY))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in make_prompts(8, seed=0)))
    (tmp_path / "grpo.yaml").write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: out\nnum_steps: 1\nbatch_size: 4\nseed: 0\n"
        "algorithm:\n  name: grpo\n  num_generations: 4\n  max_completion_length: 8\n"
        "  rewards: [{name: my_rewards:brevity, kwargs: {limit: 1000}}]\n"
    )
    flux = str(Path(sys.executable).with_name("flux"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [flux, "train", "grpo.yaml", "--data", "prompts.jsonl", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    step = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert step["reward_brevity"] == 1.0 and step["reward"] == 1.0  # every completion is under 1000 characters
