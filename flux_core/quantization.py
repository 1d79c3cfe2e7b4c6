"""QLoRA: a frozen base model quantized through bitsandbytes, with a LoRA adapter trained on top.

``lora: {quantize: 4bit}`` loads the base as NF4 with double quantization (the QLoRA paper's
recipe, Axolotl's ``load_in_4bit``, LLaMA-Factory's ``quantization_bit: 4``), computing in the
run's precision; ``8bit`` loads it as LLM.int8. :func:`quantized_load_settings` gives
``from_pretrained`` what it needs, after :func:`check_quantization_runs` has made sure the
installed bitsandbytes can quantize on this machine, so a missing or unusable bitsandbytes is one
line before the model loads rather than a traceback in the middle of it.

Checkpoints hold the adapter and the merged model: :func:`dequantized_weight` gives a quantized
layer's weight back in full precision, which the adapter is then folded into
(:func:`flux_core.run.checkpoint.merged_state_dict`).
"""

from __future__ import annotations

from typing import Any

from flux_core.errors import FluxError

INSTALL_HINT = "pip install 'flux-train[qlora]'"


def training_device() -> str:
    """Where this process trains: its own GPU (``LOCAL_RANK`` under torchrun/accelerate), else the CPU.

    A quantized model is placed at load time (bitsandbytes quantizes as the weights land), so the
    device is decided here rather than by the trainer's later ``.to(device)``.
    """
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def check_quantization_runs(quantize: str, device: str) -> None:
    """Raise FluxError in one line when bitsandbytes is missing or cannot ``quantize`` on ``device``.

    Probes the operation itself on a small tensor: bitsandbytes' CPU backend covers some operations
    and not others depending on its version, and only trying tells.
    """
    try:
        import bitsandbytes
    except ImportError:
        raise FluxError(f"lora.quantize: {quantize} needs bitsandbytes (not installed): {INSTALL_HINT}") from None
    import torch

    probe = torch.randn(64, 64, device=device)
    try:
        if quantize == "4bit":
            bitsandbytes.functional.quantize_4bit(probe, quant_type="nf4", compress_statistics=True)
        else:
            bitsandbytes.functional.int8_vectorwise_quant(probe.to(torch.float16))
    except Exception as error:  # noqa: BLE001 - any failure of the probe means the same to the user
        text = str(error).strip().splitlines()
        reason = text[0] if text else type(error).__name__
        raise FluxError(
            f"lora.quantize: {quantize}: bitsandbytes {bitsandbytes.__version__} cannot quantize on {device} "
            f"({reason}); use a CUDA GPU, upgrade bitsandbytes, or drop lora.quantize"
        ) from None


def quantized_load_settings(quantize: str, dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load the model quantized to ``quantize``, on this
    process's device, computing in ``dtype``."""
    from transformers import BitsAndBytesConfig

    device = training_device()
    check_quantization_runs(quantize, device)
    if quantize == "4bit":
        settings = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    else:
        settings = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": settings, "device_map": {"": device}}


def prepare_for_training(model: Any) -> Any:
    """peft's k-bit preparation: every base weight frozen, the small unquantized ones (norms, embeddings)
    in fp32 for stable updates, input gradients on so the adapter trains under gradient checkpointing
    (which the trainer itself turns on or off, as for any run)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_quantized(model: Any) -> bool:
    """Whether ``model`` (or the base model of a peft model) was loaded through bitsandbytes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def dequantized_weight(layer: Any) -> Any:
    """The full-precision weight of a bitsandbytes linear layer (any other layer's weight as is)."""
    from peft.utils.integrations import dequantize_module_weight

    return dequantize_module_weight(layer)


def plain_config(config: Any) -> Any:
    """A copy of a quantized model's config without its ``quantization_config``: the merged model is
    saved in full precision and must load as an ordinary model."""
    import copy

    plain = copy.deepcopy(config)
    if hasattr(plain, "quantization_config"):
        del plain.quantization_config
    return plain
