"""Bad input through the real ``flux`` command: one table row per mistake a user can make.

This file covers the "Faults and bad input" list of the project's measurements. Every
row runs ``flux`` (in this process through ``flux_core.cli.main``, or as a subprocess
when it needs a plugin of its own or a fresh process) and asserts what the user sees:
the exit status, that stderr is exactly one line with no traceback, and that the line
names the file, line, key or plugin concerned.

To add a row, append a :class:`Case` to ``CASES``. ``setup`` writes whatever the row
needs under the test's own ``tmp_path`` through a :class:`Workspace` (so rows are safe
under ``pytest -n auto``); ``{tmp}`` in ``argv``, ``expected`` and ``absent`` stands for
that directory. Most rows fail before any model loads; keep new ones that way where
the mistake allows it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux_core.config import FluxConfig


class Workspace:
    """A row's files, all under ``tmp``: configs, data, plugins and copies of the tiny model."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest):
        self.tmp = tmp
        self.env: dict[str, str] = {}
        self._request = request

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def model(self) -> Path:
        """The shared tiny model (read-only use: training from it)."""
        return self._request.getfixturevalue("tiny_model_dir")

    def model_copy(self, name: str = "checkpoint") -> Path:
        """A private copy of the tiny model, for rows that break it."""
        return Path(shutil.copytree(self.model(), self.tmp / name))

    def plugin(self, source: str, entry_point: str = "my-plugin") -> None:
        """Install ``source`` as an entry-point plugin named ``entry_point`` (for subprocess rows)."""
        site = self.tmp / "site"
        self.write("site/flux_bad_input_plugin.py", source)
        info = "site/flux_bad_input_plugin-0.1.dist-info"
        self.write(f"{info}/METADATA", "Metadata-Version: 2.1\nName: flux-bad-input-plugin\nVersion: 0.1\n")
        self.write(f"{info}/entry_points.txt", f"[flux]\n{entry_point} = flux_bad_input_plugin\n")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


@dataclass(frozen=True)
class Case:
    """One bad input and the single stderr line it must produce.

    Attributes:
        id: the pytest id.
        argv: arguments after ``flux``.
        exit_code: expected exit status (1 for flux errors, 2 for argparse usage errors).
        expected: substrings the stderr line must contain.
        setup: writes the row's files into the workspace.
        absent: substrings the stderr line must not contain.
        starts_with: how the line starts.
        subprocess: run ``python -m flux_core.cli`` in a fresh process (required with a plugin).
    """

    id: str
    argv: tuple[str, ...]
    exit_code: int
    expected: tuple[str, ...]
    setup: Callable[[Workspace], None] = lambda ws: None
    absent: tuple[str, ...] = ()
    starts_with: str = "flux: error: "
    subprocess: bool = False


# ------------------------------------------------------------------ setups

CONFIG = "{tmp}/cfg.yaml"
DPO = "model_path: {model}\noutput_dir: {tmp}/out\nnum_steps: 1\nbatch_size: 2\nmax_length: 64\n"


def config(body: str, model: str = "{tmp}/no-model") -> Callable[[Workspace], None]:
    """A setup writing ``cfg.yaml`` = ``body`` (``{model}``: the tiny model or a missing directory)."""

    def setup(ws: Workspace) -> None:
        model_path = str(ws.model()) if model == "tiny" else model.replace("{tmp}", str(ws.tmp))
        ws.write("cfg.yaml", body.replace("{model}", model_path).replace("{tmp}", str(ws.tmp)))

    return setup


def preferences(ws: Workspace) -> None:
    pair = {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No."}
    ws.write("prefs.jsonl", "".join(json.dumps(pair) + "\n" for _ in range(4)))


def missing_model(ws: Workspace) -> None:
    # learning_rate 5e-4 is a string to YAML: the run must get past config loading to the model.
    config(DPO + "learning_rate: 5e-4\nalgorithm: {name: dpo}\n")(ws)
    preferences(ws)


def dpo_run_with_plugin(source: str) -> Callable[[Workspace], None]:
    """A one-step DPO run on the tiny model with ``source`` installed as plugin 'my-plugin'."""

    def setup(ws: Workspace) -> None:
        config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws)
        preferences(ws)
        ws.plugin(source)

    return setup


def grpo_run_with_plugin(source: str, reward: str) -> Callable[[Workspace], None]:
    """A one-step GRPO run on the tiny model rewarded by ``reward`` from plugin 'my-plugin'."""

    def setup(ws: Workspace) -> None:
        body = (
            "model_path: {model}\noutput_dir: {tmp}/out\nnum_steps: 1\nbatch_size: 4\n"
            f"algorithm:\n  name: grpo\n  num_generations: 4\n  max_completion_length: 4\n"
            f"  rewards: [{{name: {reward}}}]\n"
        )
        config(body, model="tiny")(ws)
        ws.write("prompts.jsonl", "".join(json.dumps({"prompt": f"Count to {n}."}) + "\n" for n in range(4)))
        ws.plugin(source)

    return setup


