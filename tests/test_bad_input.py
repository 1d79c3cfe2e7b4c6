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
        "learning-rate-inf-stops-before-the-first-optimizer-step",
        ("train", CONFIG, "--data", "{tmp}/prefs.jsonl", "--set", "learning_rate=.inf", "--no-progress"),
        1,
        ("step 1: learning_rate is inf",),
        setup=lambda ws: (config(DPO + "algorithm: {name: dpo}\n", model="tiny")(ws), preferences(ws)),
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
