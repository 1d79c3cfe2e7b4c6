"""Every shell command in README.md and docs/*.md runs as written, from the repository root.

The commands are read from the documents' ```bash blocks (and the `$ ` lines of transcripts) and run
with bash in a copy of what the repository root holds after `make install` and the demos'
preparation: the shipped configs/, the tiny model in .cache/tiny-model (`flux tiny-model
.cache/tiny-model`), examples/preferences.jsonl and examples/prompts.jsonl, plus the reader's own
preferences.jsonl and held-out.jsonl that the README's commands name. A command the tables below do
not mention runs exactly as written, so a new command is tested from the day it is documented. The
tables say, for the others, what had to give:

- SKIP: commands that cannot run here, and why (GPUs, installs, servers, long trainings);
- CASES: placeholders and hub ids replaced (`DIR`, `Qwen/Qwen3-8B` -> the tiny model) and training
  shrunk with `--set num_steps=2`, which the README documents for `flux train`;
- AFTER_A_RUN: the commands that need a finished run (`flux generate outputs/dpo/best`, `--resume`)
  run in one directory after it, in an order where each finds what it needs (the read-only ones
  first, then resume from checkpoint-1, resume from the newest, overwrite).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from make_preferences import make_pairs
from make_prompts import make_prompts
from paths import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
COMMENT = re.compile(r"(^|\s)#.*$")  # the documents' commands hold no '#' inside quotes

SKIP = {
    "make install": "installs packages from PyPI; this suite runs in what it installed",
    "make test": "the whole suite",
    "pip install flux-grpo": "installs from PyPI",
    "pip install flux-dpo": "installs from PyPI (README's install section; not published yet)",
    "pip install -e flux_plugins/ppo": "installs a package (make install did)",
    "pip install vllm": "installs vLLM (GPU only)",
    "cd flux-my-algo && pip install -e '.[test]' && pytest": "installs a package; tests/test_new_plugin.py installs "
    "every kind flux new-plugin writes and runs its tests",
    "make demo-grpo": "a 300-step training run; its config's paths are checked by test_shipped_configs_resolve_...",
    "make demo-ppo": "a 100-step training run; its config's paths are checked by test_shipped_configs_resolve_...",
    "flux serve MODEL_DIR --port 30000": "a server that runs until stopped, on a fixed port "
    "(tests/online/test_serve.py starts one on a free port)",
    "flux train CONFIG --accelerate-config configs/accelerate/deepspeed-zero2.yaml": "GPUs and DeepSpeed",
    "torchrun --standalone --nproc_per_node 4 $(which flux) train configs/ppo-demo.yaml": "4 GPUs",
    "accelerate launch --num_processes 4 -m flux_core.cli train configs/ppo-demo.yaml": "4 GPUs",
    # The same launcher, command and CLI run in tests that compare them with one process (about 25 s each
    # here): the configs' paths are checked by test_shipped_configs_resolve_..., as for the demos.
    "torchrun --standalone --nproc_per_node 2 $(which flux) train configs/dpo-demo.yaml --data preferences.jsonl": (
        "a 2-process launch: tests/run/test_resume.py runs `torchrun --nproc_per_node 2 flux train` and compares it "
        "with one process"
    ),
    "CUDA_VISIBLE_DEVICES= torchrun --standalone --nproc_per_node 2 $(which flux) train configs/ppo-demo.yaml": (
        "a 2-process launch: flux_plugins/ppo/tests/test_ppo_distributed.py runs the same torchrun with PPO"
    ),
    "CUDA_VISIBLE_DEVICES=1 trl vllm-serve --model Qwen/Qwen3-0.6B --port 8000": "a vLLM server on a GPU, "
    "with a hub model",
}

# configs/dpo.yaml is the tutorial's config, on Qwen/Qwen3-8B: offline, the tiny model stands in for it.
TINY = "--set model_path=.cache/tiny-model"
SHORT = "--set num_steps=2"
DPO_RUN = f"flux train configs/dpo.yaml --data preferences.jsonl {TINY} {SHORT} --set checkpoint.save_steps=1"


@dataclass(frozen=True)
class Case:
    """How a documented command runs here."""

    replace: tuple[tuple[str, str], ...] = ()  # (text in the command, what stands in for it)
    append: str = ""  # arguments added at the end

    def runnable(self, command: str) -> str:
        for text, stand_in in self.replace:
            assert text in command, f"{text!r} is no longer in `{command}`: update CASES"
            command = command.replace(text, stand_in)
        return f"{command} {self.append}".strip()


RESUME_NEWEST = "flux train configs/dpo.yaml --data preferences.jsonl --resume"
CASES = {
    "flux train configs/dpo.yaml --data preferences.jsonl --set algorithm.beta=0.2": Case(append=f"{TINY} {SHORT}"),
    RESUME_NEWEST: Case(append=f"{TINY} --set num_steps=3 --set checkpoint.save_steps=1"),
    "flux train configs/dpo.yaml --data preferences.jsonl --resume outputs/dpo/checkpoint-400": Case(
        (("checkpoint-400", "checkpoint-1"),), append=f"{TINY} {SHORT} --set checkpoint.save_steps=1"
    ),
    "flux train configs/dpo.yaml --data preferences.jsonl --overwrite": Case(append=f"{TINY} {SHORT}"),
    "flux eval outputs/dpo/best --data held-out.jsonl --compare Qwen/Qwen3-8B": Case(
        (("Qwen/Qwen3-8B", ".cache/tiny-model"),)
    ),
    "flux data configs/dpo.yaml --data preferences.jsonl": Case(append=TINY),
    "flux tiny-model DIR": Case((("DIR", "my-tiny-model"),)),
    "flux new-plugin NAME --kind algorithm": Case((("NAME", "my_plugin"),)),
}

# Run in one directory after DPO_RUN (outputs/dpo: checkpoint-1, checkpoint-2, best, final), in this order.
AFTER_A_RUN = (
    'flux generate outputs/dpo/best "Explain machine learning."',
    "flux chat outputs/dpo/best",  # stdin is empty: it starts, and Ctrl-D (end of input) ends it
    "flux plot outputs/dpo",
    "flux eval outputs/dpo/best --data held-out.jsonl --compare Qwen/Qwen3-8B",
    "flux train configs/dpo.yaml --data preferences.jsonl --resume outputs/dpo/checkpoint-400",  # to step 2 again
    RESUME_NEWEST,  # from checkpoint-2 to step 3
    "flux train configs/dpo.yaml --data preferences.jsonl --overwrite",
)


def documented_commands() -> list[tuple[str, str]]:
    """``(document, command)`` for every command line of every shell block, and every ``$ command`` line of
    other blocks (a transcript: the command, then what it prints), comments removed."""
    commands = []
    for document in DOCUMENTS:
        fence, pending = None, ""
        for line in document.read_text().splitlines():
            if fence is None:
                fence = ("shell" if SHELL_FENCE.match(line) else "other") if line.startswith("```") else None
                continue
            if line.startswith("```"):
                fence = None
                continue
            if fence == "other":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = COMMENT.sub("", line).rstrip()
            if line.endswith("\\"):  # continued on the next line
                pending += line[:-1]
                continue
            command = " ".join((pending + line).split())
            pending = ""
            if command:
                commands.append((document.name, command))
    return commands


COMMANDS = documented_commands()


def test_the_tables_name_only_documented_commands():
    documented = {command for _, command in COMMANDS}
    stale = sorted((SKIP.keys() | CASES.keys() | set(AFTER_A_RUN)) - documented)
    assert not stale, f"no longer in README.md or docs/*.md (update the tables): {stale}"
    assert not SKIP.keys() & (CASES.keys() | set(AFTER_A_RUN))


# A repository file named in backquotes: `tests/run/test_kill.py`, `flux_core/run/fsdp.py`, `configs/dpo.yaml`.
NAMED_FILE = re.compile(
    r"`((?:tests|flux_core|flux_plugins|benchmarks|examples|configs|docs)/[\w./-]+\.(?:py|yaml|md|sh))`"
)


def test_every_repository_file_the_documents_name_exists():
    """A doc that points at a test as its evidence must point at one that is there (files move between folders)."""
    missing = []
    for document in [*DOCUMENTS, REPO / "benchmarks" / "README.md"]:
        for number, line in enumerate(document.read_text().splitlines(), start=1):
            for name in NAMED_FILE.findall(line):
                if "NAME" not in name and not (REPO / name).exists():  # NAME: a placeholder (test_NAME.py)
                    missing.append(f"{document.relative_to(REPO)}:{number}: {name}")
    assert not missing, missing


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def repository_root(root: Path, tiny_model_dir: Path) -> Path:
    """What the repository root holds after `make install` and the demos' preparation."""
    shutil.copytree(REPO / "configs", root / "configs")
    (root / ".cache").mkdir()
    (root / ".cache" / "tiny-model").symlink_to(tiny_model_dir)  # make: flux tiny-model .cache/tiny-model
    (root / "examples").mkdir()
    write_jsonl(root / "examples" / "preferences.jsonl", make_pairs(256, seed=0))  # make demo, make demo-rlhf
    write_jsonl(root / "examples" / "prompts.jsonl", make_prompts(256, seed=0))  # make demo-grpo, make demo-ppo
    write_jsonl(root / "preferences.jsonl", make_pairs(64, seed=1))  # the reader's data the README names
    write_jsonl(root / "held-out.jsonl", make_pairs(16, seed=2))
    return root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # flux, torchrun, accelerate: what `make install` put on PATH
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the commands run here are the documents' CPU ones
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def after_a_run(tiny_model_dir, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each AFTER_A_RUN command's result, run in order in one directory after DPO_RUN (not in copies of
    it: the data fingerprint a checkpoint records for --resume changes when the files move)."""
    root = repository_root(tmp_path_factory.mktemp("root"), tiny_model_dir)
    first = run(DPO_RUN, root)
    assert first.returncode == 0, f"`{DPO_RUN}` failed:\n{first.stderr[-3000:]}"
    return {command: run(CASES.get(command, Case()).runnable(command), root) for command in AFTER_A_RUN}


@pytest.mark.parametrize("document,command", [pytest.param(d, c, id=c[:80]) for d, c in COMMANDS])
def test_documented_command_runs_as_written(document, command, request, tmp_path, tiny_model_dir):
    if command in SKIP:
        pytest.skip(f"{document}: {SKIP[command]}")
    runnable = CASES.get(command, Case()).runnable(command)
    if command in AFTER_A_RUN:
        result = request.getfixturevalue("after_a_run")[command]
    else:
        result = run(runnable, repository_root(tmp_path, tiny_model_dir))
    assert result.returncode == 0, f"{document}: `{runnable}` exited {result.returncode}:\n{result.stderr[-3000:]}"
    assert "flux: error" not in result.stderr


def test_shipped_configs_resolve_their_paths_from_the_repository_root(tiny_model_dir, tmp_path, monkeypatch):
    """A config's relative paths are relative to the directory flux runs in; every shipped config names
    paths that exist at the repository root after the demos' preparation, or that an earlier stage of
    `make demo-rlhf` writes (another config's output_dir). Read as YAML: validating a later stage's config
    would already look for the reward model an earlier stage writes."""
    import yaml

    root = repository_root(tmp_path, tiny_model_dir)
    monkeypatch.chdir(root)
    configs = {path.name: yaml.safe_load(path.read_text()) for path in sorted(Path("configs").glob("*.yaml"))}
    outputs = {Path(config["output_dir"]) for config in configs.values()}
    checked = 0
    for name, config in configs.items():
        data = config.get("data")
        paths = {"model_path": config["model_path"], "data": data.get("path") if isinstance(data, dict) else data}
        for index, reward in enumerate(config["algorithm"].get("rewards") or []):
            paths[f"algorithm.rewards.{index}.model"] = reward.get("model") or reward.get("kwargs", {}).get("path")
        for key, value in paths.items():
            if value is None or value == "Qwen/Qwen3-8B":  # configs/dpo.yaml, the tutorial's: a hub id
                continue
            written_by_a_stage = any(output in Path(value).parents for output in outputs)
            assert Path(value).exists() or written_by_a_stage, f"configs/{name}: {key}: {value} not found from the root"
            checked += 1
    assert checked >= 2 * (len(configs) - 1)  # a model and data in each config but the tutorial's
