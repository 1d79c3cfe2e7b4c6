"""Batches of prompt groups as TRL's GRPOTrainer and RLOOTrainer form them.

Both count ``batch_size`` in *completions* per optimizer step (TRL's ``per_device_train_batch_size``):
each step trains on ``batch_size / num_generations`` prompts, each sampled ``num_generations`` times,
and both generate ``generation_batch_size`` completions at a time (``trl.generation_batch_size`` or
``trl.steps_per_generation``).
"""

from __future__ import annotations

import math
from typing import Any

from flux_core.errors import ConfigError


def check_group_batches(config: Any, algorithm: str) -> None:
    """Raise ConfigError, in Flux's terms, for batch sizes TRL would reject: ``batch_size`` and
    ``trl.generation_batch_size`` must hold whole groups of ``algorithm.num_generations``. ``algorithm``
    names the algorithm in the message (``GRPO``)."""
    group = config.algorithm.num_generations
    if config.batch_size % group:
        lower = max(group, config.batch_size - config.batch_size % group)
        raise ConfigError(
            f"batch_size {config.batch_size} cannot be split into groups of algorithm.num_generations={group}: "
            f"{algorithm}'s batch_size counts completions per step ({group} per prompt), so it must be a multiple "
            f"of {group}; use batch_size: {lower} or {lower + group}, or change num_generations"
        )
    generation_batch = config.trl.get("generation_batch_size")
    if generation_batch is not None and generation_batch % group:
        raise ConfigError(
            f"trl.generation_batch_size {generation_batch} is not a multiple of algorithm.num_generations={group}: "
            "every prompt's group of completions must be generated together"
        )


def group_steps_per_epoch(config: Any, num_examples: int, world_size: int) -> int:
    """Optimizer steps in one pass over ``num_examples`` prompts, as TRL's GRPOTrainer and RLOOTrainer run them.

    One generation batch holds ``generation_batch_size / num_generations`` prompts
    (``generation_batch_size`` defaults to ``batch_size x processes x steps_per_generation``, and
    ``steps_per_generation`` to ``trl.gradient_accumulation_steps``); it feeds
    ``steps_per_generation x num_iterations`` micro-batches per process, and every
    ``gradient_accumulation_steps`` of them are a step. TRL's sampler drops the prompts left over
    after the last whole generation batch.
    """
    algorithm = config.algorithm
    accumulation = config.trl.get("gradient_accumulation_steps", 1)
    per_step_everywhere = config.batch_size * world_size
    generation_batch = config.trl.get("generation_batch_size")
    steps_per_generation = config.trl.get("steps_per_generation")
    if generation_batch is not None:
        steps_per_generation = generation_batch // per_step_everywhere
    else:
        steps_per_generation = steps_per_generation or accumulation
        generation_batch = per_step_everywhere * steps_per_generation
    prompts_per_generation = generation_batch // algorithm.num_generations
    generations = num_examples // prompts_per_generation
    if generations == 0:
        raise ConfigError(
            f"num_epochs: the data has {num_examples} prompts, fewer than one generation batch of "
            f"{prompts_per_generation} (batch_size {config.batch_size} x {world_size} processes x "
            f"{steps_per_generation} steps per generation / num_generations {algorithm.num_generations}); "
            "use num_steps, or more prompts"
        )
    micro_batches = generations * steps_per_generation * algorithm.num_iterations
    return max(math.ceil(micro_batches / accumulation), 1)