def plugin_only(source: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        config(DPO + "algorithm: {name: dpo}\n")(ws)
        ws.plugin(source)

    return setup


def broken_checkpoint(breaks: Callable[[Path], None]) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        breaks(ws.model_copy())

    return setup


def without_tokenizer(checkpoint: Path) -> None:
    for file in checkpoint.glob("tokenizer*"):
        file.unlink()


def without_weights(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").unlink()


def truncated_weights(checkpoint: Path) -> None:
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])


RAISING_HOOK = """
from flux_core import hookimpl

@hookimpl
def register_losses(register):
    raise ValueError("boom while registering")
"""

DELIBERATE_FLUX_ERROR = """
from flux_core import hookimpl
from flux_core.errors import FluxError

@hookimpl
def register_losses(register):
    raise FluxError("my-plugin needs MY_PLUGIN_TOKEN set")
"""

RAISING_STEP_METRICS = """
from flux_core import hookimpl

@hookimpl
def step_metrics(step, metrics, config):
    raise ValueError("bad metric")
"""

ALWAYS_NONE_REWARD = """
from flux_core import hookimpl

def never(prompts, completions, **columns):
    return [None] * len(completions)

@hookimpl
def register_rewards(register):
    register("never", never)
"""


def resumable_checkpoints(damage: Callable[[Path], None]) -> Callable[[Workspace], None]:
    """A DPO run whose output_dir holds checkpoint-2 and checkpoint-4 (resume state included), and
    ``damage`` applied to checkpoint-4. A named checkpoint is checked before the model or the data load."""

    def setup(ws: Workspace) -> None:
        import io
        import zipfile

        from flux_core.run.layout import STATE_FILE, checkpoint_name

        config(DPO + "algorithm: {name: dpo}\n", model="{tmp}/model")(ws)
        (ws.tmp / "model").mkdir()
        for step in (2, 4):
            checkpoint = f"out/{checkpoint_name(step)}"
            ws.write(f"{checkpoint}/config.json", "{}")
            optimizer = io.BytesIO()
            with zipfile.ZipFile(optimizer, "w") as archive:  # torch.save's format, without importing torch
                archive.writestr("optimizer/data.pkl", b"\x80\x02}q\x00." * 64)
            ws.write(f"{checkpoint}/optimizer.pt", optimizer.getvalue())
            ws.write(f"{checkpoint}/{STATE_FILE}", json.dumps({"step": step, "resume_files": ["optimizer.pt"]}))
        damage(ws.tmp / "out" / checkpoint_name(4))

    return setup


def causal_lm_as_reward(algorithm: str) -> Callable[[Workspace], None]:
    """A GRPO or PPO config whose reward model is the tiny causal LM (not a sequence classifier)."""

    def setup(ws: Workspace) -> None:
        reward = f"rewards: [{{model: {ws.model()}}}]" if algorithm == "grpo" else f"reward_model: {ws.model()}"
        config(f"model_path: m\nalgorithm:\n  name: {algorithm}\n  {reward}\n")(ws)

    return setup


def sft_conversations(*roles: tuple[str, ...]) -> Callable[[Workspace], None]:
    """An SFT run on the tiny model whose conversations have the given roles, one row each."""

    def setup(ws: Workspace) -> None:
        config(DPO + "algorithm: {name: sft}\n", model="tiny")(ws)
        rows = [{"messages": [{"role": role, "content": f"turn {i}"} for i, role in enumerate(row)]} for row in roles]
        ws.write("chats.jsonl", "".join(json.dumps(row) + "\n" for row in rows))

    return setup


def lora_run(target_modules: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        config(DPO + f"algorithm: {{name: dpo}}\nlora: {{target_modules: {target_modules}}}\n", model="tiny")(ws)
        preferences(ws)

    return setup


def truncated_optimizer(checkpoint: Path) -> None:
    optimizer = checkpoint / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:300])


def nan_weight(checkpoint: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(checkpoint / "model.safetensors")
    weights["model.layers.0.mlp.down_proj.weight"][0, 0] = float("nan")
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})


# trl.x = 10**6 ones behind six anchors
SET_ALIAS_BOMB = "trl.x=[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
    f"&{name} [{', '.join([f'*{previous}'] * 10)}]" for previous, name in zip("abcde", "bcdef")
) + "]"


