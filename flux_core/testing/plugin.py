"""Flux's pytest plugin: the fixtures a plugin's tests need, in any test suite, with no conftest.py.

flux-train registers this module with pytest through a ``pytest11`` entry point named after it, so
installing flux-train is enough; a conftest.py that lists it in ``pytest_plugins`` (as this repository's
does, for a checkout whose installed metadata predates the entry point) gets the same registration, not a
second one. A test that uses ``tiny_model_dir`` (``run_flux`` does) loads a model, so it is marked ``slow``:
``pytest -m "not slow"`` runs the unit tests alone.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flux_core.testing import runs
from flux_core.testing.data import preference_pairs, prompt_rows
from flux_core.testing.tiny_model import build_tiny_model

# Fixtures that load a model: a test using one (directly or through another fixture) is an end-to-end run.
MODEL_FIXTURES = frozenset({"tiny_model_dir"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs (training, subprocesses); deselect with -m 'not slow'")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark model-loading tests ``slow``."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Qwen3-style model + tokenizer (built once per session, offline, in about a second)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def preferences_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic preference pairs (JSONL) with a learnable chosen/rejected difference."""
    path = tmp_path_factory.mktemp("data") / "preferences.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in preference_pairs(64, seed=0)))
    return path


@pytest.fixture
def preference_records(preferences_file: Path) -> list[dict]:
    """The pairs of ``preferences_file`` as a list of dicts (``prompt``, ``chosen``, ``rejected``)."""
    return [json.loads(line) for line in preferences_file.read_text().splitlines()]


@pytest.fixture
def prompt_records() -> list[dict]:
    """64 synthetic prompts for online algorithms (``prompt`` plus a ``topic`` column rewards can read)."""
    return prompt_rows(64, seed=0)


@pytest.fixture
def run_flux(tiny_model_dir: Path, tmp_path: Path):
    """``run_flux(config_dict, data=None, **fit_kwargs) -> FitResult``: a short fp32 run of the tiny model
    (see ``flux_core.testing.runs.TINY_RUN``), each call in its own output_dir under ``tmp_path``; the dict
    overrides any default, ``algorithm`` included."""
    numbers = itertools.count()

    def run(config: dict, data=None, **fit_kwargs):
        where = {"model_path": str(tiny_model_dir), "output_dir": str(tmp_path / f"run-{next(numbers)}")}
        return runs.run_flux({**where, **config}, data, **fit_kwargs)

    return run


@pytest.fixture
def flux_cli(tmp_path: Path):
    """``flux_cli(*args, cwd=tmp_path) -> CompletedProcess``: the ``flux`` command in a subprocess, as a user runs
    it (this Python; stdout and stderr captured as text; the exit status is not checked)."""

    def flux(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "flux_core.cli", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd or tmp_path, timeout=600, check=False)

    return flux


@pytest.fixture
def register_plugin():
    """``register_plugin(plugin, name=None)``: register a plugin object for one test (unregistered after it),
    rebuilding the registry, as if its package were installed."""
    from flux_core.plugins import get_plugin_manager
    from flux_core.registry import reset_registry

    manager = get_plugin_manager()
    registered = []

    def register(plugin, name: str | None = None):
        registered.append(manager.register(plugin, name=name))
        reset_registry()
        return plugin

    yield register
    for name in registered:
        manager.unregister(name=name)
    reset_registry()
