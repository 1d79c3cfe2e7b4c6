"""Checkpoints: ``checkpoint-N``, ``best`` and ``final``, written atomically.

Each checkpoint directory holds safetensors weights, the tokenizer, ``flux_config.yaml``
and ``flux_checkpoint.json``, and loads with plain
``AutoModelForCausalLM.from_pretrained``. A LoRA run saves the merged model there and
the adapter alone in ``adapter/`` beside it.

Atomicity: a checkpoint is written into a hidden temporary directory
(``.NAME.tmp-PID``) next to its target and renamed into place. An existing checkpoint
of that name (``best``, ``final``) is swapped out in one atomic exchange where Linux
supports it, so ``best/`` is never missing even for an instant; elsewhere it is first
renamed aside (``.NAME.old-PID``) and deleted only after the new one is in place. A
crash therefore never leaves a half-written directory under a real name; if it strikes
between the two renames, :func:`resolve_checkpoint` finds the previous complete
checkpoint aside, and the next run's startup renames it back (:mod:`flux_core.run.directory`).
With several processes every rank writes its part of a ``checkpoint-N`` into the staged
directory first (:mod:`flux_core.run.distributed`); the main process then finishes and
renames it, so the rename still marks a complete checkpoint.

Which checkpoint is ``best``: at every save point (every ``checkpoint.save_steps``
steps, and at the end of training) Flux scores the model, by the loss on
``eval_data`` when it is given, else by the training loss smoothed with an
exponential moving average (weight 0.9 on the past, bias-corrected, as TensorBoard's
smoothing). ``best`` holds the save point with the lowest score; ties keep the earlier.
A NaN/Inf loss never enters the average, a non-finite score never becomes ``best``, and
a model with a non-finite weight is never written (:mod:`flux_core.run.nonfinite`).

File names come from :mod:`flux_core.run.layout`, shared with :mod:`flux_core.run.resume`,
which reads what this module writes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flux_core.errors import FluxError
from flux_core.quantization import dequantized_weight, is_quantized, plain_config
from flux_core.report.model_card import write_card
from flux_core.run.directory import is_main_process
from flux_core.run.distributed import barrier, is_distributed, shared_staged_path
from flux_core.run.fsdp import full_state_dict, is_sharded, weights_for_save
from flux_core.run.layout import (
    ADAPTER_DIR,
    BEST_DIR,
    CONFIG_FILE,
    DATA_STATE_KEY,
    FINAL_DIR,
    HISTORY_FILE,
    META_FILE,
    STATE_FILE,
    aside_path,
    aside_pattern,
    checkpoint_name,
    staged_path,
)
from flux_core.run.nonfinite import NonFiniteError, is_finite, json_safe, nonfinite_parameter


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or filesystem lacks it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_into_place(staged: Path, path: Path) -> None:
    """Put ``staged`` at ``path``, replacing what is there, so that ``path`` is never missing.

    Where the kernel and filesystem support it the two directories are exchanged in
    one atomic step. Elsewhere the old one is renamed aside first: a kill between the
    two renames leaves ``.NAME.old-PID``, which :func:`resolve_checkpoint` loads and the
    next run's startup renames back (:mod:`flux_core.run.directory`).
    """
    if path.exists() and _exchange(staged, path):
        shutil.rmtree(staged, ignore_errors=True)  # now the previous checkpoint
    else:
        if path.exists():
            os.replace(path, aside_path(path))
        os.replace(staged, path)
    # The new checkpoint is in place: drop the previous one and any a crash left aside.
    for leftover in path.parent.glob(aside_pattern(path.name)):
        shutil.rmtree(leftover, ignore_errors=True)


def merged_state_dict(model: Any, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """State dict of a peft LoRA model with every adapter folded into its base weight.

    Computed from a copy, so the live model (and its unmerged base weights) is untouched.
    ``state`` is the model's full state dict when its live weights are FSDP shards
    (:func:`flux_core.run.fsdp.full_state_dict`); the adapters are then folded from it.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    active = set(model.active_adapters)
    source = base.state_dict() if state is None else _base_model_keys(state)
    merged = {}
    for key, value in source.items():
        if "lora_" in key or ".original_module." in key:
            continue
        if ".modules_to_save." in key:  # a module trained in full beside the adapter (a reward model's score head)
            prefix, _, rest = key.partition(".modules_to_save.")
            adapter, _, name = rest.partition(".")
            if adapter not in active:
                continue
            key = f"{prefix}.{name}"
        merged[key.replace(".base_layer.", ".")] = value
    if is_quantized(model):  # QLoRA: the base weights are bitsandbytes-packed; fold into full-precision ones
        merged = _dequantized(base, merged)
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            key = f"{name}.weight"
            for adapter in module.active_adapters:
                delta = (
                    module.get_delta_weight(adapter) if state is None else _lora_delta(module, name, adapter, source)
                )
                merged[key] = merged[key] + delta.to(merged[key].dtype)
    return merged


