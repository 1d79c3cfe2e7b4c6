"""GRPORunner: FluxConfig + validated prompt dataset -> a trained, checkpointed policy."""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, Callable

from flux_core import (
    FluxConfig,
    FluxError,
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
    reward_metric_names,
)
from flux_grpo.config import check_run

if TYPE_CHECKING:
    from datasets import Dataset

    from flux_grpo.rollouts import AsyncGRPORollouts

# TRL's log keys -> the metric names Flux users see. Each reward's own mean and std
# are added per run (see metric_names), other keys keep their name with '/' -> '_'.
METRIC_NAMES = {
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_fraction",
}

BackendFactory = Callable[[FluxConfig, Any, Any], RolloutBackend]


def metric_names(reward_functions: list[RewardFunction]) -> dict[str, str]:
    """METRIC_NAMES plus ``rewards/<name>/mean`` -> ``reward_<name>`` (and ``_std``)."""
    return {**METRIC_NAMES, **reward_metric_names(reward_functions)}


def sampling_params(config: FluxConfig) -> SamplingParams:
    """The sampling settings a rollout backend gets: the same ones TRL's own generation uses."""
    algorithm = config.algorithm
    return SamplingParams(
        max_new_tokens=algorithm.max_completion_length,
        temperature=algorithm.temperature,
        top_p=algorithm.top_p,
        top_k=config.trl.get("top_k", 0),
    )


def build_grpo_args(config: FluxConfig, precision: str, reward_functions: list[RewardFunction], model: Any):
    """The ``trl.GRPOConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import GRPOConfig

    algorithm = config.algorithm
    return build_trl_config(
        GRPOConfig,
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
        loss_type=algorithm.loss_type,
        scale_rewards=algorithm.scale_rewards,
        importance_sampling_level=algorithm.importance_sampling_level,
        num_iterations=algorithm.num_iterations,
        mask_truncated_completions=algorithm.mask_truncated_completions,
        reward_weights=[reward.weight for reward in reward_functions],
    )


def make_async_rollouts(config: FluxConfig, backend: RolloutBackend, sampling: SamplingParams) -> AsyncGRPORollouts:
    """The adaptive-async ``rollout_func`` of a run (``adaptive_async`` settings, the clip range as drift test)."""
    from flux_core import RolloutProducer, StalenessController
    from flux_grpo.rollouts import AsyncGRPORollouts

    settings, algorithm = config.adaptive_async, config.algorithm
    producer = RolloutProducer(
        backend,
        sampling,
        StalenessController(settings.max_staleness, settings.target_drift),
        steps_per_batch=algorithm.num_iterations,
        last_step=config.num_steps,
    )
    epsilon_high = algorithm.epsilon_high if algorithm.epsilon_high is not None else algorithm.epsilon
    return AsyncGRPORollouts(producer, algorithm.epsilon, epsilon_high, settings.max_staleness)


class GRPORunner(TRLRunner):
    """Builds policy, rewards, rollouts and TRL's GRPOTrainer for one GRPO run (see :class:`TRLRunner`).

    Args:
        config: the run's validated config (``algorithm.name: grpo``).
        show_progress: show a progress bar with the reward.
        rollout_backend: ``factory(config, model, tokenizer)`` of the backend that
            generates completions. ``None`` (default): :func:`flux_core.online.backends.create_backend`;
            when that is local, TRL's own ``generate`` path is used (same sampling, and it
            handles gradient checkpointing and sharded weights). Any backend given here
            generates through TRL's ``rollout_func`` seam.
    """

    # best/ is the highest reward: the base class feeds -reward where DPO feeds the loss.
    progress_metrics = ("reward", "completion_length")
    score_metric = "reward"
    higher_is_better = True
    eval_metric = "eval_reward"

    def __init__(self, config: FluxConfig, show_progress: bool = True, rollout_backend: BackendFactory | None = None):
        check_run(config)  # explain bad batch/group sizes before TRL does
        if config.sglang.base_url and config.trl.get("use_vllm"):
            raise FluxError(
                "sglang.base_url and trl.use_vllm both pick a rollout server; keep one (docs/rollouts.md compares them)"
            )
        super().__init__(config, show_progress)
        self.rollout_backend = rollout_backend
        self.async_rollouts: AsyncGRPORollouts | None = None
        self.reward_functions: list[RewardFunction] = build_reward_functions(config.algorithm.rewards)

    def step_metric_names(self) -> dict[str, str]:
        return metric_names(self.reward_functions)

    def fit(self, dataset, eval_dataset, callbacks, run=None):
        try:
            return super().fit(dataset, eval_dataset, callbacks, run)
        finally:
            if self.async_rollouts is not None:  # an error mid-run: stop the producer thread too
                self.async_rollouts.close()

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from trl import GRPOTrainer

        from flux_grpo.rollouts import FinalWeightSync, as_trl_rollout_func, correct_with_server_logprobs

        config = self.config
        precision = resolve_precision(config.precision)
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        model = load_model(config.model_path, precision, quantize=config.base_quantization)

        rollout_func = None
        factory = self.rollout_backend or create_backend
        # The async producer's thread tokenizes prompts: give the backend its own tokenizer
        # (a fast tokenizer used from two threads at once can fail with "Already borrowed").
        wants_async = config.adaptive_async.enabled
        backend = factory(config, model, copy.deepcopy(self.tokenizer) if wants_async else self.tokenizer)
        if self.rollout_backend is not None or not backend.is_local:
            if wants_async and not backend.is_local:
                rollout_func = self.async_rollouts = make_async_rollouts(config, backend, sampling_params(config))
            else:
                rollout_func = as_trl_rollout_func(backend, sampling_params(config))

        with warnings.catch_warnings():
            # Flux owns the rollout_func seam (and pins TRL < 1.17): TRL's "experimental" notice is not for users.
            warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[TRLReward(reward) for reward in self.reward_functions],
                args=build_grpo_args(config, precision, self.reward_functions, model),
                train_dataset=dataset,
                eval_dataset=eval_dataset,
                processing_class=self.tokenizer,
                peft_config=peft_config(config.lora),
                callbacks=list(callbacks),
                rollout_func=rollout_func,
            )
        if rollout_func is not None:
            if getattr(backend, "reports_logprobs", False):
                correct_with_server_logprobs(trainer)
            if self.async_rollouts is not None:
                self.async_rollouts.install(trainer)  # publishes the weights at its first rollout
            else:
                backend.sync_weights(trainer.model)  # the trainer may have wrapped the model (LoRA)
                trainer.add_callback(FinalWeightSync(backend, rollout_func).callback())
        return self.adopt(trainer)
