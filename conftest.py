"""Shared fixtures for every test folder (tests/ and each flux_plugins/<name>/tests/). The tiny offline model,
data files, ``run_flux``, ``flux_cli`` and ``register_plugin`` come from Flux's test kit (flux_core.testing.plugin,
which flux-train's ``pytest11`` entry point registers for any test suite); this file adds the repository's own.
Helper modules (fakes, raw_trl, resume_helpers, paths) live in tests/, which pyproject puts on pytest's pythonpath."""

from __future__ import annotations

import atexit
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

# The test kit's entry point has this module's name, so pytest registers it once whichever way it comes: from
# the entry point, or from here in a checkout whose installed metadata predates it (`make install` refreshes it).
pytest_plugins = ["flux_core.testing.plugin"]


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.gpu`` tests where no CUDA GPU is visible (the kit marks model-loading tests ``slow``)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA GPU and torch sees none")
    for item in gpu_tests:
        item.add_marker(skip)


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


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The tiny model's tokenizer as Flux loads it (tests of rollout backends and servers)."""
    from flux_core.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def no_backoff(monkeypatch):
    """Rollout-server retries without the backoff sleeps (mock servers answer at once)."""
    from flux_core.online import server_pool

    monkeypatch.setattr(server_pool, "BACKOFF_SECONDS", 0.0)
