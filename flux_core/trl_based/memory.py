"""Gradient checkpointing only when it is needed, and a fallback when the guess was wrong.

TRL turns gradient checkpointing on by default: right for an 8B model on one GPU, but
on a model that fits comfortably it recomputes every forward pass for nothing (~20-30%
of step time). Flux's ``gradient_checkpointing: auto`` estimates the run's peak training
memory without checkpointing (:func:`estimate_training_memory`) and turns checkpointing
off only when ``estimate x SAFETY_MARGIN`` fits in the memory that is *free* on the
device (``torch.cuda.mem_get_info()`` on a GPU, available RAM on CPU).

The estimate counts what autograd really keeps, term by term (:class:`MemoryEstimate`):
weights (and frozen reference copies), gradients and the two Adam moments of whatever
trains, the tensors each decoder layer saves for its backward pass (counted from the
model's own shapes: gated MLP width, query/key/value heads, RMSNorm's fp32 upcast, the
attention's saved inputs and mask), and TRL's fused LM head (which never materialises
the ``batch x seq x vocab`` logits, but holds fp32 gradient buffers and logit tiles).
The per-layer count equals autograd's saved tensors exactly for Qwen3 and Llama layers in
fp32 and bf16, SDPA and eager (``tests/test_memory.py``), and reproduces one H100's peak
``max_memory_allocated`` within 2% (``benchmarks/README.md``).

If ``auto`` turned checkpointing off and a training step still runs out of memory,
:func:`out_of_memory_fallback` frees that step's memory, turns checkpointing on and runs
the same step again (one warning line); with an explicit ``gradient_checkpointing: false``
an out-of-memory error is one line naming the setting.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flux_core.errors import FluxError

logger = logging.getLogger("flux")

# Checkpointing stays off only when estimate x SAFETY_MARGIN fits in free memory: room for
# the allocator's fragmentation, batches that differ from the estimate's shapes, and
# whatever else shares the device.
SAFETY_MARGIN = 1.25
FP32 = 4
# TRL 1.16's fused LM head (trl.kernels.chunked_logprob) projects [tokens x vocab] in tiles
# of TOKEN_CHUNK_SIZE tokens by _CHUNKED_LOGPROB_CHUNK_SIZE vocabulary columns.
LM_HEAD_TOKEN_TILE = 4096
LM_HEAD_VOCAB_TILE = 32768
# Without Triton (CPU) its backward folds each tile with torch ops: about seven fp32
# tile-sized temporaries are alive at once (y, z, log p, p, grad and two products).
CPU_LM_HEAD_FP32_TILES = 7
# Model types whose attention normalises queries and keys per head (an RMSNorm each).
QK_NORM_MODEL_TYPES = frozenset({"qwen3", "qwen3_moe", "qwen3_next", "gemma3", "gemma3_text", "olmo2", "olmoe"})
# Model types with a plain two-matrix MLP (up -> activation -> down); every other model
# is counted with a gated (SwiGLU-style) MLP, which saves twice as much.
UNGATED_MLP_MODEL_TYPES = frozenset(
    {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "bloom", "falcon", "phi", "starcoder2", "mpt", "codegen"}
)
# LoRA adapters train in fp32 (peft upcasts them on bf16/fp16 bases): weight, gradient, two Adam moments.
LORA_BYTES_PER_PARAMETER = 4 * FP32


@dataclass(frozen=True)
class ModelShape:
    """The shapes of a decoder-only transformer that decide its activation memory."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    gated_mlp: bool = True
    qk_norm: bool = False
    attention: str = "sdpa"  # "eager" keeps the attention matrix; sdpa/flash kernels do not

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a ``transformers`` config (its text config for multimodal models)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        attention = getattr(text, "_attn_implementation", None) or "sdpa"
        return cls(
            hidden_size=text.hidden_size,
            intermediate_size=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
            num_layers=text.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab_size=text.vocab_size,
            gated_mlp=text.model_type not in UNGATED_MLP_MODEL_TYPES,
            qk_norm=text.model_type in QK_NORM_MODEL_TYPES,
            attention="eager" if attention == "eager" else "sdpa",
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory without gradient checkpointing, in bytes, by term.

    Attributes:
        weights: the trained model's weights (LoRA: the frozen base plus its adapters).
        frozen_copies: frozen copies held beside it (a reference model).
        gradients: one gradient per trainable weight.
        optimizer: Adam's two moments per trainable weight (in the weights' dtype; fp32 for LoRA).
        activations: what every decoder layer saves for the backward pass, for every token.
        lm_head: final norm, TRL's fused LM head: its saved inputs and backward buffers.
        per_layer_token: ``activations`` per token per layer, by part
            (``norms``, ``qk_norm``, ``attention``, ``mlp``).
        checkpointed_activations: ``activations`` with gradient checkpointing instead: each
            layer's input, plus one layer's full activations while it is recomputed.
    """

    weights: int
    frozen_copies: int
    gradients: int
    optimizer: int
    activations: int
    lm_head: int
    per_layer_token: dict[str, int] = field(default_factory=dict)
    checkpointed_activations: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.frozen_copies + self.gradients + self.optimizer + self.activations + self.lm_head

    @property
    def checkpointed_total(self) -> int:
        """The same run's peak with gradient checkpointing on."""
        return self.total - self.activations + self.checkpointed_activations

    @property
    def beyond_weights(self) -> int:
        """What training adds on top of the loaded weights (what CPU RSS grows by once training starts)."""
        return self.total - self.weights - self.frozen_copies

    def summary(self) -> str:
        """``weights 0.8 + gradients 0.8 + Adam 1.6 + activations 65.8 + LM head 0.3 = 69.2 GiB``."""
        parts = [
            ("weights", self.weights),
            ("frozen copies", self.frozen_copies),
            ("gradients", self.gradients),
            ("Adam", self.optimizer),
            ("activations", self.activations),
            ("LM head", self.lm_head),
        ]
        shown = " + ".join(f"{name} {size / 2**30:.2f}" for name, size in parts if size)
        return f"{shown} = {self.total / 2**30:.2f} GiB"


