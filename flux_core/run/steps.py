"""How many optimizer steps a run trains: ``num_steps``, or ``num_epochs`` passes over the data.

``num_epochs`` needs the training data's size, so it is turned into steps once the data is
loaded: every runner starts ``fit`` with :func:`with_resolved_steps`, and from there on the
run is in steps (progress bar, LR schedule and warmup, checkpoint numbers, ``metrics.jsonl``,
``max_steps`` of the TRL config). How many steps one epoch is belongs to the algorithm
(``AlgorithmConfig.steps_per_epoch``); the default, :func:`batched_steps_per_epoch`, is
transformers' own count for a ``Trainer``.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any


def world_size() -> int:
    """Processes training together: the joined process group's size, else ``WORLD_SIZE`` (set by torchrun and
    accelerate launch before any process group exists), else 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def batched_steps_per_epoch(config: Any, num_examples: int, world_size: int) -> int:
    """Optimizer steps in one pass over ``num_examples`` rows, as transformers' ``Trainer`` counts them.

    Each process's dataloader yields ``ceil(ceil(rows / batch_size) / world_size)`` batches
    (``floor`` twice with ``trl.dataloader_drop_last``); every ``trl.gradient_accumulation_steps``
    of them (the last, shorter group too) make one step; an epoch is at least one step.
    """
    accumulation = config.trl.get("gradient_accumulation_steps", 1)
    if config.trl.get("dataloader_drop_last", False):
        batches = num_examples // config.batch_size // world_size
    else:
        batches = math.ceil(math.ceil(num_examples / config.batch_size) / world_size)
    return max(math.ceil(batches / accumulation), 1)


def resolved_num_steps(config: Any, num_examples: int, world_size: int = 1) -> int:
    """The run's length in optimizer steps: ``num_steps``, or ``num_epochs`` x the algorithm's steps per
    epoch of ``num_examples`` rows on ``world_size`` processes, rounded up (at least one step)."""
    if config.num_epochs is None:
        return config.num_steps
    per_epoch = config.algorithm.steps_per_epoch(config, num_examples, world_size)
    # round() first: 0.1 epochs of 30 steps is 3 steps, not ceil(3.0000000000000004) = 4
    return max(math.ceil(round(config.num_epochs * per_epoch, 9)), 1)


def with_resolved_steps(config: Any, num_examples: int, *, announce: bool = True, loaded: int | None = None) -> Any:
    """``config`` with ``num_steps`` set to :func:`resolved_num_steps` for ``num_examples`` training rows
    (``config`` itself for a step-based run). ``announce``: the main process prints the count once,
    e.g. ``flux: num_epochs 3 = 375 steps (1000 rows, batch_size 8, 125 steps per epoch)``; ``loaded``:
    the rows loaded, when the trainer made ``num_examples`` of them (packing, dropped pairs)."""
    if config.num_epochs is None:
        return config
    processes = world_size()
    steps = resolved_num_steps(config, num_examples, processes)
    if announce and _is_main_process():
        per_epoch = config.algorithm.steps_per_epoch(config, num_examples, processes)
        batch = f"batch_size {config.batch_size}"
        accumulation = config.trl.get("gradient_accumulation_steps", 1)
        if accumulation > 1:
            batch += f" x {accumulation} accumulation steps"
        if processes > 1:
            batch += f" x {processes} processes"
        rows = f"{num_examples} rows" if loaded in (None, num_examples) else f"{num_examples} rows from {loaded} loaded"
        print(
            f"flux: num_epochs {config.num_epochs:g} = {steps} steps ({rows}, {batch}, {per_epoch} steps per epoch)",
            file=sys.stderr,
        )
    return config.model_copy(update={"num_steps": steps})
