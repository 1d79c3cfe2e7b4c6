"""Resume: what a ``checkpoint-N`` holds beyond its weights, and how a run continues from it.

A ``checkpoint-N`` stays loadable with plain ``from_pretrained`` and additionally holds
what an exact continuation needs:

* ``flux_state.json``: the step, the smoothed-loss average (EMA), the best score so
  far, the checkpoints written, the skipped steps, the number of training examples, the
  training data's fingerprint and names (``training_data``) and the list of the resume
  files below (``best/`` and ``final/`` leave them out: they
  stay weights-only);
* ``metrics.jsonl``: the metrics history up to step N;
* the algorithm's training state. TRL-wrapped algorithms (DPO, GRPO) use transformers'
  own files, written by its ``Trainer`` methods: ``optimizer.pt``, ``scheduler.pt``,
  ``rng_state.pth`` (python, numpy, torch, cuda), ``trainer_state.json`` (the step,
  from which ``Trainer.train(resume_from_checkpoint=...)`` skips the consumed batches).
  PPO writes ``ppo_state/`` (see :mod:`flux_ppo.runner`).

The whole directory is staged and renamed into place at once
(:func:`flux_core.run.checkpoint.write_checkpoint`), so a ``checkpoint-N`` under its real
name is always complete.

Resuming (``flux train CONFIG --resume [PATH]``, ``fit(resume=True | PATH)``) continues
from the newest ``checkpoint-N`` holding ``flux_state.json`` (or from PATH), after
checking that the config is the checkpoint's own: only ``num_steps`` (or ``num_epochs``),
``checkpoint.save_steps``, ``output_dir``, ``on_nonfinite`` and ``max_skipped_steps``
may change (a longer or shorter run also changes a decaying learning-rate schedule from
there on). An epoch-based run continues at the step after N of the same step count: the
training data must be the same, so ``num_epochs`` resolves to the same steps.
``metrics.jsonl`` is rewritten to the checkpoint's steps, so the finished run's file holds
each step exactly once.

Other training data is refused too: a checkpoint records the fingerprint of its run's
training data (``datasets``' fingerprint of the loaded, mixed dataset, content-true for
local files, plus where each source lives), and a resume whose data differs (another file,
the same file rewritten, other weights) stops in one line naming both, unless
``--allow-data-change`` (``fit(allow_data_change=True)``) says to go on with the new data.

File names come from :mod:`flux_core.run.layout`, shared with :mod:`flux_core.run.checkpoint`,
which writes what this module reads.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flux_core.errors import ConfigError, FluxError
from flux_core.run.directory import RunDirectory
from flux_core.run.integrity import checkpoint_damage
from flux_core.run.layout import (
    ADAPTER_DIR,
    CONFIG_FILE,
    DATA_STATE_KEY,
    HISTORY_FILE,
    STATE_FILE,
    TRAINER_STATE_FILE,
    checkpoint_step,
    staged_path,
)
from flux_core.run.nonfinite import json_safe
from flux_core.run.results import StepResult

# Keys a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_CHANGES = (
    "num_steps",
    "num_epochs",
    "checkpoint.save_steps",
    "output_dir",
    "on_nonfinite",
    "max_skipped_steps",
)


# Keys that choose the data; --allow-data-change lets them change with it.
DATA_KEYS = ("data", "eval_data", "eval_fraction")


class ResumeError(FluxError):
    """The run cannot continue from the checkpoint asked for."""


@dataclass
class ResumePoint:
    """A ``checkpoint-N`` to continue from.

    Attributes:
        path: the checkpoint directory.
        step: N, the last step it holds.
        state: its ``flux_state.json``.
        history: the metrics of steps 1..N, as :class:`~flux_core.run.results.StepResult`.
    """

    path: Path
    step: int
    state: dict[str, Any]
    history: list[StepResult] = field(default_factory=list)


def is_resumable(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / "config.json").is_file()


def find_resume_point(output_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint ``resume`` asks for: a path, or (``True``) the newest resumable
    ``checkpoint-N`` in ``output_dir``; ``None`` when there is none yet."""
    if resume is True:
        checkpoints = RunDirectory(output_dir).checkpoints()
        resumable = [path for path in checkpoints if is_resumable(path)]
        if resumable:
            return _newest_intact(resumable, output_dir)
        if checkpoints:
            raise ResumeError(
                f"{output_dir}: its checkpoints hold no training state to resume from (written by a Flux without "
                "resume); start again with --overwrite"
            )
        return None
    path = Path(resume)
    if not path.is_dir():
        raise ResumeError(f"--resume {path}: checkpoint directory not found")
    if not is_resumable(path):
        what = "weights only" if (path / "config.json").is_file() else "not a checkpoint"
        raise ResumeError(f"--resume {path}: {what} (no {STATE_FILE}); resume from a checkpoint-N directory")
    damage = checkpoint_damage(path)
    if damage is not None:
        previous = _previous_intact(path)
        instead = f"resume from {previous} instead" if previous else "start again with --overwrite"
        raise ResumeError(f"--resume: {damage[0]}: {damage[1]}; {instead}")
    return path