def layer_activation_bytes(shape: ModelShape, dtype_bytes: int, tokens_per_sequence: int) -> dict[str, int]:
    """Bytes one decoder layer saves for its backward pass, per token, by part.

    ``e`` is the element size (2 for bf16, 4 for fp32), ``h`` the hidden size, ``q`` and
    ``kv`` the query and key/value widths (heads x head_dim), ``T`` the padded length:

    * ``norms``: two RMSNorms (before attention, before the MLP). Each keeps its input
      upcast to fp32 (4h; in fp32 that is the input itself), the normalised input in
      the model's dtype (e*h, for the weight's gradient) and a reciprocal RMS per token
      (4); its output is the input the next projections keep (e*h).
    * ``qk_norm`` (Qwen3, Gemma3, OLMo2): the same per head over the queries and keys:
      (4 + e)(q + kv) + 4 per head. Rotary embeddings keep nothing (their cos/sin need no
      gradient), so a Llama layer stores nothing here.
    * ``attention``: SDPA keeps the rotated queries, keys and values, with the keys and
      values repeated to every query head (transformers repeats them when the batch is
      padded), the output (which is o_proj's input) and an fp32 log-sum-exp per head:
      4*e*q + 4*heads, plus the padding mask converted to the model's dtype (e*T). Eager
      attention keeps queries, keys, values, o_proj's input, and the attention matrix:
      fp32 softmax output plus its copy in the model's dtype, heads*T*(4 + e) (no copy in
      fp32).
    * ``mlp``: gated (SwiGLU): the gate and up projections, the activation and the
      product, 4*e*intermediate; an ungated MLP keeps two of them.
    """
    e, h, T = dtype_bytes, shape.hidden_size, tokens_per_sequence
    q = shape.num_heads * shape.head_dim
    kv = shape.num_kv_heads * shape.head_dim

    def rms_norm(width: int, rows: int) -> int:
        return (FP32 + e) * width + FP32 * rows

    norms = 2 * (rms_norm(h, 1) + e * h)
    qk_norm = rms_norm(q, shape.num_heads) + rms_norm(kv, shape.num_kv_heads) if shape.qk_norm else 0
    if shape.attention == "eager":
        attention = 4 * e * q + shape.num_heads * T * (FP32 + (e if e != FP32 else 0))
    else:
        attention = 4 * e * q + FP32 * shape.num_heads + e * T
    mlp = (4 if shape.gated_mlp else 2) * e * shape.intermediate_size
    return {"norms": norms, "qk_norm": qk_norm, "attention": attention, "mlp": mlp}


