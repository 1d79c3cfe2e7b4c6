"""scripts/gpu_check.sh refuses clearly without a GPU; scripts/gpu_wheels.sh pins what is installed here.

The GPU check itself and the wheel downloads need a CUDA machine and PyPI: neither runs here.
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from paths import REPO


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_gpu_check_without_a_gpu_stops_at_once_in_one_line(tmp_path):
    logs = tmp_path / "logs"
    result = run("gpu_check.sh", FLUX_PYTHON=sys.executable, GPU_CHECK_OUT=str(logs), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu_check: no CUDA GPU: torch "), lines[0]
    assert "torch.cuda.is_available() is False" in lines[0]
    assert result.stdout == "" and not logs.exists()  # nothing ran, nothing written


def test_gpu_check_names_a_step_it_does_not_know():
    result = run("gpu_check.sh", "suite", "benchmark", FLUX_PYTHON=sys.executable)
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check: unknown step 'benchmark' (steps: suite demos accelerate bench)"


def test_gpu_wheels_dry_run_pins_the_installed_versions_for_the_gpu_image(tmp_path):
    out = tmp_path / "wheels"
    result = run("gpu_wheels.sh", "--dry-run", PYTHON=sys.executable, OUT=str(out))
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    download, deepspeed, flux = commands
    for package in ("trl", "datasets", "pydantic", "pydantic-core", "annotated-types", "dill", "multiprocess"):
        assert f" {package}=={importlib.metadata.version(package)}" in download, package
    assert "--no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64" in download
    assert deepspeed.startswith("env DS_BUILD_OPS=0 ") and " deepspeed==" in deepspeed
    plugins = sorted(p.name for p in (REPO / "flux_plugins").iterdir() if (p / "pyproject.toml").exists())
    built = [Path(source).name for source in flux.split("--wheel-dir")[1].split()[1:]]
    assert built == ["flux-train", *plugins]  # Flux's own packages, each built from a copy
    assert f"python3 -m pip install --no-index --no-deps {out}/*.whl" in result.stdout
    assert not out.exists()  # a dry run downloads and writes nothing


def test_gpu_wheels_refuses_a_package_it_cannot_pin(tmp_path):
    result = run("gpu_wheels.sh", "--dry-run", "no-such-package-flux", PYTHON=sys.executable, OUT=str(tmp_path))
    assert result.returncode == 1
    assert "no-such-package-flux is not installed" in result.stderr
