"""Helpers for the resume and preemption tests: configs, a `flux train` that pauses at a step, comparisons."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from paths import REPO
from safetensors.torch import load_file

BIN = Path(sys.executable).parent

E_FRACTION = [{"name": "pattern_fraction", "kwargs": {"pattern": "[eE]"}}]
ALGORITHMS = {
    "dpo": {"name": "dpo"},
    "grpo": {"name": "grpo", "num_generations": 4, "max_completion_length": 8, "rewards": E_FRACTION},
    "ppo": {
        "name": "ppo",
        "num_generations": 2,
        "max_completion_length": 8,
        "rewards": E_FRACTION,
        "num_minibatches": 2,
    },
}

# `flux train ARGS...` that pauses at events named in argv[2] (comma-separated): `step:N` inside step N
# (after its optimizer update, before its metrics are written) and `save:NAME` while checkpoint NAME
# is being written (its weights staged, the rest not yet). At each it touches DIR/at-EVENT and waits
# for DIR/go-EVENT (or a signal).
PAUSING_FLUX = """
import sys, time
from pathlib import Path
from flux_core.run import checkpoint
from flux_core import hookimpl
from flux_core.cli import main
from flux_core.plugins import get_plugin_manager
from flux_core.registry import reset_registry

directory, events = Path(sys.argv[1]), set(sys.argv[2].split(","))

def pause(event):
    if event in events:
        (directory / f"at-{event}").touch()
        while not (directory / f"go-{event}").exists():
            time.sleep(0.02)

class Pause:
    @hookimpl
    def step_metrics(self, step, metrics, config):
        pause(f"step:{step}")
        return {}

save_model = checkpoint.save_model

def paused_save_model(model, tokenizer, staged, **kwargs):
    save_model(model, tokenizer, staged, **kwargs)
    pause("save:" + staged.name[1:].split(".tmp-")[0])

checkpoint.save_model = paused_save_model
get_plugin_manager().register(Pause(), name="test-pause")
reset_registry()
sys.exit(main(sys.argv[3:]))
"""


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def write_config(path: Path, model: Path, output: Path, algorithm: str, data: Path, **extra) -> Path:
    """A small run of ``algorithm`` as a YAML file (what `flux train` reads)."""
    settings = {
        "model_path": str(model),
        "output_dir": str(output),
        "data": str(data),
        "num_steps": 8,
        "batch_size": 8 if algorithm == "dpo" else 4,
        "learning_rate": 5.0e-4,
        "seed": 0,
        "checkpoint": {"save_steps": 4},
        "precision": "fp32",  # resumed and uninterrupted losses are compared to 1e-5: bf16 repeats less closely
        "algorithm": ALGORITHMS[algorithm],
        **({"max_length": 96} if algorithm == "dpo" else {}),
        **extra,
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def prompts_file(path: Path, count: int = 32) -> Path:
    sys.path.insert(0, str(REPO / "examples"))
    from make_prompts import make_prompts

    path.write_text("".join(json.dumps(row) + "\n" for row in make_prompts(count, seed=0)))
    return path


def flux_train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flux"), "train", *args, "--no-progress"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
    )


class PausedRun:
    """`flux train ARGS` in the background, pausing at ``events`` (see PAUSING_FLUX);
    ``launcher`` (e.g. torchrun and its options) runs it as a script file instead."""

    def __init__(self, directory: Path, events: list[str], *args: str, launcher: list[str] | None = None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        if launcher:
            script = directory / "pausing_flux.py"
            script.write_text(PAUSING_FLUX)
            program = [*launcher, str(script)]
        else:
            program = [sys.executable, "-c", PAUSING_FLUX]
        command = [*program, str(directory), ",".join(events), "train", *args, "--no-progress"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())

    def wait(self, event: str, timeout: float = 300) -> None:
        """Until the run is paused at ``event``."""
        deadline = time.monotonic() + timeout
        while not (self.directory / f"at-{event}").exists():
            if self.process.poll() is not None:
                raise AssertionError(f"flux train ended before {event}: {self.process.communicate()[1][-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"flux train did not reach {event}")
            time.sleep(0.05)

    def go(self, event: str) -> None:
        (self.directory / f"go-{event}").touch()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the started process (the launcher, when there is one)."""
        os.kill(self.process.pid, signum)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[key] - wb[key]).abs().max().item() for key in wa)


def loads(directory: Path) -> bool:
    """A named checkpoint loads with plain from_pretrained and has finite weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory)
    return all(torch.isfinite(p).all() for p in model.parameters())


SIGKILL, SIGTERM, SIGINT = signal.SIGKILL, signal.SIGTERM, signal.SIGINT