def lm_head_bytes(
    shape: ModelShape, dtype_bytes: int, sequences: int, tokens_per_sequence: int, head_trains: bool, device: str
) -> int:
    """Final norm and TRL's fused LM head at the start of the backward pass (all tokens scored).

    Saved: the final RMSNorm's fp32 input and normalised input, the head's copy of the
    hidden states, and per-token fp32 statistics. Backward buffers: the fp32 gradient of
    the hidden states (and its copy in the model's dtype), the fp32 gradient of the head's
    weight when it trains, and one logits tile (plus the torch fallback's fp32
    temporaries on CPU).
    """
    e, h, V = dtype_bytes, shape.hidden_size, shape.vocab_size
    tokens = sequences * tokens_per_sequence
    saved = tokens * ((FP32 + e) * h + FP32 + e * h + 4 * FP32)
    tile = min(tokens, LM_HEAD_TOKEN_TILE) * min(V, LM_HEAD_VOCAB_TILE)
    workspace = tokens * h * (FP32 + e) + tile * (e + (CPU_LM_HEAD_FP32_TILES * FP32 if device == "cpu" else 0))
    if head_trains:
        workspace += V * h * FP32
    return saved + workspace


def estimate_training_memory(
    config: Any,
    *,
    parameters: int,
    dtype_bytes: int,
    sequences: int,
    tokens_per_sequence: int,
    lora_parameters: int | None = None,
    extra_model_copies: int = 0,
    device: str = "cuda",
) -> MemoryEstimate:
    """Peak memory of one training step without gradient checkpointing (AdamW, no weights needed).

    Args:
        config: a ``transformers`` config, or a :class:`ModelShape`.
        parameters: the model's parameter count (:func:`count_parameters` reads it from a config).
        dtype_bytes: element size of weights and activations (2: bf16/fp16, 4: fp32).
        sequences: sequences per forward pass (DPO: 2 x batch_size, chosen and rejected).
        tokens_per_sequence: the longest padded sequence; callers pass ``max_length``, a bound.
        lora_parameters: the LoRA adapters' parameter count (None: full fine-tuning). The
            base is then frozen: no gradients or Adam state, and the LM head trains no weight.
        extra_model_copies: frozen copies of the weights (a reference model run on the fly;
            its no-grad forward keeps no activations).
        device: ``cuda`` (TRL's Triton LM head) or ``cpu`` (its torch fallback).
    """
    shape = config if isinstance(config, ModelShape) else ModelShape.from_config(config)
    per_layer = layer_activation_bytes(shape, dtype_bytes, tokens_per_sequence)
    tokens = sequences * tokens_per_sequence
    per_layer_total = sum(per_layer.values())
    weights = parameters * dtype_bytes
    if lora_parameters is None:
        gradients, optimizer = parameters * dtype_bytes, 2 * parameters * dtype_bytes
    else:
        weights += lora_parameters * FP32
        gradients, optimizer = lora_parameters * FP32, lora_parameters * 2 * FP32
    return MemoryEstimate(
        weights=weights,
        frozen_copies=extra_model_copies * parameters * dtype_bytes,
        gradients=gradients,
        optimizer=optimizer,
        activations=tokens * shape.num_layers * per_layer_total,
        lm_head=lm_head_bytes(shape, dtype_bytes, sequences, tokens_per_sequence, lora_parameters is None, device),
        per_layer_token=per_layer,
        checkpointed_activations=tokens * (shape.num_layers * dtype_bytes * shape.hidden_size + per_layer_total),
    )


def count_parameters(config: Any) -> int:
    """Parameters of ``AutoModelForCausalLM.from_config(config)``, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def lora_parameter_count(model: Any, r: int, target_modules: list[str] | str = "all-linear") -> int:
    """Parameters of rank-``r`` LoRA adapters on ``model``'s linear layers: r x (in + out) each.

    ``all-linear`` adapts every linear layer but the output head; a list matches module
    names by their last component, another string is a regular expression matched
    against the whole name (peft's rules).
    """
    import re

    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if target_modules == "all-linear":
            targeted = True
        elif isinstance(target_modules, str):
            targeted = re.fullmatch(target_modules, name) is not None
        else:
            targeted = name.rsplit(".", 1)[-1] in target_modules
        if targeted:
            count += r * (module.in_features + module.out_features)
    return count


def estimate_for_model(
    model: Any, sequences: int, tokens_per_sequence: int, extra_model_copies: int = 0, lora: Any = None
) -> MemoryEstimate:
    """:func:`estimate_training_memory` for a loaded (or meta-device) model.

    ``lora``: None/False for full fine-tuning, Flux's ``lora:`` block (``r``,
    ``target_modules``), or True for rank-8 adapters on every linear layer.
    """
    import torch

    params = list(model.parameters())
    if lora is None or lora is False:
        lora_parameters = None
    elif lora is True:
        lora_parameters = lora_parameter_count(model, 8)
    else:
        lora_parameters = lora_parameter_count(model, lora.r, lora.target_modules)
    return estimate_training_memory(
        model.config,
        parameters=sum(p.numel() for p in params),
        dtype_bytes=params[0].element_size(),
        sequences=sequences,
        tokens_per_sequence=tokens_per_sequence,
        lora_parameters=lora_parameters,
        extra_model_copies=extra_model_copies,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )


def available_ram_bytes() -> int:
    """RAM the kernel could hand out now without swapping (``MemAvailable``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def free_memory_bytes(model: Any = None) -> tuple[int, str]:
    """``(bytes, where)``: what is free on the training device now.

    On a GPU, ``torch.cuda.mem_get_info()``'s free memory plus the weights of ``model``
    already placed there (the estimate counts them); on CPU, available RAM.
    """
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        placed = 0
        if model is not None:
            placed = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type == "cuda")
        return free + placed, "free on the GPU"
    return available_ram_bytes(), "RAM available"


