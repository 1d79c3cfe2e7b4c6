"""OnlineDPORunner: FluxConfig + validated prompt dataset -> a policy trained on its own ranked samples."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

from flux_core import (
    ConfigError,
    FluxConfig,
    RewardFunction,
    RolloutBackend,
    SamplingParams,
    TRLReward,
    TRLRunner,
    build_reward_functions,
    build_trl_config,
    create_backend,
    load_model,
    load_tokenizer,
    peft_config,
    resolve_precision,
)
from flux_online_dpo.config import check_run

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's online DPO log keys -> the metric names Flux users see; DPO's names where the quantity is DPO's.
METRIC_NAMES = {
    "objective/scores": "reward",
    "objective/scores_margin": "score_margin",
    "objective/rlhf_reward": "rlhf_reward",
    "objective/kl": "kl",
    "objective/entropy": "entropy",
    "objective/non_score_reward": "non_score_reward",
    "rewards/chosen": "chosen_reward",
    "rewards/rejected": "rejected_reward",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "accuracy",
    "logps/chosen": "chosen_logp",
    "logps/rejected": "rejected_logp",
    "val/contain_eos_token": "eos_fraction",
}

BackendFactory = Callable[[FluxConfig, Any, Any], RolloutBackend]


def build_online_dpo_args(config: FluxConfig, precision: str, reward_functions: list[RewardFunction], model: Any):
    """The ``OnlineDPOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from flux_online_dpo.trl_experimental import OnlineDPOConfig

    algorithm = config.algorithm
    return build_trl_config(
        OnlineDPOConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # two completions per prompt
        extra_model_copies=0 if config.lora else 1,  # TRL's frozen reference copy without LoRA
        max_length=config.max_length,
        max_new_tokens=algorithm.max_completion_length,
        temperature=algorithm.temperature,
        top_p=algorithm.top_p,
        beta=algorithm.beta,
        loss_type=algorithm.loss_type,
        missing_eos_penalty=algorithm.missing_eos_penalty,
        reward_weights=[reward.weight for reward in reward_functions],
    )


def sampling_params(config: FluxConfig) -> SamplingParams:
    """What a rollout server samples with: the settings TRL's own generation uses."""
    algorithm = config.algorithm
    return SamplingParams(
        max_new_tokens=algorithm.max_completion_length,
        temperature=algorithm.temperature,
        top_p=algorithm.top_p,
        top_k=config.trl.get("top_k", 0),
    )


class OnlineDPORunner(TRLRunner):
    """Builds policy, rewards, generation and TRL's ``OnlineDPOTrainer`` for one run (see :class:`TRLRunner`).

    The reference is TRL's: a frozen copy of the initial model, or with ``lora:`` the model with its
    adapter disabled. ``best/`` is the save point with the highest mean reward.

    Args:
        config: the run's validated config (``algorithm.name: online_dpo``).
        show_progress: show a progress bar with the reward.
        rollout_backend: ``factory(config, model, tokenizer)`` of the backend that samples completions.
            ``None`` (default): :func:`flux_core.create_backend`; when that is local, TRL generates itself.
            Any other backend samples through :class:`flux_online_dpo.rollouts.BackendGeneration`.
    """

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "reward")
    score_metric = "reward"
    higher_is_better = True

    def __init__(self, config: FluxConfig, show_progress: bool = True, rollout_backend: BackendFactory | None = None):
        check_run(config)
        super().__init__(config, show_progress)
        self.rollout_backend = rollout_backend
        self.reward_functions = build_reward_functions(config.algorithm.rewards)

    def fit(self, dataset, eval_dataset, callbacks, run=None):
        if eval_dataset is not None:
            raise ConfigError(
                "eval_data: online DPO has no held-out loss (TRL's OnlineDPOTrainer only trains); drop it, and "
                "score checkpoints with `flux eval CHECKPOINT --data PROMPTS`"
            )
        return super().fit(dataset, eval_dataset, callbacks, run)

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from flux_online_dpo.rollouts import BackendGeneration
        from flux_online_dpo.trl_experimental import OnlineDPOTrainer

        config = self.config
        precision = resolve_precision(config.precision)
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        model = load_model(config.model_path, precision, quantize=config.base_quantization)
        backend = (self.rollout_backend or create_backend)(config, model, self.tokenizer)
        with warnings.catch_warnings():
            # TRL warns when max_new_tokens >= max_length; the config's own warning already said it in Flux's keys.
            warnings.filterwarnings("ignore", message="The configuration has `max_new_tokens`")
            args = build_online_dpo_args(config, precision, self.reward_functions, model)
        trainer = OnlineDPOTrainer(
            model=model,
            reward_funcs=[TRLReward(reward) for reward in self.reward_functions],
            args=args,
            train_dataset=dataset,
            processing_class=self.tokenizer,
            peft_config=peft_config(config.lora),
            callbacks=list(callbacks),
        )
        if self.rollout_backend is not None or not backend.is_local:
            BackendGeneration(backend, sampling_params(config)).install(trainer)
        return self.adopt(trainer)
