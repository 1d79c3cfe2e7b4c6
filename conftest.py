"""Shared fixtures for every test folder (tests/ and each flux_plugins/<name>/tests/): the tiny offline
model, data files and config builders. Helper modules (fakes, raw_trl, resume_helpers, paths) live in
tests/, which pyproject puts on pytest's pythonpath."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Single-threaded torch makes CPU runs deterministic and keeps two test workers from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# Each test process (each `pytest -n` worker) gets its own datasets cache: no worker reads
# another's half-written Arrow files, and the suite never writes into the user's cache.
# Set before any test module imports datasets, which reads it once at import.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="flux-tests-datasets-")
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)

REPO = Path(__file__).resolve().parent


# Fixtures that load a model: a test using one is an end-to-end run, not a unit test.
MODEL_FIXTURES = frozenset({"tiny_model_dir"})


def pytest_collection_modifyitems(config, items):
    """Mark model-loading tests ``slow`` (``-m "not slow"`` runs the unit tests alone, in
    seconds), and skip ``@pytest.mark.gpu`` tests where no CUDA GPU is visible."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA GPU and torch sees none")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-init Qwen3-style model + tokenizer (built once per session)."""
    from flux_core.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def preferences_file(tmp_path_factory) -> Path:
    """64 synthetic preference pairs with a learnable chosen/rejected difference."""
    import sys

    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_pairs

    path = tmp_path_factory.mktemp("data") / "preferences.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in make_pairs(64, seed=0)))
    return path


@pytest.fixture
def dpo_config(tiny_model_dir, tmp_path):
    """Build a small DPO FluxConfig; keyword arguments override top-level keys."""
    from flux_core.config import FluxConfig

    def make(algorithm: dict | None = None, **overrides) -> FluxConfig:
        data = {
            "model_path": str(tiny_model_dir),
            "output_dir": str(tmp_path / "outputs"),
            "num_steps": 8,
            "batch_size": 8,
            "learning_rate": 5e-4,
            "max_length": 128,
            "algorithm": {"name": "dpo", "beta": 0.1, **(algorithm or {})},
        }
        data.update(overrides)
        return FluxConfig.from_dict(data)

    return make


@pytest.fixture
def register_plugin():
    """Register plugin objects for one test (then unregister), rebuilding the registry."""
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


@pytest.fixture
def preference_records(preferences_file) -> list[dict]:
    return [json.loads(line) for line in preferences_file.read_text().splitlines()]
