"""The run's layout on disk: the name of every file and folder a Flux run writes.

This is the one module that spells those names; everything else imports them from here
(plugins through ``flux_core``), so renaming one is a one-line change and
``tests/run/test_layout.py`` keeps it that way. Names of files that transformers,
peft or accelerate choose themselves (``config.json``, ``model.safetensors``,
``optimizer.pt``...) are theirs and not listed, except ``trainer_state.json``, which
Flux writes by name.

``output_dir/``:

* ``.flux.lock`` (:data:`LOCK_FILE`): the run lock (:mod:`flux_core.run.directory`);
* ``metrics.jsonl`` (:data:`METRICS_FILE`): one JSON line per step;
* ``metrics.png`` (:data:`PLOT_FILE`): the picture of ``flux plot`` and ``flux train``;
* ``checkpoint-N/`` (:func:`checkpoint_name`, :func:`checkpoint_step`), ``best/``
  (:data:`BEST_DIR`) and ``final/`` (:data:`FINAL_DIR`): the checkpoints;
* ``runs/<run_name>/`` (:data:`TRACKER_DIR`): the run's TensorBoard logs, continued by ``--resume``;
  ``runs/tracker_ids.json`` (:data:`TRACKER_IDS_FILE`): the wandb and MLflow run ids ``--resume`` continues;
* ``sglang_weights/`` (:data:`SGLANG_WEIGHTS_DIR`): the default ``sglang.weights_dir``;
* ``.flux-cache/`` (:data:`CACHE_DIR`): DPO's reference log-probs
  (:func:`reference_cache_file`), kept across runs;
* ``.NAME.tmp-PID`` (:func:`staged_path`) and ``.NAME.old-PID`` (:func:`aside_path`):
  an entry being written, and the previous one set aside while it is replaced
  (:data:`LEFTOVER_NAME` matches both).

A checkpoint directory, besides the model's own files:

* ``flux_config.yaml`` (:data:`CONFIG_FILE`), ``flux_checkpoint.json`` (:data:`META_FILE`),
  ``README.md`` (:data:`CARD_FILE`, the model card), ``adapter/`` (:data:`ADAPTER_DIR`,
  LoRA runs), and ``eval.json`` (:data:`EVAL_FILE`) once ``flux eval`` scored it;
* ``checkpoint-N/`` only, to resume from: ``flux_state.json`` (:data:`STATE_FILE`; its
  ``training_data`` entry, :data:`DATA_STATE_KEY`, identifies the training data),
  ``metrics.jsonl`` (:data:`HISTORY_FILE`), ``trainer_state.json``
  (:data:`TRAINER_STATE_FILE`) and transformers' other resume files for TRL-wrapped
  algorithms, ``ppo_state/`` (:data:`PPO_STATE_DIR`, holding :data:`PPO_STATE_FILE`
  beside accelerate's files) for PPO.

Scratch directories outside the run (``flux eval``'s throwaway trainer output) start
with :data:`EVAL_SCRATCH_PREFIX`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# ---------------------------------------------------------------------- output_dir

LOCK_FILE = ".flux.lock"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_NAME = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")
BEST_DIR = "best"
FINAL_DIR = "final"
TRACKER_DIR = "runs"
TRACKER_IDS_FILE = "tracker_ids.json"
SGLANG_WEIGHTS_DIR = "sglang_weights"
CACHE_DIR = ".flux-cache"
REFERENCE_CACHE_PREFIX = "ref-logps-"

# `.NAME.tmp-PID` (being written) and `.NAME.old-PID` (the previous NAME, set aside).
STAGED_TAG = "tmp"
ASIDE_TAG = "old"
LEFTOVER_NAME = re.compile(rf"^\.(?P<name>.+)\.(?P<kind>{STAGED_TAG}|{ASIDE_TAG})-(?P<pid>\d+)$")

# ---------------------------------------------------------------------- a checkpoint directory

CONFIG_FILE = "flux_config.yaml"
META_FILE = "flux_checkpoint.json"
CARD_FILE = "README.md"
ADAPTER_DIR = "adapter"
EVAL_FILE = "eval.json"

# resume state, in checkpoint-N only
STATE_FILE = "flux_state.json"
DATA_STATE_KEY = "training_data"  # in STATE_FILE: the fingerprint and names of the training data
HISTORY_FILE = METRICS_FILE  # the run's metrics up to step N, as the run's own file
TRAINER_STATE_FILE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
PPO_STATE_DIR = "ppo_state"
PPO_STATE_FILE = "ppo.pt"  # in PPO_STATE_DIR, beside accelerate's own files

# ---------------------------------------------------------------------- elsewhere

EVAL_SCRATCH_PREFIX = "flux-eval-"


def checkpoint_name(step: int) -> str:
    """``checkpoint-N`` for step N."""
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: str | Path) -> int | None:
    """N for a path (or name) ``checkpoint-N``, else None."""
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def staged_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.NAME.tmp-PID`` beside it."""
    return path.parent / f".{path.name}.{STAGED_TAG}-{os.getpid()}"


def aside_path(path: Path) -> Path:
    """Where ``path`` is set aside while a new one replaces it: ``.NAME.old-PID`` beside it."""
    return path.parent / f".{path.name}.{ASIDE_TAG}-{os.getpid()}"


def aside_pattern(name: str) -> str:
    """Glob pattern of every aside of ``name`` (any PID)."""
    return f".{name}.{ASIDE_TAG}-*"


def reference_cache_file(output_dir: str | Path, key: str) -> Path:
    """DPO's cached reference log-probs for ``key`` (a digest of what they depend on)."""
    return Path(output_dir) / CACHE_DIR / f"{REFERENCE_CACHE_PREFIX}{key}.pt"
