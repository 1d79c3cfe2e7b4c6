"""Gradient checkpointing only when it is needed.

TRL turns gradient checkpointing on by default: right for an 8B model on one GPU, but
on a model that fits comfortably it recomputes every forward pass for nothing (~20-30%
of step time). Flux's ``gradient_checkpointing: auto`` estimates the run's training
memory without checkpointing and turns it on only when that estimate exceeds half of
the device's memory (the GPU's total, or the RAM available on CPU).
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("flux")

# Activation memory per token per layer without checkpointing, in units of
# hidden_size x element size (Korthikanti et al. 2022 count ~34 bytes/h at 2 bytes).
ACTIVATION_ELEMENTS_PER_HIDDEN = 17
ADAM_BYTES_PER_TRAINABLE = 8  # two fp32 moments


def device_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def estimate_training_bytes(
    model: Any, sequences: int, tokens_per_sequence: int, extra_model_copies: int = 0, lora: bool = False
) -> int:
    """Weights (+ frozen copies), gradients and Adam state of trainable weights, activations.

    ``lora``: the model is not wrapped yet, but only its (negligible) adapters will train.
    """
    params = list(model.parameters())
    element = params[0].element_size()
    total = sum(p.numel() for p in params)
    trainable = 0 if lora else sum(p.numel() for p in params if p.requires_grad)
    config = model.config.get_text_config()
    activations = (
        sequences
        * tokens_per_sequence
        * config.num_hidden_layers
        * config.hidden_size
        * ACTIVATION_ELEMENTS_PER_HIDDEN
        * element
    )
    return total * element * (1 + extra_model_copies) + trainable * (element + ADAM_BYTES_PER_TRAINABLE) + activations


def use_gradient_checkpointing(
    setting: str | bool,
    model: Any,
    sequences: int,
    tokens_per_sequence: int,
    extra_model_copies: int = 0,
    lora: bool = False,
) -> bool:
    """Resolve ``gradient_checkpointing`` (``auto``, true or false) for one run."""
    if setting != "auto":
        return bool(setting)
    needed = estimate_training_bytes(model, sequences, tokens_per_sequence, extra_model_copies, lora)
    available = device_memory_bytes()
    enabled = needed > available / 2
    logger.info(
        "gradient checkpointing: %s (auto: ~%.1f GB needed without it, %.1f GB on the device)",
        "on" if enabled else "off",
        needed / 2**30,
        available / 2**30,
    )
    return enabled
