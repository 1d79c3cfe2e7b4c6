"""``--resume`` of a run that already trained all its steps: nothing to train, and it says so.

A job script may pass ``--resume`` every time. When the run in ``output_dir`` has trained
its ``num_steps`` (for ``num_epochs``, the steps its run resolved them to, as long as
``num_epochs`` is unchanged), :func:`finish_resumed_run` hands back its result without
loading data or a model and prints one line; ``final/`` and ``best/`` stay as they are.
Raising ``num_steps`` (or ``num_epochs``) resumes as usual.

A run killed while writing ``final/``, after its last step's ``checkpoint-N`` was written,
is finished too: ``final/`` (and ``best/``, when that step was the best) are copied from
``checkpoint-N`` as the run would have written them, rather than training a step past
``num_steps``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from flux_core.run.checkpoint import copy_checkpoint
from flux_core.run.directory import open_run_dir
from flux_core.run.layout import BEST_DIR, CONFIG_FILE, FINAL_DIR, META_FILE, METRICS_FILE, STATE_FILE
from flux_core.run.results import FitResult
from flux_core.run.resume import DATA_KEYS, check_same_config, find_resume_point, read_history


def finish_resumed_run(config: Any, resume: bool | str | Path | None) -> FitResult | None:
    """The result of the finished run that ``resume`` asks to continue, or None when steps are left
    (or there is nothing to resume). Refuses a changed config as a resume does
    (:func:`flux_core.run.resume.check_same_config`; the data is not loaded, so not checked)."""
    output_dir = Path(config.output_dir)
    if not resume or not output_dir.is_dir():
        return None
    with open_run_dir(output_dir, resume=True) as directory:
        finished = _finished_at(config, output_dir, resume)
        if finished is None:
            return None
        source, step = finished
        check_same_config(source, config, ignored=DATA_KEYS)
        restored = _restore_final(config, output_dir, source, step) if directory.is_main else []
    final, best = output_dir / FINAL_DIR, output_dir / BEST_DIR
    if directory.is_main:
        length = (
            f"num_epochs {config.num_epochs:g}" if config.num_epochs is not None else f"num_steps {config.num_steps}"
        )
        done = (
            f"; copied {' and '.join(restored)} from {source.name} (a kill cut their writing short)" if restored else ""
        )
        print(
            f"flux: {output_dir} is finished: it trained {step} steps ({length}){done}; nothing to train "
            f"(final: {final}); raise {length.split()[0]} to train on",
            file=sys.stderr,
        )
    history = read_history(output_dir / METRICS_FILE)
    state = _read_json(source / STATE_FILE) or {}
    return FitResult(
        final_loss=history[-1].metrics.get("loss", float("nan")) if history else float("nan"),
        steps=step,
        history=history,
        best_path=str(best),
        final_path=str(final),
        checkpoint_paths=list(state.get("checkpoint_paths", [])),
        already_finished=True,
    )


def _finished_at(config: Any, output_dir: Path, resume: bool | str | Path) -> tuple[Path, int] | None:
    """``(checkpoint, step)`` holding the run's last step: ``final/`` (unless a path was asked for), else the
    checkpoint-N that ``resume`` names or finds, when its step is the run's length."""
    final = output_dir / FINAL_DIR
    final_step = _step_of(final)
    if (
        resume is True
        and final_step is not None
        and (final / CONFIG_FILE).is_file()
        and _is_run_length(config, final, final_step, None)
    ):
        return final, final_step
    with warnings.catch_warnings(record=True) as passed_over:  # the resume that follows warns, unless finished
        warnings.simplefilter("always")
        path = find_resume_point(output_dir, resume)
    if path is None or not (path / CONFIG_FILE).is_file():
        return None
    state = _read_json(path / STATE_FILE) or {}
    step = int(state.get("step", -1))
    if not _is_run_length(config, path, step, state.get("num_steps")):
        return None
    for warning in passed_over:
        warnings.warn(warning.message, warning.category, stacklevel=3)
    return path, step


def _is_run_length(config: Any, checkpoint: Path, step: int, recorded_steps: int | None) -> bool:
    """Whether ``step`` of ``checkpoint``'s run is the last of this ``config``'s run."""
    if config.num_epochs is None:
        return step >= config.num_steps
    saved = yaml.safe_load((checkpoint / CONFIG_FILE).read_text()) if (checkpoint / CONFIG_FILE).is_file() else {}
    if (saved or {}).get("num_epochs") != config.num_epochs:
        return False  # other epochs: the step count is known once the data is loaded
    # final/ exists only at the run's end; a checkpoint-N is the end when N is the length its run recorded
    return checkpoint.name == FINAL_DIR or (recorded_steps is not None and step >= recorded_steps)


def _restore_final(config: Any, output_dir: Path, checkpoint: Path, step: int) -> list[str]:
    """Copy ``checkpoint`` (the last step's) to ``final/``, and to ``best/`` when that step was the best,
    where a kill left them missing or older; return what was written."""
    if checkpoint.name == FINAL_DIR:
        return []
    written = []
    if _step_of(output_dir / FINAL_DIR) != step:
        copy_checkpoint(checkpoint, output_dir / FINAL_DIR, {}, config)
        written.append(f"{FINAL_DIR}/")
    state = _read_json(checkpoint / STATE_FILE) or {}
    if state.get("best_step") == step and _step_of(output_dir / BEST_DIR) != step:
        copy_checkpoint(checkpoint, output_dir / BEST_DIR, {"best": True}, config)
        written.append(f"{BEST_DIR}/")
    return written


def _step_of(checkpoint: Path) -> int | None:
    """The step a complete checkpoint directory holds (from its ``flux_checkpoint.json``), else None."""
    meta = _read_json(checkpoint / META_FILE) if (checkpoint / "config.json").is_file() else None
    return meta.get("step") if isinstance(meta, dict) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
