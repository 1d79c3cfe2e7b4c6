"""A third-party package adds a reward through an entry point, with no change to Flux."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from paths import REPO

PIP = [sys.executable, "-m", "pip"]  # an environment may have no `pip` script beside python


@pytest.fixture(scope="module")
def example_reward_site(tmp_path_factory):
    """examples/flux-example-reward installed (as a real distribution) into a fresh directory."""
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy so the repository is not littered with build/ and *.egg-info/.
    source = build / "flux-example-reward"
    subprocess.run(["cp", "-r", str(REPO / "examples" / "flux-example-reward"), str(source)], check=True)
    subprocess.run(
        [*PIP, "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    return site


def run_python(code, site, cwd):
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_flux_plugins_lists_the_installed_reward(example_reward_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(example_reward_site)}
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "flux"), "plugins"], capture_output=True, text=True, env=env
    )
    assert listing.returncode == 0, listing.stderr
    assert "example_reward (flux-example-reward 0.1.0): register_rewards" in listing.stdout
    assert "mentions_column (example_reward)" in listing.stdout


def test_the_installed_reward_is_used_in_a_grpo_run(example_reward_site, tiny_model_dir, tmp_path):
    code = f"""
        import json
        from flux import FluxConfig, FluxTrainer
        from flux_core.registry import get_registry

        config = FluxConfig.from_dict({{
            "model_path": {str(tiny_model_dir)!r}, "output_dir": {str(tmp_path / "out")!r},
            "num_steps": 2, "batch_size": 4,
            "algorithm": {{"name": "grpo", "num_generations": 4, "max_completion_length": 8,
                           "rewards": [{{"name": "mentions_column", "kwargs": {{"column": "topic"}}}}]}},
        }})
        # the prompt's topic is "jazz"; a completion containing it scores 1
        reward = get_registry().get_reward("mentions_column")
        print(json.dumps({{"plugin": reward.plugin, "module": reward.fn.__module__,
                           "direct": reward.fn(["p", "p"], ["I like JAZZ", "no"], topic=["jazz", "jazz"])}}))
        result = FluxTrainer(config, show_progress=False).fit(prompts=[{{"prompt": "Explain jazz.", "topic": "jazz"}}] * 4)
        print(json.dumps([step.metrics for step in result.history]))
    """
    result = run_python(code, example_reward_site, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    registered = json.loads(lines[-2])
    assert registered == {"plugin": "example_reward", "module": "flux_example_reward", "direct": [1.0, 0.0]}
    history = json.loads(lines[-1])
    assert len(history) == 2
    for metrics in history:
        assert 0.0 <= metrics["reward_mentions_column"] <= 1.0
        assert metrics["reward"] == metrics["reward_mentions_column"]  # the only reward, weight 1
