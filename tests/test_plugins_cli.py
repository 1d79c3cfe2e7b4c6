"""Plugins load from entry points, broken ones are skipped by name, and the CLI speaks in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FLUX = str(Path(sys.executable).with_name("flux"))


def run(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TQDM_DISABLE", None)  # the CLI's progress bar is part of what is tested
    return subprocess.run([FLUX, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


def make_broken_plugin(root: Path) -> Path:
    """A distribution whose entry point raises on import."""
    dist = root / "flux_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: flux-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[flux]\nbroken = flux_broken\n")
    (root / "flux_broken.py").write_text("raise RuntimeError('boom at import')\n")
    return root


def tiny_config(tmp_path, tiny_model_dir, **extra) -> Path:
    path = tmp_path / "config.yaml"
    lines = [
        f"model_path: {tiny_model_dir}",
        f"output_dir: {tmp_path / 'out'}",
        "num_steps: 4",
        "batch_size: 4",
        "learning_rate: 5.0e-4",
        "max_length: 96",
        "algorithm:",
        "  name: dpo",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_help_does_not_import_torch():
    code = "import sys; from flux_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, 'trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False")
    code = "import sys, flux; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_help_points_at_flux_plugins_for_the_algorithms_instead_of_a_stale_list():
    code = (
        "import sys; from flux_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('plugins loaded:', 'flux_core.registry' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "`flux plugins` lists the installed ones" in " ".join(out.split())
    assert out.strip().endswith("plugins loaded: False")  # loading them would make --help 4-5x slower


def test_flux_plugins_lists_plugins_versions_algorithms_and_losses():
    result = run("plugins")
    assert result.returncode == 0, result.stderr
    assert "dpo (flux-dpo 0.1.0)" in result.stdout
    assert "dpo: Direct Preference Optimization" in result.stdout
    for loss in ("sigmoid", "ipo", "hinge", "robust", "sppo_hard"):
        assert loss in result.stdout


def test_excluding_the_dpo_plugin_names_the_package_to_install(tmp_path, tiny_model_dir, preferences_file):
    config = tiny_config(tmp_path, tiny_model_dir)
    result = run("train", str(config), "--data", str(preferences_file), env={"FLUX_LOAD_PLUGINS": ""})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"flux: error: {config}:8: algorithm.name: algorithm 'dpo' is not installed: pip install flux-dpo"
    )
    assert "Traceback" not in result.stderr


def test_a_plugin_that_raises_on_import_is_reported_and_skipped(tmp_path, tiny_model_dir, preferences_file):
    env = {"PYTHONPATH": str(make_broken_plugin(tmp_path / "site"))}
    listing = run("plugins", env=env)
    assert listing.returncode == 0
    assert (
        "plugin 'broken' (flux-broken) failed to load and was skipped: RuntimeError: boom at import" in listing.stderr
    )
    assert "broken (flux-broken): FAILED TO LOAD" in listing.stdout
    assert "dpo (flux-dpo 0.1.0)" in listing.stdout  # the others still work

    train = run(
        "train", str(tiny_config(tmp_path, tiny_model_dir)), "--data", str(preferences_file), "--no-progress", env=env
    )
    assert train.returncode == 0, train.stderr
    assert "trained 4 steps" in train.stdout


def test_train_then_generate_from_the_command_line(tmp_path, tiny_model_dir, preferences_file):
    config = tiny_config(tmp_path, tiny_model_dir)
    result = run(
        "train", str(config), "--data", str(preferences_file), "--set", "algorithm.beta=0.2", "--set", "num_steps=3"
    )
    assert result.returncode == 0, result.stderr
    assert "trained 3 steps" in result.stdout
    assert "reward_margin=" in result.stderr  # the progress bar shows step, loss and reward margin
    saved = (tmp_path / "out" / "final" / "flux_config.yaml").read_text()
    assert "beta: 0.2" in saved

    generated = run("generate", str(tmp_path / "out" / "final"), "Explain machine learning.", "--max-new-tokens", "8")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.strip()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "nope.yaml"], "flux: error: nope.yaml: config file not found"),
        (["generate", "/no/such/checkpoint", "hi"], "flux: error: /no/such/checkpoint: checkpoint directory not found"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, expected):
    result = run(*args)
    assert result.returncode == 1
    assert result.stderr.strip() == expected


def test_bad_data_line_is_one_line(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"\n')
    result = run("train", str(tiny_config(tmp_path, tiny_model_dir)), "--data", str(data))
    assert result.returncode == 1
    assert result.stderr.strip() == f"flux: error: {data}:2: invalid JSON: Expecting ',' delimiter (column 30)"
    debug = run("--debug", "train", str(tiny_config(tmp_path, tiny_model_dir)), "--data", str(data))
    assert "Traceback" in debug.stderr


@pytest.mark.slow
def test_tiny_model_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert run("tiny-model", str(tmp_path / name)).returncode == 0
    for file in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