def alias_bomb(levels: int = 9) -> str:
    """A config whose ``trl`` block hides ``9**levels`` strings behind ``levels`` lines of aliases."""
    lines = ['  a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"  a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "model_path: m\nalgorithm: {name: dpo}\ntrl:\n" + "\n".join(lines) + "\n"


def sft_mixed_shapes(ws: Workspace) -> None:
    config(DPO + "algorithm: {name: sft}\n", model="{tmp}/model")(ws)
    (ws.tmp / "model").mkdir()  # the data is read before the model loads
    conversation = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    rows = [conversation, conversation, {"prompt": "Say hi.", "completion": "Hi"}, conversation]
    ws.write("sft.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def shards_with_one_bad(ws: Workspace) -> None:
    config(DPO + "algorithm: {name: dpo}\n", model="{tmp}/model")(ws)
    (ws.tmp / "model").mkdir()  # the data is read before the model loads
    pair = json.dumps({"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No."}) + "\n"
    ws.write("shards/part-0.jsonl", pair * 4)
    ws.write("shards/part-1.jsonl", pair + "\n" + json.dumps({"prompt": "Say hi.", "chosen": "Hi!"}) + "\n" + pair)
    ws.write("shards/part-2.jsonl", pair * 2)


def grpo_checkpoint(ws: Workspace) -> None:
    """A GRPO config (for flux eval's reward options) and a checkpoint directory; eval fails before loading it."""
    config("model_path: m\nalgorithm:\n  name: grpo\n  rewards: [{name: length_target, kwargs: {target: 5}}]\n")(ws)
    ws.write("checkpoint/config.json", "{}")
    ws.write("prompts.jsonl", json.dumps({"prompt": "Say hi."}) + "\n")


def metrics_with_bad_lines(ws: Workspace) -> None:
    rows = [json.dumps({"step": step, "loss": 1 / step}) for step in range(1, 7)]
    rows[2] = '{"loss": 0.5}'  # line 3: no step
    rows.insert(4, "garbage{")
    rows.append(rows[-1][:9])  # a last line cut off by a kill
    ws.write("out/metrics.jsonl", "\n".join(rows) + "\n")


# ------------------------------------------------------------------ the table

CASES = [
    # --- config files that cannot be read or parsed
    Case(
        "missing-config-file",
        ("train", "{tmp}/nope.yaml"),
        1,
        ("{tmp}/nope.yaml: config file not found",),
    ),
    Case(
        "invalid-yaml",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:3: invalid YAML",),
        setup=config("model_path: m\nalgorithm: [\n"),
    ),
    Case(
        "yaml-control-character",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:2: invalid YAML: unacceptable character #x0007",),
        setup=config("model_path: m\nalgorithm: {name: dpo}\x07\n"),
    ),
    Case(
        "non-utf8-config",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:2: not valid UTF-8 (byte 0xe9", "save the file as UTF-8"),
        setup=lambda ws: ws.write("cfg.yaml", b"model_path: m\noutput_dir: caf\xe9\nalgorithm: {name: dpo}\n"),
    ),
    Case(
        "duplicate-yaml-key",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: algorithm.beta: duplicate key (first set on line 5)",),
        setup=config(
            "model_path: m\nnum_steps: 3\nalgorithm:\n  name: dpo\n  beta: 0.1\n  loss: sigmoid\n  beta: 0.2\n"
        ),
    ),
    Case(
        "duplicate-top-level-key",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:3: num_steps: duplicate key (first set on line 2)",),
        setup=config("model_path: m\nnum_steps: 3\nnum_steps: 30\nalgorithm: {name: dpo}\n"),
    ),
    # --- values of the wrong key or type
    Case(
        "unknown-key-did-you-mean",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:4: algorithm.bta: unknown key (did you mean 'beta'?)",),
        setup=config("model_path: m\nalgorithm:\n  name: dpo\n  bta: 0.2\n"),
    ),
    Case(
        "set-bool-into-int",
        ("train", CONFIG, "--set", "num_steps=true"),
        1,
        ("--set 'num_steps=true': num_steps: expected an integer, not a boolean (true)",),
        setup=config("model_path: m\nnum_steps: 5\nalgorithm: {name: dpo}\n"),
    ),
    Case(
        "set-bool-into-float",
        ("train", CONFIG, "--set", "learning_rate=false"),
        1,
        ("--set 'learning_rate=false': learning_rate: expected a number, not a boolean (false)",),
        setup=config("model_path: m\nalgorithm: {name: dpo}\n"),
    ),
    Case(
        "yaml-bool-into-float",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:5: algorithm.beta: expected a number, not a boolean (true)",),
        setup=config("model_path: m\nlearning_rate: 5e-4\nalgorithm:\n  name: dpo\n  beta: true\n"),
    ),
    Case(
        "trl-wrong-type-set",
        ("train", CONFIG, "--set", "trl.weight_decay=abc"),
        1,
        ("--set 'trl.weight_decay=abc': trl.weight_decay: ", "DPOConfig.weight_decay takes float"),
        setup=config("model_path: m\nalgorithm: {name: dpo}\n"),
    ),
    Case(
        "trl-wrong-type-yaml",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:5: trl.max_grad_norm: ", "DPOConfig.max_grad_norm takes float"),
        setup=config("model_path: m\nalgorithm: {name: dpo}\ntrl:\n  warmup_steps: 2\n  max_grad_norm: high\n"),
    ),
    Case(
        "trl-bool-into-int",
        ("train", CONFIG, "--set", "trl.gradient_accumulation_steps=yes"),
        1,
        ("--set 'trl.gradient_accumulation_steps=yes': trl.gradient_accumulation_steps: expected an integer",),
        setup=config("model_path: m\nalgorithm: {name: dpo}\n"),
    ),
    # --- plugins that fail
    Case(
        "plugin-hook-raises",
        ("train", CONFIG),
        1,
        ("plugin 'my-plugin' hook register_losses failed: ValueError: boom while registering",),
        setup=plugin_only(RAISING_HOOK),
        subprocess=True,
    ),
    Case(
        "plugin-flux-error-passes-through",
        ("train", CONFIG),
        1,
        ("my-plugin needs MY_PLUGIN_TOKEN set",),
        absent=("hook register_losses failed",),
        setup=plugin_only(DELIBERATE_FLUX_ERROR),
        subprocess=True,
    ),
    Case(
        "plugin-step-metrics-raises-mid-run",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("plugin 'my-plugin' hook step_metrics failed: ValueError: bad metric",),
        setup=dpo_run_with_plugin(RAISING_STEP_METRICS),
        subprocess=True,
    ),
    Case(
        "reward-returns-only-none",
        ("train", CONFIG, "--data", "{tmp}/prompts.jsonl", "--no-progress"),
        1,
        ("reward 'never' returned None for all ", "completions of a batch"),
        setup=grpo_run_with_plugin(ALWAYS_NONE_REWARD, reward="never"),
        subprocess=True,
    ),
    # --- models and checkpoints
    Case(
        "missing-model-dir",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("model_path '{tmp}/no-model': directory not found",),
        setup=missing_model,
    ),
    Case(
        "generate-missing-checkpoint",
        ("generate", "{tmp}/nope", "Hi"),
        1,
        ("{tmp}/nope: checkpoint directory not found",),
    ),
    Case(
        "generate-missing-tokenizer",
        ("generate", "{tmp}/checkpoint", "Hi"),
        1,
        ("{tmp}/checkpoint: no tokenizer files",),
        setup=broken_checkpoint(without_tokenizer),
    ),
    Case(
        "generate-missing-weights",
        ("generate", "{tmp}/checkpoint", "Hi"),
        1,
        ("{tmp}/checkpoint: no model weights (model.safetensors or pytorch_model.bin)",),
        setup=broken_checkpoint(without_weights),
    ),
    Case(
        "generate-truncated-weights",
        ("generate", "{tmp}/checkpoint", "Hi"),
        1,
        ("{tmp}/checkpoint/model.safetensors: truncated or corrupt (100000 bytes",),
        setup=broken_checkpoint(truncated_weights),
    ),
    Case(
        "generate-negative-temperature",
        ("generate", "{tmp}/checkpoint", "Hi", "--temperature", "-1"),
        2,
        ("argument --temperature: must be 0 (greedy) or a positive number, not -1", "flux generate --help"),
    ),
    Case(
        "generate-zero-max-new-tokens",
        ("generate", "{tmp}/checkpoint", "Hi", "--max-new-tokens", "0"),
        2,
        ("argument --max-new-tokens: must be at least 1, not 0",),
    ),
    # --- training data that cannot be trained on (flux_core/data*.py)
    Case(
        "data-not-utf8",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/prefs.jsonl:2: 'prompt' is not UTF-8 text; save the file as UTF-8",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws),
            ws.write(
                "prefs.jsonl",
                b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}\n',
            ),
        ),
    ),
    Case(
        "data-invalid-json-line",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/prefs.jsonl:2: invalid JSON: Expecting ',' delimiter (column 30)",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws),
            ws.write("prefs.jsonl", '{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"\n'),
        ),
    ),
    Case(
        "data-key-changes-type",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/prefs.jsonl:3: 'chosen' must be a string or a list of chat messages, not int",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws),
            ws.write(
                "prefs.jsonl",
                '{"prompt": "p", "chosen": "c", "rejected": "r"}\n' * 2
                + '{"prompt": "p", "chosen": 5, "rejected": "r"}\n',
            ),
        ),
    ),
    Case(
        "data-missing-key-in-parquet",
        ("train", CONFIG),
        1,
        ("{tmp}/prefs.parquet row 2: missing key 'rejected' (each example needs prompt, chosen, rejected)",),
        setup=lambda ws: (
            config(DPO + "data: {tmp}/prefs.parquet\nalgorithm: {name: dpo}\n", model="tiny")(ws),
            __import__("datasets")
            .Dataset.from_list(
                [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c", "rejected": None}]
            )
            .to_parquet(str(ws.tmp / "prefs.parquet")),
        ),
    ),
    Case(
        "data-column-mapping-names-a-missing-column",
        ("train", CONFIG),
        1,
        ("data.columns.prompt: {tmp}/prefs.jsonl has no column 'question' (columns: prompt, chosen, rejected)",),
        setup=lambda ws: (
            config(
                DPO + "data: {path: {tmp}/prefs.jsonl, columns: {prompt: question}}\nalgorithm: {name: dpo}\n",
                model="tiny",
            )(ws),
            preferences(ws),
        ),
    ),
    Case(
        "data-hub-id-offline",
        ("train", CONFIG, "--data", "trl-lib/no-such-dataset"),
        1,
        ("cannot load dataset 'trl-lib/no-such-dataset' from the hub (offline?): download it or pass a local path",),
        setup=config(DPO + "algorithm: {name: dpo}\n", model="tiny"),
    ),
    Case(
        "data-missing-file",
        ("train", CONFIG, "--data", "{tmp}/nope.parquet"),
        1,
        ("{tmp}/nope.parquet: file not found",),
        setup=config(DPO + "algorithm: {name: dpo}\n", model="tiny"),
    ),
    # --- runs that must not go on (issue: runs that survive)
    Case(
        "learning-rate-inf-is-refused-when-the-config-loads",
        ("train", CONFIG, "--set", "learning_rate=.inf"),
        1,
        ("--set 'learning_rate=.inf': learning_rate: inf is not a finite number",),
        setup=config(DPO + "algorithm: {name: dpo}\n"),
    ),
    Case(
        "output-dir-holds-a-previous-run",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/out holds a previous run", "--resume", "--overwrite"),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws),
            preferences(ws),
            ws.write("out/metrics.jsonl", '{"step": 1, "loss": 0.69}\n'),
        ),
    ),
    Case(
        "trl-resume-from-checkpoint-points-to-resume",
        ("train", CONFIG),
        1,
        ("trl.resume_from_checkpoint", "--resume"),
        setup=config("model_path: m\nalgorithm: {name: dpo}\ntrl: {resume_from_checkpoint: out/checkpoint-2}\n"),
    ),
    Case(
        "max-length-too-small-for-any-example",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--set", "max_length=1", "--no-progress"),
        1,
        ("max_length 1 is too small: the prompt alone fills it in every pair of data; raise max_length",),
        setup=lambda ws: (config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws), preferences(ws)),
    ),
    # --- flux-sft and flux-rm data
    Case(
        "sft-row-without-completion",
        ("train", CONFIG, "--data", "{tmp}/sft.jsonl"),
        1,
        ("{tmp}/sft.jsonl:2: missing key 'completion' (each example needs messages, or prompt and completion, or text)",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: sft}\n", model="tiny")(ws),
            ws.write("sft.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n'),
        ),
    ),
    Case(
        "sft-messages-not-a-conversation",
        ("train", CONFIG, "--data", "{tmp}/sft.jsonl"),
        1,
        ("{tmp}/sft.jsonl:1: 'messages' must be a list of chat messages",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: sft}\n", model="tiny")(ws),
            ws.write("sft.jsonl", '{"messages": "hello"}\n{"messages": "again"}\n'),
        ),
    ),
    Case(
        "sft-trl-block-sets-a-flux-owned-field",
        ("train", CONFIG),
        1,
        ("trl.packing", "is set by Flux: use algorithm.packing"),
        setup=config("model_path: m\nalgorithm: {name: sft}\ntrl: {packing: true}\n"),
    ),
    Case(
        "reward-model-pair-without-rejected",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/prefs.jsonl:3: missing key 'rejected'",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: reward_model}\n", model="tiny")(ws),
            ws.write(
                "prefs.jsonl",
                '{"prompt": "a", "chosen": "b", "rejected": "c"}\n' * 2 + '{"prompt": "a", "chosen": "b"}\n',
            ),
        ),
    ),
    Case(
        "reward-model-every-pair-over-max-length",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--set", "max_length=4", "--no-progress"),
        1,
        ("data: all 4 pairs are longer than max_length 4 tokens", "raise max_length"),
        setup=lambda ws: (config(DPO + "algorithm: {name: reward_model}\n", model="tiny")(ws), preferences(ws)),
    ),
    # --- issue #25: silent mistakes and misleading messages, now one line naming the key (config load)
    Case(
        "trl-gradient-accumulation-steps-zero",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: trl.gradient_accumulation_steps: 0 is too small: it must be at least 1",),
        setup=config(DPO + "algorithm: {name: dpo}\ntrl: {gradient_accumulation_steps: 0}\n"),
    ),
    Case(
        "trl-warmup-steps-negative",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: trl.warmup_steps: -5 is too small: it must be at least 0",),
        setup=config(DPO + "algorithm: {name: dpo}\ntrl: {warmup_steps: -5}\n"),
    ),
    Case(
        "trl-unknown-lr-scheduler-type",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: trl.lr_scheduler_type: unknown value 'cosinee' (did you mean 'cosine'?); one of: linear",),
        setup=config(DPO + "algorithm: {name: dpo}\ntrl: {lr_scheduler_type: cosinee}\n"),
    ),
    Case(
        "empty-output-dir",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:2: output_dir: String should have at least 1 character",),
        setup=config('model_path: m\noutput_dir: ""\nalgorithm: {name: dpo}\n'),
    ),
    Case(
        "empty-model-path",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:1: model_path: String should have at least 1 character",),
        setup=config('model_path: ""\nalgorithm: {name: dpo}\n'),
    ),
    Case(
        "negative-seed",
        ("train", CONFIG, "--set", "seed=-1"),
        1,
        ("--set 'seed=-1': seed: Input should be greater than or equal to 0",),
        setup=config(DPO + "algorithm: {name: dpo}\n"),
    ),
    Case(
        "seed-beyond-32-bits",
        ("train", CONFIG, "--set", f"seed={2**70}"),
        1,
        (f"--set 'seed={2**70}': seed: Input should be less than 4294967296",),
        setup=config(DPO + "algorithm: {name: dpo}\n"),
    ),
    Case(
        "set-makes-an-unknown-nested-section",
        ("train", CONFIG, "--set", "foo.bar.baz=1"),
        1,
        ("--set 'foo.bar.baz=1': foo: unknown key",),
        setup=config(DPO + "algorithm: {name: dpo}\n"),
        absent=(f"{CONFIG}",),
    ),
    Case(
        "set-indexes-a-list-the-config-does-not-hold",
        ("train", CONFIG, "--set", "lora.target_modules.0=q_proj"),
        1,
        (
            "--set 'lora.target_modules.0=q_proj': lora.target_modules holds no list to index; set the whole "
            "list: --set 'lora.target_modules=[...]'",
        ),
        setup=config(DPO + "algorithm: {name: dpo}\n"),
    ),
    Case(
        "push-to-hub-malformed-repo-id",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: push_to_hub: 'not a repo id!!' is not a hub repo id (", "give user/name"),
        setup=config(DPO + "algorithm: {name: dpo}\npush_to_hub: 'not a repo id!!'\n"),
    ),
    Case(
        "dpo-beta-infinite",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:6: algorithm.beta: inf is not a finite number; give a finite value",),
        setup=config(DPO + "algorithm: {name: dpo, beta: .inf}\n"),
    ),
    Case(
        "grpo-temperature-infinite",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:4: algorithm.temperature: inf is not a finite number",),
        setup=config(
            "model_path: m\nalgorithm:\n  name: grpo\n  temperature: .inf\n  rewards: [{name: exact_match}]\n"
        ),
    ),
    Case(
        "nan-in-a-trl-value",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:7: trl.weight_decay: nan is not a finite number",),
        setup=config(DPO + "algorithm: {name: dpo}\ntrl: {weight_decay: .nan}\n"),
    ),
    Case(
        "dpo-loss-kwargs-misspelled",
        ("train", CONFIG),
        1,
        (
            f"{CONFIG}:6: algorithm.loss_kwargs.tua: not an argument of loss 'discopop' (did you mean 'tau'?); "
            "it takes tau",
        ),
        setup=config(DPO + "algorithm: {name: dpo, loss: discopop, loss_kwargs: {tua: 0.5}}\n"),
    ),
    Case(
        "dpo-loss-kwargs-for-a-loss-without-any",
        ("train", CONFIG),
        1,
        ("algorithm.loss_kwargs.margin: not an argument of loss 'sigmoid'; it takes no loss_kwargs",),
        setup=config(DPO + "algorithm: {name: dpo, loss_kwargs: {margin: 0.5}}\n"),
    ),
    Case(
        "dpo-loss-kwargs-of-the-wrong-type",
        ("train", CONFIG),
        1,
        ("algorithm.loss_kwargs.tau: Input should be a valid number", "loss 'discopop' takes tau: float"),
        setup=config(DPO + "algorithm: {name: dpo, loss: discopop, loss_kwargs: {tau: small}}\n"),
    ),
    Case(
        "ppo-loss-kwargs-misspelled",
        ("train", CONFIG),
        1,
        ("algorithm.loss_kwargs.cliprang: not an argument of loss 'clipped' (did you mean algorithm.cliprange?)",),
        setup=config(
            "model_path: m\nalgorithm:\n  name: ppo\n  loss_kwargs: {cliprang: 0.1}\n  rewards: [{name: exact_match}]\n"
        ),
    ),
    Case(
        "grpo-reward-model-is-a-causal-lm",
        ("train", CONFIG),
        1,
        ("algorithm.rewards.0: reward model '", "holds a Qwen3ForCausalLM, not a sequence classifier"),
        setup=causal_lm_as_reward("grpo"),
    ),
    Case(
        "ppo-reward-model-is-a-causal-lm",
        ("train", CONFIG),
        1,
        ("reward model '", "holds a Qwen3ForCausalLM, not a sequence classifier"),
        setup=causal_lm_as_reward("ppo"),
    ),
    Case(
        "tiny-model-with-no-layers",
        ("tiny-model", "{tmp}/tiny", "--layers", "0"),
        2,
        ("argument --layers: must be at least 1, not 0",),
    ),
    # --- issue #25: caught once the data is read, before the model loads
    Case(
        "lora-target-module-misspelled-beside-a-right-one",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("lora.target_modules: 'v_projj' matches no module of", "(did you mean 'v_proj'?)"),
        setup=lora_run("[q_proj, v_projj]"),
    ),
    Case(
        "lora-target-modules-regex-matching-nothing",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("lora.target_modules: the regex '.*q_projj' matches no module name in full",),
        setup=lora_run('".*q_projj"'),
    ),
    Case(
        "sft-no-conversation-has-an-assistant-turn",
        ("train", CONFIG, "--data", "{tmp}/chats.jsonl", "--no-progress"),
        1,
        ("{tmp}/chats.jsonl: no conversation has an assistant turn (2 rows), so SFT has no reply to learn",),
        setup=sft_conversations(("user",), ("system", "user")),
    ),
    # --- issue #25: the file, line or key a misleading error used to hide
    Case(
        "resume-named-checkpoint-with-a-truncated-file",
        ("train", CONFIG, "--data", "{tmp}/nope.jsonl", "--resume", "{tmp}/out/checkpoint-4", "--no-progress"),
        1,
        (
            "--resume: {tmp}/out/checkpoint-4/optimizer.pt: truncated or corrupt (300 bytes",
            "; resume from {tmp}/out/checkpoint-2 instead",
        ),
        setup=resumable_checkpoints(truncated_optimizer),
    ),
    Case(
        "yaml-alias-bomb",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:9: invalid YAML: its aliases expand to more than 100,000 values (an alias bomb?)",),
        setup=config(alias_bomb()),
    ),
    Case(
        "set-value-alias-bomb",  # one line of flow YAML can hold a bomb too
        ("train", CONFIG, "--set", SET_ALIAS_BOMB),
        1,
        (f"--set '{SET_ALIAS_BOMB}': the value is not valid YAML: its aliases expand to more than 100,000 values",),
        setup=config("model_path: m\nalgorithm: {name: dpo}\n"),
    ),
    Case(
        "yaml-alias-inside-its-own-anchor",
        ("train", CONFIG),
        1,
        (f"{CONFIG}:3: invalid YAML: an alias refers to its own anchor",),
        setup=config("model_path: m\nalgorithm: {name: dpo}\ntrl: &loop {again: *loop}\n"),
    ),
    Case(
        "data-glob-names-the-bad-shard-and-its-line",
        ("train", CONFIG, "--data", "{tmp}/shards/part-*.jsonl"),
        1,
        ("{tmp}/shards/part-1.jsonl:3: missing key 'rejected'",),
        setup=shards_with_one_bad,
    ),
    Case(
        "sft-mixed-shapes-name-the-row-that-differs",
        ("train", CONFIG, "--data", "{tmp}/sft.jsonl"),
        1,
        ("{tmp}/sft.jsonl:3: this example is prompt and completion but the first one ({tmp}/sft.jsonl:1) is messages",),
        setup=sft_mixed_shapes,
    ),
    Case(
        "model-with-a-nan-weight",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("{tmp}/checkpoint/model.safetensors: weight model.layers.0.mlp.down_proj.weight holds NaN or infinity",),
        absent=("loss is nan",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: dpo}\n", model="{tmp}/checkpoint")(ws),
            preferences(ws),
            nan_weight(ws.model_copy()),
        ),
    ),
    Case(
        "reward-model-from-a-model-with-a-nan-weight",  # loaded as a sequence classifier, not by load_model
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--no-progress"),
        1,
        ("{tmp}/checkpoint/model.safetensors: weight model.layers.0.mlp.down_proj.weight holds NaN or infinity",),
        absent=("loss is nan",),
        setup=lambda ws: (
            config(DPO + "algorithm: {name: reward_model}\n", model="{tmp}/checkpoint")(ws),
            preferences(ws),
            nan_weight(ws.model_copy()),
        ),
    ),
    Case(
        "generate-from-a-nan-checkpoint",
        ("generate", "{tmp}/checkpoint", "Hi"),
        1,
        ("{tmp}/checkpoint/model.safetensors: weight model.layers.0.mlp.down_proj.weight holds NaN or infinity",),
        setup=broken_checkpoint(nan_weight),
    ),
    Case(
        "generate-empty-raw-prompt",
        ("generate", "{tmp}/checkpoint", "", "--raw"),
        1,
        ("the prompt is empty: give the text (or chat messages) to answer",),
        setup=broken_checkpoint(lambda checkpoint: None),
    ),
    Case(
        "eval-missing-checkpoint",
        ("eval", "{tmp}/nope", "--data", "{tmp}/prefs.jsonl"),
        1,
        ("{tmp}/nope: checkpoint directory not found",),
        absent=("--config",),
    ),
    Case(
        "eval-missing-config-file",
        ("eval", "{tmp}/checkpoint", "--config", "{tmp}/nope.yaml", "--data", "{tmp}/prompts.jsonl"),
        1,
        ("{tmp}/nope.yaml: config file not found",),
        setup=grpo_checkpoint,
    ),
    Case(
        "eval-unknown-reward",
        ("eval", "{tmp}/checkpoint", "--config", CONFIG, "--reward", "nope", "--data", "{tmp}/prompts.jsonl"),
        1,
        ("--reward nope: unknown reward 'nope'; registered: ",),
        absent=("ValidationError", "pydantic"),
        setup=grpo_checkpoint,
    ),
    Case(
        "eval-reward-that-needs-settings",
        ("eval", "{tmp}/checkpoint", "--config", CONFIG, "--reward", "length_target", "--data", "{tmp}/prompts.jsonl"),
        1,
        ("--reward length_target: reward 'length_target' needs kwargs: {target: ...}", "algorithm.rewards"),
        absent=("ValidationError",),
        setup=grpo_checkpoint,
    ),
    Case(
        "plot-skips-unreadable-metrics-lines",
        ("plot", "{tmp}/out"),
        0,
        ("{tmp}/out/metrics.jsonl:3: not a JSON object with an integer 'step' (and 2 more lines); skipped",),
        starts_with="flux: warning: ",
        setup=metrics_with_bad_lines,
    ),
]