def _previous_intact(path: Path) -> Path | None:
    """The newest complete ``checkpoint-M`` beside ``path`` = ``checkpoint-N`` with M < N."""
    step = checkpoint_step(path)
    if step is None:
        return None
    earlier = [other for other in RunDirectory(path.parent).checkpoints() if checkpoint_step(other) < step]
    return next(
        (other for other in reversed(earlier) if is_resumable(other) and checkpoint_damage(other) is None), None
    )


def _newest_intact(resumable: list[Path], output_dir: Path) -> Path:
    """The newest of ``resumable`` whose files all read (:mod:`flux_core.run.integrity`);
    warns once for each newer, damaged one it passes over."""
    damaged = []
    for path in reversed(resumable):
        damage = checkpoint_damage(path)
        if damage is None:
            for where, what in damaged:
                warnings.warn(f"--resume: {where}: {what}; resuming from {path} instead", UserWarning, stacklevel=3)
            return path
        damaged.append(damage)
    where, what = damaged[0]
    raise ResumeError(
        f"--resume: {where}: {what}, and {output_dir} holds no earlier complete checkpoint; "
        "start again with --overwrite"
    )


def load_resume_point(
    path: Path,
    config: Any,
    num_examples: int | None,
    data: dict[str, str] | None = None,
    allow_data_change: bool = False,
) -> ResumePoint:
    """Read ``path``'s state and history, refusing a changed config or training set.

    ``data`` identifies this run's training data
    (:func:`flux_core.data.load.training_data_identity`); other data than the checkpoint
    recorded is refused unless ``allow_data_change``, which also lets ``data``,
    ``eval_data`` and ``eval_fraction`` change in the config.
    """
    state = json.loads((path / STATE_FILE).read_text())
    recorded_data = state.get(DATA_STATE_KEY)
    if allow_data_change:
        check_same_config(path, config, ignored=DATA_KEYS)
        return _resume_point(path, state)
    # With the data recorded, its fingerprint decides about data: (it follows the content, not the spelling).
    check_same_config(path, config, ignored=("data",) if recorded_data else ())
    if data is not None and recorded_data is not None and data["fingerprint"] != recorded_data["fingerprint"]:
        raise ResumeError(
            f"cannot resume {path}: the training data changed: this run has {data['sources']} (fingerprint "
            f"{data['fingerprint']}), its run trained on {recorded_data['sources']} (fingerprint "
            f"{recorded_data['fingerprint']}); resume with the same data, or allow the change with "
            "--allow-data-change (fit(allow_data_change=True))"
        )
    recorded = state.get("num_examples")
    if num_examples is not None and recorded is not None and recorded != num_examples:
        raise ResumeError(
            f"cannot resume {path}: the training data has {num_examples} examples, its run had {recorded}; "
            "resume with the same data, or allow the change with --allow-data-change (fit(allow_data_change=True))"
        )
    return _resume_point(path, state)


def _resume_point(path: Path, state: dict[str, Any]) -> ResumePoint:
    return ResumePoint(path=path, step=int(state["step"]), state=state, history=read_history(path / HISTORY_FILE))


