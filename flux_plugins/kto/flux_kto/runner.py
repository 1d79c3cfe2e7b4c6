"""KTORunner: FluxConfig + checked unpaired dataset -> a trained, checkpointed model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_core import (
    FluxConfig,
    TRLRunner,
    build_trl_config,
)
from flux_kto.data import warn_one_sided_labels

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's KTO log keys -> the metric names Flux users see ("loss", "entropy", "num_tokens" keep theirs).
METRIC_NAMES = {
    "kl": "kl",
    "rewards/chosen": "desirable_reward",
    "rewards/rejected": "undesirable_reward",
    "rewards/margins": "reward_margin",
    "logps/chosen": "desirable_logp",
    "logps/rejected": "undesirable_logp",
    "logits/chosen": "desirable_logits",
    "logits/rejected": "undesirable_logits",
}


def build_kto_args(config: FluxConfig, precision: str, model: Any):
    """The ``trl.KTOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import KTOConfig

    algorithm = config.algorithm
    return build_trl_config(
        KTOConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # each example and its KL (mismatched) completion
        extra_model_copies=0 if config.lora else 1,  # TRL's frozen reference copy without LoRA
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        beta=algorithm.beta,
        desirable_weight=algorithm.desirable_weight,
        undesirable_weight=algorithm.undesirable_weight,
    )


class KTORunner(TRLRunner):
    """Builds model, tokenizer and ``trl.KTOTrainer`` for one KTO run (see :class:`TRLRunner`).

    The reference policy is TRL's: a frozen copy of the model, or with ``lora:`` the base
    model with the adapter disabled.
    """

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "reward_margin")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from trl import KTOTrainer

        warn_one_sided_labels(dataset)
        precision, model = self.load_tokenizer_and_policy(dataset)
        return self.trl_trainer(
            KTOTrainer, model, build_kto_args(self.config, precision, model), dataset, eval_dataset, callbacks
        )