def use_gradient_checkpointing(
    setting: str | bool,
    model: Any,
    sequences: int,
    tokens_per_sequence: int,
    extra_model_copies: int = 0,
    lora: Any = None,
) -> bool:
    """Resolve ``gradient_checkpointing`` (``auto``, true or false) for one run.

    ``auto`` is off only when :func:`estimate_for_model` x :data:`SAFETY_MARGIN` fits in
    :func:`free_memory_bytes`; the decision and each term of the estimate are logged.
    """
    if setting != "auto":
        return bool(setting)
    estimate = estimate_for_model(model, sequences, tokens_per_sequence, extra_model_copies, lora)
    free, where = free_memory_bytes(model)
    enabled = estimate.total * SAFETY_MARGIN > free
    logger.info(
        "gradient checkpointing: %s (auto: ~%.1f GiB without it x %.2f %s %.1f GiB %s; %s)",
        "on" if enabled else "off",
        estimate.total / 2**30,
        SAFETY_MARGIN,
        ">" if enabled else "<=",
        free / 2**30,
        where,
        estimate.summary(),
    )
    return enabled


# ---------------------------------------------------------------------- out-of-memory fallback

# Per-run counters TRL's trainers change inside a training step (metrics lists, token counts,
# GRPO's generation buffer and step counter). A step that runs out of memory and is run again
# must leave them as one successful run of that step would.
# flux-dpo's metrics queued on the device (FluxDPOTrainer.log) count as metrics too.
_TRAINER_STEP_STATE = (
    "_metrics",
    "_flux_queued_metrics",
    "_total_train_tokens",
    "_step",
    "_buffered_inputs",
    "_current_train_step_time",
)
_COPIED_STEP_STATE = ("_metrics", "_flux_queued_metrics")  # mutated in place: snapshot a copy


def enable_gradient_checkpointing(trainer: Any) -> None:
    """Turn activation checkpointing on for ``trainer``'s model mid-run, exactly as
    ``transformers.Trainer.train`` (and TRL's ``__init__`` for a PEFT model) turn it on at the
    start, and record it in ``trainer.args``."""
    from accelerate.utils import is_peft_model

    args = trainer.args
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if hasattr(args, name):
            setattr(args, name, True)
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or args.gradient_checkpointing_kwargs
    kwargs = dict(kwargs or {})
    every_n_layers = kwargs.pop("every_n_layers", 1)
    offload = kwargs.pop("offload", False)
    model = trainer.model
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    if is_peft_model(model):
        model.enable_input_require_grads()


