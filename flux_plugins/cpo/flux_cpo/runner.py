"""CPORunner: FluxConfig + checked preference pairs -> a trained, checkpointed model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_core import (
    FluxConfig,
    TRLRunner,
    build_trl_config,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's CPO log keys -> the metric names Flux users see (DPO's names; nll_loss keeps its own).
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


def build_cpo_args(config: FluxConfig, precision: str, model: Any):
    """The ``CPOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from flux_cpo.trl_experimental import CPOConfig

    algorithm = config.algorithm
    return build_trl_config(
        CPOConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # chosen and rejected
        extra_model_copies=0,  # reference-free
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        remove_unused_columns=False,  # TRL's pair collator needs every column (TRL sets it itself, with a warning)
        loss_type=algorithm.loss_type,
        beta=algorithm.beta,
        cpo_alpha=algorithm.sft_weight,
        simpo_gamma=algorithm.simpo_gamma,
        label_smoothing=algorithm.label_smoothing,
        alpha=algorithm.alpha,
    )


class CPORunner(TRLRunner):
    """Builds model, tokenizer and TRL's ``CPOTrainer`` for one CPO or SimPO run (see :class:`TRLRunner`)."""

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "reward_margin")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from flux_cpo.trl_experimental import CPOTrainer

        precision, model = self.load_tokenizer_and_policy(dataset)
        return self.trl_trainer(
            CPOTrainer, model, build_cpo_args(self.config, precision, model), dataset, eval_dataset, callbacks
        )
