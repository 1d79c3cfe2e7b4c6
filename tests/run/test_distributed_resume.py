"""Multi-process runs killed with -9 after a checkpoint and resumed continue as if never interrupted.

Three launches of the same 2-process DPO run (gloo on CPU, fp32, 6 steps, a checkpoint
every 3): torchrun with DDP, torchrun with accelerate's FSDP2 (let through on CPU as in
``test_fsdp.py``), and two "nodes" on this machine (two ``torchrun --nnodes 2 --node_rank
0|1`` agents, one process each, rendezvous on 127.0.0.1, one shared ``output_dir``).
Each is killed with SIGKILL (every process of every launcher) while the main process is
inside step 4, so ``checkpoint-3`` is the newest complete checkpoint, then resumed with
``--resume`` by the same launch; its per-step losses must match an uninterrupted run of
that launch within 1e-5. Every run is shared by the assertions through module-scoped
fixtures (``make test`` runs a module on one worker): each launch costs tens of seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from paths import REPO
from resume_helpers import BIN, PAUSING_FLUX, metrics, write_config
from test_fsdp import FORCE_FSDP_ON_CPU

TOLERANCE = 1e-5
STEPS, SAVE_STEPS, KILLED_IN_STEP = 6, 3, 4

# What `accelerate launch --config_file configs/accelerate/fsdp.yaml` puts in each process's environment.
FSDP2_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
    "FSDP_SYNC_MODULE_STATES": "true",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launchers(kind: str) -> list[list[str]]:
    """The launcher command lines of one run: one torchrun with 2 processes, or two one-process "nodes"."""
    if kind != "two-nodes":
        return [[str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]]
    rendezvous = ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return [
        [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), *rendezvous]
        for rank in (0, 1)
    ]


class Launch:
    """`flux train ARGS` under the launchers of ``kind``, pausing the main process at ``events``
    (resume_helpers.PAUSING_FLUX)."""

    def __init__(self, kind: str, directory: Path, events: list[str], *args: str):
        self.directory = directory
        directory.mkdir(parents=True)
        script = directory / "pausing_flux.py"
        script.write_text(PAUSING_FLUX)
        site = directory / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(FORCE_FSDP_ON_CPU)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TQDM_DISABLE": "1",
            "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU, GPU machine or not
            **(FSDP2_ENV | {"PYTHONPATH": str(site)} if kind == "fsdp2" else {"ACCELERATE_USE_CPU": "true"}),
        }
        command = [str(script), str(directory), ",".join(events), "train", *args, "--no-progress"]
        self.processes = [
            subprocess.Popen(
                [*launcher, *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for launcher in launchers(kind)
        ]

    def wait_for(self, event: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not (self.directory / f"at-{event}").exists():
            if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"never reached {event}: {self.finish()[-1][-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL every launcher and every process under it at once (torchrun starts each
        worker in a session of its own, so a process group does not reach them)."""
        tree = []
        for process in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                launcher = psutil.Process(process.pid)
                tree += [launcher, *launcher.children(recursive=True)]
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)

    def finish(self, timeout: float = 400) -> tuple[list[int], str]:
        """Exit statuses and the main launcher's stderr."""
        try:
            errors = [p.communicate(timeout=timeout)[1] for p in self.processes]
        finally:
            self.kill()
        return [p.returncode for p in self.processes], errors[0]


def losses(output: Path) -> list[float]:
    rows = metrics(output)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    return [row["loss"] for row in rows]


def run_config(tmp: Path, model: Path, data: Path, name: str) -> tuple[Path, Path]:
    output = tmp / name
    config = write_config(
        tmp / f"{name}.yaml",
        model,
        output,
        "dpo",
        data,
        num_steps=STEPS,
        batch_size=4,  # per process: 8 per step
        checkpoint={"save_steps": SAVE_STEPS},
    )
    return config, output


def uninterrupted(kind: str, tmp: Path, model: Path, data: Path) -> Path:
    config, output = run_config(tmp, model, data, f"{kind}-uninterrupted")
    codes, err = Launch(kind, tmp / f"{kind}-uninterrupted-launch", [], str(config)).finish()
    assert codes == [0] * len(codes), err[-3000:]
    return output