class OutOfMemoryFallback:
    """What a TRL trainer's run does when it runs out of memory (see :func:`out_of_memory_fallback`)."""

    def __init__(self, trainer: Any, setting: str | bool):
        self.trainer = trainer
        self.setting = setting
        # auto chose to run without checkpointing: that choice may be undone once
        self.can_switch = setting == "auto" and not trainer.args.gradient_checkpointing
        self.switched_at: int | None = None

    def _retry_possible(self) -> bool:
        trainer = self.trainer
        return (
            self.can_switch
            and self.switched_at is None
            and trainer.accelerator.num_processes == 1  # other ranks would go on without this one
            and trainer.args.gradient_accumulation_steps == 1  # earlier micro-batches' gradients cannot be replayed
        )

    def _snapshot(self) -> dict[str, Any]:
        import numpy
        import torch

        trainer = self.trainer
        state: dict[str, Any] = {
            name: copy.deepcopy(getattr(trainer, name)) if name in _COPIED_STEP_STATE else getattr(trainer, name)
            for name in _TRAINER_STEP_STATE
            if hasattr(trainer, name)
        }
        state["num_input_tokens_seen"] = trainer.state.num_input_tokens_seen
        state["rng"] = (random.getstate(), numpy.random.get_state(), torch.get_rng_state())
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        import numpy
        import torch

        trainer = self.trainer
        python_rng, numpy_rng, torch_rng = state.pop("rng")
        random.setstate(python_rng)
        numpy.random.set_state(numpy_rng)
        torch.set_rng_state(torch_rng)
        if "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state.pop("cuda_rng"))
        trainer.state.num_input_tokens_seen = state.pop("num_input_tokens_seen")
        for name, value in state.items():
            setattr(trainer, name, value)

    def training_step(self, original: Any, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        """``original`` (the trainer's ``training_step``: forward and backward of one batch), run
        again with checkpointing on if it runs out of memory while ``auto`` has it off."""
        import torch

        if not self._retry_possible():
            return original(model, inputs, num_items_in_batch)
        state = self._snapshot()
        try:
            return original(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError:
            pass  # leave the except block: its traceback holds the failed pass's activations
        step = self.trainer.state.global_step + 1
        self._restore(state)
        model.zero_grad(set_to_none=True)  # a partial backward's gradients
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        enable_gradient_checkpointing(self.trainer)
        self.switched_at = step
        warnings.warn(
            f"step {step} ran out of memory without gradient checkpointing (gradient_checkpointing: auto); "
            f"turned it on and ran step {step} again",
            UserWarning,
            stacklevel=2,
        )
        return original(model, inputs, num_items_in_batch)

    def error(self) -> FluxError:
        """The one-line error for an out-of-memory error that reached the end of the run."""
        step = self.trainer.state.global_step + 1
        if self.switched_at is not None:
            return FluxError(
                f"out of memory at step {step} even with gradient checkpointing on (gradient_checkpointing: auto "
                f"turned it on after step {self.switched_at} ran out of memory); lower batch_size or max_length"
            )
        if self.setting is False:
            return FluxError(
                f"out of memory at step {step} with gradient_checkpointing: false; set it to true or auto, "
                "or lower batch_size/max_length"
            )
        if self.trainer.args.gradient_checkpointing:
            setting = "true" if self.setting is True else "auto, which turned it on"
            return FluxError(
                f"out of memory at step {step} with gradient checkpointing on (gradient_checkpointing: {setting}); "
                "lower batch_size or max_length"
            )
        return FluxError(
            f"out of memory at step {step} without gradient checkpointing (gradient_checkpointing: auto could not "
            "turn it on here: multi-process or gradient accumulation run, or outside a forward/backward pass); "
            "set gradient_checkpointing: true, or lower batch_size/max_length"
        )


@contextlib.contextmanager
def out_of_memory_fallback(trainer: Any, setting: str | bool) -> Iterator[OutOfMemoryFallback]:
    """Run a TRL trainer's ``train()`` inside this: out-of-memory errors get a fallback or one line.

    * ``gradient_checkpointing: auto`` turned checkpointing off and a training step (its
      forward and backward pass) runs out of memory: the step's memory is freed, its
      gradients dropped, the RNG states and the trainer's per-step counters put back as
      they were before it, checkpointing is turned on (:func:`enable_gradient_checkpointing`)
      and the same step runs again on the same batch: no data is skipped, no step is
      reported twice, and the losses are those of a run with checkpointing on from the
      start. One warning line says so (``flux: warning: ...`` from the CLI). This works at
      any step, since an out-of-memory error in a forward or backward pass comes before
      the step's optimizer update; it happens at most once per run, and only in
      single-process runs without gradient accumulation.
    * Any other out-of-memory error (explicit ``true``/``false``, a second one, one in the
      optimizer update or in evaluation) ends the run with a one-line :class:`FluxError`
      naming the step and the setting.
    """
    import torch

    fallback = OutOfMemoryFallback(trainer, setting)
    had_own = "training_step" in vars(trainer)
    original = trainer.training_step

    def training_step(model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        return fallback.training_step(original, model, inputs, num_items_in_batch)

    trainer.training_step = training_step
    try:
        yield fallback
    except torch.OutOfMemoryError as error:
        raise fallback.error() from error
    finally:
        if had_own:
            trainer.training_step = original
        else:
            del trainer.training_step