def read_history(history_file: Path) -> list[StepResult]:
    """The steps of a ``metrics.jsonl`` (a run's, or a checkpoint's copy), nulls as NaN; none when it is missing."""
    history = []
    if history_file.is_file():
        for line in history_file.read_text().splitlines():
            row = json.loads(line)
            step = row.pop("step")
            history.append(StepResult(step=step, metrics={k: math.nan if v is None else v for k, v in row.items()}))
    return history


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def check_same_config(path: Path, config: Any, ignored: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming every key (other than :data:`RESUMABLE_CHANGES` and the
    ``ignored`` keys and their sub-keys) that differs from the checkpoint's
    ``flux_config.yaml``. Keys the checkpoint does not know are ignored."""
    saved = _flatten(yaml.safe_load((path / CONFIG_FILE).read_text()) or {})
    current = _flatten(config.model_dump(mode="json"))
    changed = []
    for key in sorted(saved.keys() | current.keys()):
        if key in RESUMABLE_CHANGES or key not in saved or key not in current:
            continue
        if any(key == name or key.startswith(name + ".") for name in ignored):
            continue
        if saved[key] != current[key]:
            changed.append(f"{key} ({saved[key]!r} -> {current[key]!r})")
    if changed:
        raise ConfigError(
            f"cannot resume {path} with a changed config: {', '.join(changed)}; set them back, or start a new run "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change on resume)"
        )


def rewrite_history(output_dir: Path, history: list[StepResult]) -> None:
    """Atomically replace ``output_dir/metrics.jsonl`` with ``history`` (the resumed steps)."""
    target = output_dir / HISTORY_FILE
    staged = staged_path(target)
    lines = [json.dumps(json_safe({"step": r.step, **r.metrics}), allow_nan=False) + "\n" for r in history]
    staged.write_text("".join(lines))
    os.replace(staged, target)


# ---------------------------------------------------------------------- algorithm state


def write_trl_state(trainer: Any, directory: Path) -> None:
    """A transformers ``Trainer``'s resume files, written by its own methods (as its
    ``_save_checkpoint`` does): optimizer, scheduler, grad scaler, RNG states, TrainerState.

    With several processes every rank calls it on the same directory, as ``_save_checkpoint``
    runs on every rank: each writes its RNG state (``rng_state_<rank>.pth``) and, under
    FSDP or DeepSpeed, its part of the model and optimizer (accelerate's sharded files,
    from which ``Trainer.train(resume_from_checkpoint=...)`` restores them); the main
    process writes the rest."""
    trainer._save_optimizer_and_scheduler(str(directory))
    trainer._save_scaler(str(directory))
    trainer._save_rng_state(str(directory))
    if trainer.args.should_save:
        trainer.state.save_to_json(str(directory / TRAINER_STATE_FILE))


def restore_adapter(model: Any, checkpoint: Path) -> None:
    """Load a LoRA checkpoint's ``adapter/`` into the live peft ``model`` (in place, so an
    optimizer holding its parameters keeps them). No-op for a model without adapters.

    The top level of a Flux checkpoint holds merged weights, which cannot be loaded into
    a peft model; the adapter beside them is what the run trains.
    """
    from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

    if not isinstance(model, PeftModel):
        return
    adapter = checkpoint / ADAPTER_DIR
    if not adapter.is_dir():
        raise ResumeError(f"cannot resume {checkpoint}: this is a LoRA run and it has no {ADAPTER_DIR}/")
    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter)))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ResumeError(f"cannot resume {checkpoint}: its adapter does not fit this model ({unexpected[0]}, ...)")


def restore_weights(model: Any, checkpoint: Path) -> None:
    """Load the trained weights of ``checkpoint`` into ``model`` in place: the adapter for a
    peft model, else the top-level weights (``from_pretrained``'s own loader)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        restore_adapter(model, checkpoint)
        return
    from transformers.trainer_utils import load_sharded_checkpoint

    single = checkpoint / "model.safetensors"
    if single.is_file():
        from safetensors.torch import load_file

        # strict=False: save_pretrained leaves out tied weights (the output head tied to the embeddings)
        _, unexpected = model.load_state_dict(load_file(single), strict=False)
        if unexpected:
            raise ResumeError(f"cannot resume {checkpoint}: its weights do not fit this model ({unexpected[0]}, ...)")
    else:
        load_sharded_checkpoint(model, str(checkpoint), strict=False)
