"""TRL config settings that every Flux runner wrapping a TRL trainer shares."""

from __future__ import annotations

from typing import Any


def shared_trl_settings(config: Any, precision: str) -> dict[str, Any]:
    """Flux's top-level keys and run conventions as TRL/transformers config fields.

    Runners add their algorithm's fields, then ``config.trl`` (checked to be real
    fields when the config loaded) on top.
    """
    import torch

    return dict(
        output_dir=config.output_dir,
        max_steps=config.num_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,  # one StepResult per optimizer step
        save_strategy="no",  # Flux writes its own atomic checkpoints
        report_to="none",
        disable_tqdm=True,  # Flux shows its own progress bar
    )