def _dequantized(base: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a quantized base model's, adapters removed) with every bitsandbytes weight dequantized,
    its quantization state (``absmax``, ``quant_map``, ``SCB``, ...) dropped, and every floating tensor in
    the dtype the model was loaded in (peft's k-bit preparation keeps the small ones in fp32)."""
    import torch

    dtype = base.config.dtype if isinstance(base.config.dtype, torch.dtype) else torch.float32
    state = dict(state)
    for name, module in base.named_modules():
        weight = module._parameters.get("weight")  # the layer's own (a LoRA wrapper only forwards its base's)
        if weight is None or type(weight).__module__.split(".")[0] != "bitsandbytes":
            continue
        key = f"{name.replace('.base_layer', '')}.weight"
        for stale in [other for other in state if other.startswith(f"{key}.")]:
            del state[stale]
        state[key] = dequantized_weight(module)
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}


def _base_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A peft model's state dict under its base model's key names (``base_model.model.`` dropped)."""
    return {key.removeprefix("base_model.model."): value for key, value in state.items()}


def _lora_delta(module: Any, name: str, adapter: str, state: dict[str, Any]) -> Any:
    """What a LoRA linear layer adds to its weight, from full (gathered) weights: peft's
    ``Linear.get_delta_weight`` on ``state`` instead of the layer's own (sharded) parameters."""
    from peft.tuners.lora import Linear
    from peft.utils.other import transpose

    if not isinstance(module, Linear) or module.use_dora.get(adapter):
        raise FluxError(f"{name}: only plain LoRA on linear layers can be merged from FSDP-gathered weights")
    lora_a = state[f"{name}.lora_A.{adapter}.weight"]
    lora_b = state[f"{name}.lora_B.{adapter}.weight"]
    return transpose(lora_b @ lora_a, module.fan_in_fan_out) * module.scaling[adapter]


def save_model(model: Any, tokenizer: Any, directory: Path, weights: dict[str, Any] | None = None) -> None:
    """Write a loadable model (merged when LoRA) + tokenizer into ``directory``.

    ``weights``: the full state dict of an FSDP-sharded ``model``, gathered on every rank
    beforehand when there are several processes (:meth:`CheckpointManager.stage`); with
    one process it is gathered here.
    """
    import torch
    from peft import PeftModel

    if is_sharded(model) and weights is None:  # FSDP: write the gathered full weights, not this process's shards
        weights = weights_for_save(model)
    if isinstance(model, PeftModel):
        model.save_pretrained(directory / ADAPTER_DIR, state_dict=weights)
        base = model.get_base_model()
        with torch.no_grad():  # folding the adapters must not record autograd history
            merged = merged_state_dict(model, weights)
            if is_quantized(model):  # saved in full precision: as an ordinary model, without quantization_config
                base = _unquantized_shell(base)
            base.save_pretrained(directory, state_dict={k: v.detach().contiguous() for k, v in merged.items()})
    else:
        model.save_pretrained(directory, state_dict=weights)
    tokenizer.save_pretrained(directory)


def _unquantized_shell(base: Any) -> Any:
    """An ordinary (unquantized) model of ``base``'s architecture on the meta device: no memory, only what
    ``save_pretrained`` needs besides the weights (config, generation config, weight-tying rules)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(plain_config(base.config))
    shell.generation_config = base.generation_config
    return shell


def write_checkpoint(
    path: str | Path,
    model: Any,
    tokenizer: Any,
    config: Any,
    meta: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
    staged: Path | None = None,
    weights: dict[str, Any] | None = None,
) -> Path:
    """Atomically write one checkpoint directory at ``path``; ``extra(staged_dir)`` adds
    more files (the resume state) before it is renamed into place.

    ``staged``: a staged directory every rank has already written its part into
    (:meth:`CheckpointManager.stage`); ``weights``: the model's gathered full weights (FSDP).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if staged is None:
        staged = staged_path(path)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
    try:
        save_model(model, tokenizer, staged, weights=weights)
        (staged / CONFIG_FILE).write_text(config.to_yaml())
        (staged / META_FILE).write_text(_meta_json(meta))
        write_card(staged, config, meta, path.name)
        if extra is not None:
            extra(staged)
        _swap_into_place(staged, path)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return path


def copy_checkpoint(source: Path, path: Path, meta_update: dict[str, Any], config: Any = None) -> Path:
    """Atomically copy a complete checkpoint to ``path`` (used for ``best``), weights only:
    the resume files a ``checkpoint-N`` lists in ``flux_state.json`` stay behind."""
    state_file = source / STATE_FILE
    resume_files = set(json.loads(state_file.read_text())["resume_files"]) if state_file.is_file() else set()

    def top_level_resume_files(directory: str, names: list[str]) -> set[str]:
        return resume_files & set(names) if Path(directory) == source else set()

    staged = staged_path(path)
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(source, staged, ignore=top_level_resume_files)
    meta = json.loads((staged / META_FILE).read_text())
    meta.update(meta_update)
    (staged / META_FILE).write_text(_meta_json(meta))
    if config is not None:  # the card names this checkpoint (best) and its score
        write_card(staged, config, meta, path.name)
    _swap_into_place(staged, path)
    return path


def _meta_json(meta: dict[str, Any]) -> str:
    """``flux_checkpoint.json`` text: valid JSON, with NaN/Inf written as null."""
    return json.dumps(json_safe(meta), indent=2, sort_keys=True, allow_nan=False)


def _meta_step(path: Path) -> int | None:
    try:
        return json.loads((path / META_FILE).read_text()).get("step")
    except (OSError, ValueError):
        return None


def resolve_checkpoint(path: str | Path) -> Path:
    """The directory to load for ``path``: itself, or the previous copy a crash left aside."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    aside = sorted(path.parent.glob(aside_pattern(path.name))) if path.parent.exists() else []
    if aside and (aside[-1] / "config.json").exists():
        return aside[-1]
    if path.exists():
        raise FluxError(
            f"{path}: not a checkpoint (no config.json); expected a directory written by Flux or transformers"
        )
    raise FluxError(f"{path}: checkpoint directory not found")


def _nonfinite_weight(weights: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``weights`` holding a NaN/Inf."""
    import torch

    return next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


@dataclass
class StagedCheckpoint:
    """A ``checkpoint-N`` every rank has written its part of (:meth:`CheckpointManager.stage`).

    Attributes:
        staged: the staged directory, not yet under its real name.
        weights: the gathered full weights of an FSDP model (main process), else None.
        resume_files: the training-state files the ranks wrote into it.
    """

    staged: Path
    weights: dict[str, Any] | None
    resume_files: list[str]


# For algorithms whose progress is a reward: they feed -reward where DPO feeds the loss.
REWARD_SCORE_NAMES = ("negative_smoothed_reward", "negative_eval_reward")


class CheckpointManager:
    """Writes ``checkpoint-N`` every ``save_steps``, keeps ``best`` and writes ``final``.

    ``on_step`` takes the step's loss (lower is better); ``evaluate``, when given,
    returns the eval score instead. ``score_names`` label the two scores in
    ``flux_checkpoint.json`` (see :data:`REWARD_SCORE_NAMES`).

    After :meth:`attach`, every ``checkpoint-N`` also holds the resume state
    (:mod:`flux_core.run.resume`): the algorithm's (``state_writer``) and Flux's own.

    With several processes only the main one calls ``on_step`` and :meth:`finalize`, but
    every rank calls :meth:`stage` at every step and :meth:`gather_final` before the end:
    there each rank writes its part of the training state and FSDP's shards are gathered
    (:mod:`flux_core.run.distributed`).
    """

    SMOOTHING = 0.9

    def __init__(
        self,
        output_dir: str | Path,
        config: Any,
        tokenizer: Any,
        save_steps: int | None,
        evaluate: Callable[[], float] | None = None,
        score_names: tuple[str, str] = ("smoothed_train_loss", "eval_loss"),
    ):
        self.output_dir = Path(output_dir)
        self.config = config
        self.tokenizer = tokenizer
        self.save_steps = save_steps
        self.evaluate = evaluate
        self.train_score_name, self.eval_score_name = score_names
        self.checkpoint_paths: list[str] = []
        self.best_score: float | None = None
        self.best_path = self.output_dir / BEST_DIR
        self.final_path = self.output_dir / FINAL_DIR
        self._ema = 0.0
        self._ema_steps = 0
        self._has_best = False
        self.best_step: int | None = None
        self.run: Any = None
        self.state_writer: Callable[[Path], None] | None = None
        self.save_for_resume_at: int | None = None  # set on preemption: write this step's checkpoint-N
        self._staged: dict[Path, StagedCheckpoint] = {}  # main process: checkpoints the ranks have written
        self._final_weights: dict[str, Any] | None = None

    def attach(self, run: Any, state_writer: Callable[[Path], None] | None) -> None:
        """Write ``state_writer``'s training state and Flux's into every ``checkpoint-N``;
        when ``run`` resumes, continue its checkpoint's average, best score and list.

        Call on every rank (only the main rank writes). A kill after a checkpoint that
        became best was written but before ``best/`` was replaced is repaired here.
        """
        self.run, self.state_writer = run, state_writer
        point = run.resume
        if point is None:
            return
        state = point.state
        self._ema = float(state.get("ema") or 0.0)
        self._ema_steps = int(state.get("ema_steps", 0))
        self.best_score = state.get("best_score")
        self.best_step = state.get("best_step")
        self._has_best = bool(state.get("has_best"))
        self.checkpoint_paths = list(state.get("checkpoint_paths", []))
        if self.best_step == point.step and _meta_step(self.best_path) != point.step and is_main_process():
            copy_checkpoint(point.path, self.best_path, {"best": True}, self.config)

    def is_save_point(self, step: int) -> bool:
        """Whether step ``step`` writes ``checkpoint-N`` (the ``save_steps`` cadence, or preemption)."""
        return bool(self.save_steps) and step % self.save_steps == 0 or step == self.save_for_resume_at

    def stage(self, step: int, model: Any) -> None:
        """Every rank, after each optimizer step of a multi-process run (a no-op with one
        process or off a save point): write this rank's training state into the staged
        ``checkpoint-N`` and gather FSDP's shards; the main process finishes the checkpoint
        when ``on_step`` reports the step. A collective: all ranks must call it."""
        if not is_distributed() or not self.is_save_point(step):
            return
        path = self.output_dir / checkpoint_name(step)
        staged = shared_staged_path(path)
        if self.state_writer is not None:
            self.state_writer(staged)
        weights = full_state_dict(model) if is_sharded(model) else None
        barrier()  # every rank's files are in place before the main process lists them
        if is_main_process():
            self._staged[path] = StagedCheckpoint(staged, weights, sorted(os.listdir(staged)))

    def gather_final(self, model: Any) -> None:
        """Every rank, before the main process calls :meth:`finalize`: gather FSDP's shards
        when there are several processes (a collective; a no-op otherwise)."""
        if is_distributed() and is_sharded(model):
            self._final_weights = full_state_dict(model)

    def _smoothed_loss(self) -> float:
        return self._ema / (1 - self.SMOOTHING**self._ema_steps)

    def _score(self) -> tuple[float | None, str]:
        """This save point's score and its name; ``(None, "none")`` when nothing was scored yet."""
        if self.evaluate is not None:
            return float(self.evaluate()), self.eval_score_name
        if not self._ema_steps:
            return None, "none"
        return self._smoothed_loss(), self.train_score_name

    def on_step(self, step: int, loss: float | None, model: Any) -> None:
        if is_finite(loss):  # a skipped step's NaN must not poison the average
            self._ema = self.SMOOTHING * self._ema + (1 - self.SMOOTHING) * loss
            self._ema_steps += 1
        if self.save_steps and step % self.save_steps == 0:
            score, rule = self._score()
            better = self._update_best(step, score)
            meta = {"step": step, "score": score, "score_name": rule}
            path = self._write(self.output_dir / checkpoint_name(step), step, model, meta, resumable=True)
            if better:
                copy_checkpoint(path, self.best_path, {"best": True, "score": score, "score_name": rule}, self.config)
        elif step == self.save_for_resume_at:
            self.save_for_resume(step, model)

    def save_for_resume(self, step: int, model: Any) -> None:
        """Write ``checkpoint-N`` for step N off the ``save_steps`` cadence (on preemption):
        resume state included, not scored, so ``best`` does not change (an uninterrupted
        run would not have scored this step either)."""
        path = self.output_dir / checkpoint_name(step)
        if str(path) not in self.checkpoint_paths:
            self._write(path, step, model, {"step": step, "score": None, "score_name": "none"}, resumable=True)

    def _write(self, path: Path, step: int, model: Any, meta: dict[str, Any], resumable: bool = False) -> Path:
        staged = self._staged.pop(path, None)
        weights = staged.weights if staged else self._final_weights if path == self.final_path else None
        bad = nonfinite_parameter(model) if weights is None else _nonfinite_weight(weights)
        if bad is not None:
            if staged is not None:
                shutil.rmtree(staged.staged, ignore_errors=True)
            raise NonFiniteError(f"step {step}: weight {bad} is not finite; {path.name} was not written")
        extra = None
        if resumable:
            self.checkpoint_paths.append(str(path))
            if self.state_writer is not None:
                written = staged.resume_files if staged else None
                extra = functools.partial(self._write_resume_state, step=step, written=written)
        staged_dir = staged.staged if staged else None
        return write_checkpoint(path, model, self.tokenizer, self.config, meta, extra, staged_dir, weights)

    def _write_resume_state(self, directory: Path, step: int, written: list[str] | None = None) -> None:
        """Add Flux's resume state to ``directory``; ``written``: the training-state files
        the ranks already wrote (:meth:`stage`), else the ``state_writer`` writes them now."""
        before = set(os.listdir(directory)) - set(written or ())
        if written is None:
            self.state_writer(directory)
        history = self.output_dir / HISTORY_FILE
        if history.is_file():
            shutil.copyfile(history, directory / HISTORY_FILE)
        run = self.run
        state = {
            "step": step,
            "ema": self._ema,
            "ema_steps": self._ema_steps,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "has_best": self._has_best,
            "checkpoint_paths": self.checkpoint_paths,
            "skipped_steps": list(run.guard.skipped),
            "num_examples": run.num_examples,
            "num_steps": self.config.num_steps,  # the run's length (num_epochs resolved): a resume at it is finished
            DATA_STATE_KEY: run.data,
            "resume_files": sorted(set(os.listdir(directory)) - before) + [STATE_FILE],
        }
        # Written last: a checkpoint-N with flux_state.json is one the run can continue from.
        (directory / STATE_FILE).write_text(json.dumps(json_safe(state), indent=2, allow_nan=False))

    def _update_best(self, step: int, score: float | None) -> bool:
        """Whether this save point becomes ``best`` (and record it)."""
        if score is None:  # nothing scored yet (no loss or reward reported): best is the first save point
            better = self.best_score is None and not self._has_best
        else:
            better = is_finite(score) and (self.best_score is None or score < self.best_score)
        if better:
            if score is not None:
                self.best_score = score
            self._has_best, self.best_step = True, step
        return better

    def finalize(self, step: int, model: Any) -> None:
        score, rule = self._score()
        better = self._update_best(step, score)
        meta = {"step": step, "score": score, "score_name": rule}
        self._write(self.final_path, step, model, meta)
        self._final_weights = None
        if better:
            copy_checkpoint(
                self.final_path, self.best_path, {"best": True, "score": score, "score_name": rule}, self.config
            )
