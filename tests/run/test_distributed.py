"""`flux train` under a 2-process NCCL launch (torchrun, two GPUs) matches one process with the same global batch,
with eval at save points (a collective) included; both pin fp32, so one process and two agree to 1e-4.

The same check over gloo on CPU runs everywhere as part of
tests/run/test_resume.py::test_under_torchrun_every_rank_stops_at_the_same_step_and_the_run_resumes (a 2-process
run, preempted and resumed, against one process: losses and the save points' eval loss). The NCCL variant needs two
GPUs (two processes on one GPU fail with "invalid device ordinal").
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent

DEVICES = [
    pytest.param(
        {},
        id="cuda-nccl",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs: one NCCL process per GPU"),
        ],
    ),
]


def train(tmp_path: Path, name: str, model: Path, data: Path, launcher: list[str], batch_size: int, device_env: dict):
    config = tmp_path / f"{name}.yaml"
    output = tmp_path / name
    config.write_text(
        f"model_path: {model}\noutput_dir: {output}\nnum_steps: 4\nbatch_size: {batch_size}\n"
        "learning_rate: 5.0e-4\nmax_length: 96\nprecision: fp32\nalgorithm: {name: dpo, reference_policy: copy}\n"
        "checkpoint: {save_steps: 2}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", **device_env}
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


@pytest.mark.parametrize("device_env", DEVICES)
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_model_dir, preferences_file, device_env):
    data = preferences_file
    _, single, _ = train(tmp_path, "single", tiny_model_dir, data, [], batch_size=8, device_env=device_env)
    # --standalone: the rendezvous binds a free port itself (no port picked here and raced for)
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    stdout, double, output = train(
        tmp_path, "double", tiny_model_dir, data, torchrun, batch_size=4, device_env=device_env
    )

    assert len(double) == len(single) == 4  # one metrics line per step, not one per process
    assert double == pytest.approx(single, abs=1e-4)
    assert stdout.count("flux: trained 4 steps") == 1  # only the main process prints
    assert sorted(p.name for p in output.iterdir()) == [
        ".flux.lock",  # the run lock (flux_core/run/directory.py), taken by the main process only
        "best",
        "checkpoint-2",
        "checkpoint-4",
        "final",
        "metrics.jsonl",
        "metrics.png",  # flux train draws the run's picture at the end (flux_core/report/plot.py)
    ]