def run_flux(case: Case, ws: Workspace, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``flux`` with the row's arguments; return (exit status, stderr)."""
    argv = [arg.replace("{tmp}", str(ws.tmp)) for arg in case.argv]
    if case.subprocess:
        env = {key: value for key, value in os.environ.items() if key != "FLUX_LOAD_PLUGINS"}
        env.update(ws.env)
        process = subprocess.run(
            [sys.executable, "-m", "flux_core.cli", *argv],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        return process.returncode, process.stderr
    assert not ws.env, f"row {case.id} installs a plugin: it needs subprocess=True"
    from flux_core.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_naming_what_is_wrong(case: Case, tmp_path, request, capsys):
    ws = Workspace(tmp_path, request)
    case.setup(ws)
    code, stderr = run_flux(case, ws, capsys)

    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    line = lines[0]
    assert line.startswith(case.starts_with), line
    for text in case.expected:
        assert text.replace("{tmp}", str(tmp_path)) in line
    for text in case.absent:
        assert text.replace("{tmp}", str(tmp_path)) not in line
    assert code == case.exit_code, line


def test_numeric_strings_and_valid_trl_values_still_load(tmp_path):
    """The stricter checks reject nothing that worked: YAML's 5e-4 (a string) and real TRL values."""
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model_path: m\nlearning_rate: 5e-4\nalgorithm: {name: dpo, beta: 1}\n"
        "gradient_checkpointing: false\n"
        "trl:\n  warmup_steps: 2\n  weight_decay: 1e-2\n  lr_scheduler_type: cosine\n"
        "  gradient_checkpointing_kwargs: {use_reentrant: false}\n  pad_to_multiple_of: 8\n  hub_model_id: 2024\n"
    )
    config = FluxConfig.from_yaml(path, overrides=["num_steps=3", "trl.max_grad_norm=0.5"])
    assert (config.learning_rate, config.algorithm.beta, config.num_steps) == (5e-4, 1.0, 3)
    assert config.gradient_checkpointing is False
    assert config.trl["weight_decay"] == 0.01  # YAML's string '1e-2' reaches TRL as a number
    assert config.trl["warmup_steps"] == 2 and config.trl["lr_scheduler_type"] == "cosine"
    assert config.trl["max_grad_norm"] == 0.5


def test_every_default_of_the_trl_configs_passes_the_type_check():
    """TRL's own defaults fit TRL's own annotations as Flux reads them (no valid value rejected)."""
    import dataclasses

    from trl import DPOConfig, GRPOConfig

    from flux_core.config_checks import checked_trl_value

    rejected = []
    for trl_class in (DPOConfig, GRPOConfig):
        for trl_field in dataclasses.fields(trl_class):
            if trl_field.default is not dataclasses.MISSING:
                value = trl_field.default
            elif trl_field.default_factory is not dataclasses.MISSING:
                value = trl_field.default_factory()
            else:
                continue
            try:
                checked_trl_value(trl_class, trl_field.name, value)
            except ValueError as error:
                rejected.append(f"{trl_class.__name__}.{trl_field.name}={value!r}: {error}")
    assert rejected == []
