"""`flux train` under a 2-process CPU launch (torchrun, gloo) matches one process with the same global batch,
with eval at save points (a collective) included."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(tmp_path: Path, name: str, model: Path, data: Path, launcher: list[str], batch_size: int):
    config = tmp_path / f"{name}.yaml"
    output = tmp_path / name
    config.write_text(
        f"model_path: {model}\noutput_dir: {output}\nnum_steps: 4\nbatch_size: {batch_size}\n"
        "learning_rate: 5.0e-4\nmax_length: 96\nalgorithm: {name: dpo, reference_policy: copy}\n"
        "checkpoint: {save_steps: 2}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            *launcher,
            str(BIN / "flux"),
            "train",
            str(config),
            "--data",
            str(data),
            "--eval-data",
            str(data),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    return result.stdout, losses, output


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_model_dir, preferences_file):
    _, single, _ = train(tmp_path, "single", tiny_model_dir, preferences_file, [], batch_size=8)
    torchrun = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    stdout, double, output = train(tmp_path, "double", tiny_model_dir, preferences_file, torchrun, batch_size=4)

    assert len(double) == len(single) == 4  # one metrics line per step, not one per process
    assert double == pytest.approx(single, abs=1e-4)
    assert stdout.count("flux: trained 4 steps") == 1  # only the main process prints
    assert sorted(p.name for p in output.iterdir()) == [
        ".flux.lock",  # the run lock (flux_core/run_dir.py), taken by the main process only
        "best",
        "checkpoint-2",
        "checkpoint-4",
        "final",
        "metrics.jsonl",
    ]