def killed_and_resumed(kind: str, tmp: Path, model: Path, data: Path) -> dict:
    config, output = run_config(tmp, model, data, f"{kind}-killed")
    first = Launch(kind, tmp / f"{kind}-first", [f"step:{KILLED_IN_STEP}"], str(config))
    first.wait_for(f"step:{KILLED_IN_STEP}")  # the main process is inside step 4: checkpoint-3 is written
    first.kill()
    first.finish()
    after_kill = sorted(p.name for p in output.iterdir())
    state = json.loads((output / "checkpoint-3" / "flux_state.json").read_text())
    codes, err = Launch(kind, tmp / f"{kind}-second", [], str(config), "--resume").finish()
    assert codes == [0] * len(codes), err[-3000:]
    return {"output": output, "after_kill": after_kill, "resume_files": state["resume_files"], "stderr": err}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, preferences_file):
    """``runs(kind)``: that launch's killed-and-resumed run and the uninterrupted reference, started
    when a test first asks for them. The reference is one uninterrupted 2-process DDP run: two nodes of
    one process each compute what torchrun's two DDP processes do, and FSDP2 over 2 processes the same
    within 2e-7 (measured), so one reference serves all (each launch costs ~30 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("distributed-resume")
    references: dict[str, Path] = {}
    resumed: dict[str, dict] = {}

    def get(kind: str) -> dict:
        reference_kind = "ddp"
        if reference_kind not in references:
            references[reference_kind] = uninterrupted(reference_kind, tmp, tiny_model_dir, preferences_file)
        if kind not in resumed:
            resumed[kind] = killed_and_resumed(kind, tmp, tiny_model_dir, preferences_file)
        return {"reference": references[reference_kind], "resumed": resumed[kind]}

    return get


# DDP on one node is the two-nodes case (DDP, one process a node) without the second rendezvous.
@pytest.mark.parametrize("kind", ["fsdp2", "two-nodes"])
def test_killed_after_a_checkpoint_and_resumed_matches_the_uninterrupted_run(kind, runs):
    run = runs(kind)
    resumed, reference = run["resumed"], run["reference"]
    # The kill left checkpoint-3 complete and nothing later under a real name.
    assert [name for name in resumed["after_kill"] if name.startswith("checkpoint-")] == ["checkpoint-3"]
    assert "flux: resuming from " in resumed["stderr"] and "checkpoint-3 (step 3)" in resumed["stderr"]
    got, expected = losses(resumed["output"]), losses(reference)
    assert max(abs(a - b) for a, b in zip(got, expected)) <= TOLERANCE, (got, expected)
    assert got[-1] < got[0]  # it trained


def test_the_fsdp2_launch_uses_the_shipped_fsdp_config():
    shipped = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    assert shipped["fsdp_version"] == int(FSDP2_ENV["FSDP_VERSION"])
    assert shipped["fsdp_state_dict_type"] == FSDP2_ENV["FSDP_STATE_DICT_TYPE"]
    assert shipped["fsdp_auto_wrap_policy"] == FSDP2_ENV["FSDP_AUTO_WRAP_POLICY"]


@pytest.mark.parametrize("kind", ["two-nodes", "fsdp2"])
def test_every_rank_writes_its_training_state_into_the_checkpoint(kind, runs):
    files = set(runs(kind)["resumed"]["resume_files"])
    assert {"rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json"} <= files
    if kind == "fsdp2":  # accelerate's sharded (DCP) model and optimizer, one shard per rank
        assert {"pytorch_model_fsdp_0", "optimizer_0"} <= files
    else:
        assert "optimizer.pt" in files


NODE_LOCAL_OUTPUT_DIR = """
import sys
from pathlib import Path

import torch.distributed as dist

from flux_core.errors import FluxError
from flux_core.run import distributed

dist.init_process_group("gloo")
output_dir = Path(sys.argv[1]) / "run"
if dist.get_rank() == 1:  # this "node" has its own disk at output_dir: none of rank 0's files are on it
    distributed.Path = lambda path: Path(str(path).replace(str(output_dir), str(Path(sys.argv[1]) / "elsewhere")))
try:
    distributed.shared_staged_path(output_dir / "checkpoint-3")
    print(f"rank {dist.get_rank()}: wrote", flush=True)
except FluxError as error:
    print(f"rank {dist.get_rank()}: {error}", flush=True)
"""


def test_a_rank_that_does_not_see_the_shared_output_dir_stops_every_rank_in_one_line(tmp_path):
    script = tmp_path / "node_local.py"
    script.write_text(NODE_LOCAL_OUTPUT_DIR)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2 and "wrote" not in result.stdout  # neither rank goes on to write half a checkpoint
    for rank, line in enumerate(lines):
        assert line.startswith(f"rank {rank}: output_dir {tmp_path / 'run'}: rank 1 does not see the checkpoint ")
        assert "put output_dir on a filesystem every node mounts" in line


LEAVES_AT_EXIT = """
import atexit, os, sys
import torch.distributed as dist
from flux_core.run.distributed import leave_process_group_at_exit

# registered first, so it runs last (atexit is last in, first out): what the interpreter's teardown finds
atexit.register(lambda: print("at teardown, group up:", dist.is_initialized(), flush=True))
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
leave_process_group_at_exit()
leave_process_group_at_exit()  # a second run in the process registers nothing more
dist.barrier()
"""


def test_the_process_group_is_destroyed_before_the_interpreter_tears_down(tmp_path):
    """A gloo group alive at teardown can abort a finished run's process (SIGABRT, a CI run saw it)."""
    script = tmp_path / "leaves.py"
    script.write_text(LEAVES_AT_EXIT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [str(BIN / "python"), str(script), str(free_port())], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "at teardown, group up: False"
