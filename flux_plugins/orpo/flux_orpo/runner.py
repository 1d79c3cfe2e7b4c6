"""ORPORunner: FluxConfig + checked preference pairs -> a trained, checkpointed model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_core import (
    FluxConfig,
    TRLRunner,
    build_trl_config,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's ORPO log keys -> the metric names Flux users see (DPO's names; nll_loss, log_odds_ratio and
# log_odds_chosen keep theirs).
METRIC_NAMES = {
    "rewards/chosen": "chosen_reward",
    "rewards/rejected": "rejected_reward",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "accuracy",
    "logps/chosen": "chosen_logp",
    "logps/rejected": "rejected_logp",
    "logits/chosen": "chosen_logits",
    "logits/rejected": "rejected_logits",
}


def build_orpo_args(config: FluxConfig, precision: str, model: Any):
    """The ``ORPOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from flux_orpo.trl_experimental import ORPOConfig

    return build_trl_config(
        ORPOConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # chosen and rejected
        extra_model_copies=0,  # reference-free
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        remove_unused_columns=False,  # TRL's pair collator needs every column (TRL sets it itself, with a warning)
        beta=config.algorithm.beta,
    )


class ORPORunner(TRLRunner):
    """Builds model, tokenizer and TRL's ``ORPOTrainer`` for one ORPO run (see :class:`TRLRunner`)."""

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "reward_margin")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from flux_orpo.trl_experimental import ORPOTrainer

        precision, model = self.load_tokenizer_and_policy(dataset)
        return self.trl_trainer(
            ORPOTrainer, model, build_orpo_args(self.config, precision, model), dataset, eval_dataset, callbacks
        )
