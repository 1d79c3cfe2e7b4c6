"""The example third-party loss package installs, registers through its entry point, and is used."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

RUN = """
import json, sys
import torch.nn.functional as F
from flux import FluxConfig, FluxTrainer
from flux_core.registry import get_registry

loss = get_registry().get_loss("margin_sigmoid", "dpo")
config = FluxConfig.from_dict(json.loads(sys.argv[1]))
trainer = FluxTrainer(config, show_progress=False)
result = trainer.fit(prompts=sys.argv[2], data_format="preferences")
print(json.dumps({"plugin": loss.plugin, "losses": result.metric("loss"), "margins": result.metric("reward_margin")}))
"""


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # Build from a copy: pip builds in the source tree, and parallel test runs would share its build/.
    source = tmp_path_factory.mktemp("build") / "flux-example-loss"
    shutil.copytree(
        REPO / "examples" / "flux-example-loss", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


def run_with(site: Path, config: dict, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(config), str(data)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_installed_package_registers_its_loss_and_the_run_uses_its_formula(
    installed_example, tiny_model_dir, preferences_file, tmp_path
):
    margin = 0.5
    config = {
        "model_path": str(tiny_model_dir),
        "output_dir": str(tmp_path / "out"),
        "num_steps": 3,
        "batch_size": 8,
        "learning_rate": 5e-4,
        "max_length": 128,
        "algorithm": {"name": "dpo", "beta": 0.1, "loss": "margin_sigmoid", "loss_kwargs": {"margin": margin}},
    }
    report = run_with(installed_example, config, preferences_file)
    assert report["plugin"] == "example_loss"
    # Step 1: policy == reference, so delta = 0 and the loss is -log sigmoid(-margin), not sigmoid's log 2.
    expected = -torch_logsigmoid(-margin)
    assert report["losses"][0] == pytest.approx(expected, abs=1e-4)
    assert report["losses"][0] != pytest.approx(0.693147, abs=1e-2)


def test_without_the_package_the_loss_is_unknown(tiny_model_dir):
    from flux import ConfigError, FluxConfig

    with pytest.raises(ConfigError, match="unknown dpo loss 'margin_sigmoid'"):
        FluxConfig.from_dict(
            {"model_path": str(tiny_model_dir), "algorithm": {"name": "dpo", "loss": "margin_sigmoid"}}
        )


def torch_logsigmoid(x: float) -> float:
    import math

    return -math.log1p(math.exp(-x))
