"""RLOORunner: FluxConfig + validated prompt dataset -> a trained, checkpointed policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_core import (
    ConfigError,
    FluxConfig,
    RewardFunction,
    TRLReward,
    TRLRunner,
    build_reward_functions,
    build_trl_config,
    check_group_batches,
    load_model,
    load_tokenizer,
    peft_config,
    resolve_precision,
    reward_metric_names,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's log keys -> the metric names Flux users see (GRPO's names). Each reward's own mean and std
# are added per run, other keys keep their name with '/' -> '_'.
METRIC_NAMES = {
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_fraction",
}


def check_run(config: FluxConfig) -> None:
    """Raise ConfigError for settings TRL would reject or that RLOO cannot honour (called before TRL)."""
    check_group_batches(config, "RLOO")
    if config.sglang.base_url:
        raise ConfigError(
            "sglang.base_url: RLOO generates in the training process (TRL's RLOOTrainer takes no rollout server "
            "but its own vLLM, trl.use_vllm); drop sglang, or use algorithm grpo for a rollout server"
        )


def build_rloo_args(config: FluxConfig, precision: str, reward_functions: list[RewardFunction], model: Any):
    """The ``trl.RLOOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import RLOOConfig

    algorithm = config.algorithm
    return build_trl_config(
        RLOOConfig,
        config,
        precision,
        model,
        sequences=config.batch_size,  # completions per step
        extra_model_copies=1 if algorithm.beta > 0 and config.lora is None else 0,  # KL reference
        num_generations=algorithm.num_generations,
        max_completion_length=algorithm.max_completion_length,
        temperature=algorithm.temperature,
        top_p=algorithm.top_p,
        beta=algorithm.beta,
        epsilon=algorithm.epsilon,
        epsilon_high=algorithm.epsilon_high,
        num_iterations=algorithm.num_iterations,
        normalize_advantages=algorithm.normalize_advantages,
        reward_clip_range=algorithm.reward_clip_range,
        mask_truncated_completions=algorithm.mask_truncated_completions,
        reward_weights=[reward.weight for reward in reward_functions],
    )


class RLOORunner(TRLRunner):
    """Builds policy, rewards and TRL's RLOOTrainer for one RLOO run (see :class:`TRLRunner`).

    Completions come from TRL's own generation in the training process (or TRL's vLLM with
    ``trl: {use_vllm: true}``); the reference for the KL penalty is TRL's: a frozen copy of the model,
    or with ``lora:`` the base model with the adapter disabled.
    """

    # best/ is the highest reward: the base class feeds -reward where DPO feeds the loss.
    progress_metrics = ("reward", "completion_length")
    score_metric = "reward"
    higher_is_better = True
    eval_metric = "eval_reward"

    def __init__(self, config: FluxConfig, show_progress: bool = True):
        check_run(config)  # explain bad batch/group sizes before TRL does
        super().__init__(config, show_progress)
        self.reward_functions: list[RewardFunction] = build_reward_functions(config.algorithm.rewards)

    def step_metric_names(self) -> dict[str, str]:
        return {**METRIC_NAMES, **reward_metric_names(self.reward_functions)}

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from trl import RLOOTrainer

        config = self.config
        precision = resolve_precision(config.precision)
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        model = load_model(config.model_path, precision, quantize=config.base_quantization)
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=[TRLReward(reward) for reward in self.reward_functions],
            args=build_rloo_args(config, precision, self.reward_functions, model),
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            peft_config=peft_config(config.lora),
            callbacks=list(callbacks),
        )
        return self.adopt(trainer)
