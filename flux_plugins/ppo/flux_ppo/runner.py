"""PPORunner: FluxConfig + prompts -> a policy trained with actor-critic PPO.

One training step is one PPO iteration, as in InstructGPT and TRL <= 1.12:

1. **rollout**: sample ``num_generations`` completions for each of ``batch_size`` prompts
   through the shared rollout interface (:mod:`flux_core.rollout`);
2. **score**: the configured rewards (:mod:`flux_core.rewards`), minus
   ``missing_eos_penalty`` for completions cut without an EOS token;
3. **experience**: log-probs of the sampling policy, of the reference, and the critic's
   values, in one no-grad pass; per-token rewards = ``-kl_coef * KL`` plus the score
   on the last token; GAE advantages and returns; advantage whitening;
4. **update**: ``ppo_epochs`` passes over the rollout in ``num_minibatches`` shuffled
   minibatches, each one optimizer update of ``policy_loss + vf_coef * value_loss``.

Every piece of math is a small function in :mod:`flux_ppo.advantages` and
:mod:`flux_ppo.losses`; the policy loss comes from the loss registry.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flux_core.callbacks import FitResult, StepCallback, StepReporter
from flux_core.checkpoint import REWARD_SCORE_NAMES, CheckpointManager
from flux_core.config import FluxConfig
from flux_core.errors import FluxError
from flux_core.modeling import load_model, load_tokenizer, peft_config, resolve_precision, torch_dtype
from flux_core.nonfinite import optimizer_learning_rate
from flux_core.plugins import get_plugin_manager
from flux_core.preemption import Preempted
from flux_core.registry import get_registry
from flux_core.rewards import REWARD_MODEL, RewardScores, build_reward_functions, score_completions
from flux_core.rollout import Rollout, SamplingParams, _eos_token_ids, create_backend
from flux_core.run_context import RunContext
from flux_ppo.advantages import (
    explained_variance,
    generalized_advantage_estimation,
    kl_penalty,
    masked_mean,
    masked_whiten,
    token_level_rewards,
)
from flux_ppo.kl_control import AdaptiveKLController, FixedKLController
from flux_ppo.losses import (
    PolicyLossInputs,
    approx_kl,
    clipped_value_loss,
    policy_clip_fraction,
    value_clip_fraction,
)
from flux_ppo.models import (
    ReferencePolicy,
    completion_logprobs,
    completion_values,
    disable_dropout,
    freeze,
    load_value_model,
)
from flux_ppo.scoring import TokenRewardModel, token_level_reward_functions

if TYPE_CHECKING:
    from datasets import Dataset

REFERENCE_POLICIES = ("copy", "adapter", "none")


@contextlib.contextmanager
def quiet_accelerate_logs():
    """accelerate logs every file its checkpointing functions touch at INFO; keep that out of runs.

    Its logger also needs accelerate's process state, which a PPO run (no Accelerator) sets up here.
    """
    from accelerate import PartialState

    PartialState()
    logger = logging.getLogger("accelerate.checkpointing")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------- rollout tensors


@dataclass(frozen=True)
class RolloutBatch:
    """A rollout as tensors: left-padded prompts followed by right-padded completions.

    Attributes:
        input_ids: ``[n, prompt_width + completion_length]``.
        attention_mask: 1 on prompt and completion tokens, 0 on padding (same shape).
        completion_mask: ``[n, completion_length]``, 1 on completion tokens (EOS included).
        truncated: ``[n]``, True where generation hit ``max_completion_length`` without EOS.
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    truncated: Tensor

    @property
    def completion_length(self) -> int:
        return self.completion_mask.size(1)

    def _map(self, fn) -> RolloutBatch:
        tensors = (self.input_ids, self.attention_mask, self.completion_mask, self.truncated)
        return RolloutBatch(*(fn(tensor) for tensor in tensors))

    def select(self, rows: Tensor) -> RolloutBatch:
        """The rollouts at ``rows``."""
        return self._map(lambda tensor: tensor[rows])

    def to(self, device: torch.device) -> RolloutBatch:
        return self._map(lambda tensor: tensor.to(device))


def collate_rollouts(rollouts: Sequence[Rollout], pad_token_id: int) -> RolloutBatch:
    """Pad rollouts so every completion starts at the same column."""
    prompt_width = max(len(r.prompt_ids) for r in rollouts)
    completion_length = max(max(len(r.completion_ids) for r in rollouts), 1)
    input_ids, attention_mask, completion_mask = [], [], []
    for rollout in rollouts:
        prompt, completion = rollout.prompt_ids, rollout.completion_ids
        left, right = prompt_width - len(prompt), completion_length - len(completion)
        input_ids.append([pad_token_id] * left + prompt + completion + [pad_token_id] * right)
        attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_mask.append([1.0] * len(completion) + [0.0] * right)
    return RolloutBatch(
        input_ids=torch.tensor(input_ids),
        attention_mask=torch.tensor(attention_mask),
        completion_mask=torch.tensor(completion_mask),
        truncated=torch.tensor([r.truncated for r in rollouts]),
    )


@dataclass(frozen=True)
class Experience:
    """One rollout with everything the PPO update needs (tensors ``[n, completion_length]``).

    ``is_weights``: truncated importance weights of a server's rollouts (see
    :func:`behaviour_importance_weights`); ``None`` when the policy itself sampled them.
    """

    batch: RolloutBatch
    logprobs: Tensor
    ref_logprobs: Tensor | None
    values: Tensor
    advantages: Tensor
    returns: Tensor
    metrics: dict[str, float]
    is_weights: Tensor | None = None


def behaviour_importance_weights(
    rollouts: Sequence[Rollout], logprobs: Tensor, mask: Tensor, cap: float
) -> tuple[Tensor | None, dict[str, float]]:
    """Truncated importance weights ``min(exp(logp_policy - logp_behaviour), cap)`` per token.

    ``logp_behaviour`` is what the rollout server reported for each sampled token (its
    weights or numerics may differ from the trainer's); ``logprobs`` are the policy's own,
    recomputed before the update (PPO's ``old_logprobs``). Returns ``(None, {})`` when the
    rollouts carry no server log-probs (local generation samples from the policy itself).
    """
    if any(rollout.logprobs is None for rollout in rollouts):
        return None, {}
    behaviour = torch.zeros_like(logprobs)
    for row, rollout in enumerate(rollouts):
        behaviour[row, : len(rollout.logprobs)] = torch.tensor(rollout.logprobs, dtype=logprobs.dtype)
    difference = (logprobs - behaviour) * mask
    weights = torch.exp(difference).clamp(max=cap) * mask
    tokens = mask.bool()
    metrics = {
        "behaviour_logprob_difference_max": difference[tokens].abs().max().item() if tokens.any() else 0.0,
        "behaviour_is_weight_mean": weights[tokens].mean().item() if tokens.any() else 1.0,
        "behaviour_is_truncated_fraction": (difference[tokens] > math.log(cap)).float().mean().item()
        if tokens.any()
        else 0.0,
    }
    return weights, metrics


def prompt_batches(records: Dataset, batch_size: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """Endless batches of rows (as dicts): each pass over the data in a new seeded order."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            epoch = list(range(len(records)))
            rng.shuffle(epoch)
            order.extend(epoch)
        yield records.select(order[:batch_size]).to_list()
        del order[:batch_size]


# ---------------------------------------------------------------------- runner


class PPORunner:
    """Builds policy, reference, value model, rewards and rollout backend; runs PPO."""

    def __init__(self, config: FluxConfig, show_progress: bool = True):
        self.config = config
        self.algorithm = config.algorithm
        self.show_progress = show_progress
        self.rollout_size = config.batch_size * self.algorithm.num_generations
        if self.rollout_size % self.algorithm.num_minibatches:
            raise FluxError(
                f"algorithm.num_minibatches: {self.algorithm.num_minibatches} does not divide the rollout batch "
                f"(batch_size * num_generations = {self.rollout_size}); pick a divisor of {self.rollout_size}"
            )
        self.minibatch_size = self.rollout_size // self.algorithm.num_minibatches
        self.guard = RunContext.fresh(config).guard  # fit() replaces it with its run's
        self.model: Any = None
        self.tokenizer: Any = None
        self.value_model: Any = None
        self.autocast_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ building

    def reference_policy(self) -> str:
        use_lora = self.config.lora is not None
        # num_examples=None: PPO scores fresh completions, so no policy may precompute.
        policy = get_plugin_manager().hook.reference_policy(config=self.config, use_lora=use_lora, num_examples=None)
        if policy == "precompute":
            raise FluxError(
                "algorithm.reference_policy: PPO scores fresh completions every step, so reference log-probs "
                "cannot be precomputed; use copy, adapter (with lora:) or none"
            )
        if policy not in REFERENCE_POLICIES:
            raise FluxError(f"reference policy {policy!r} is not one of {', '.join(REFERENCE_POLICIES)}")
        if policy == "adapter" and not use_lora:
            raise FluxError("algorithm.reference_policy: adapter needs a lora: block (there is no adapter to disable)")
        return policy

    def value_model_source(self) -> tuple[str, str]:
        """Where the critic starts, and the setting that chose it (for error messages).

        ``value_model: null`` with exactly one reward, a reward model, starts from that reward
        model, head included (InstructGPT, TRL's PPO example): its value estimates begin on the
        score's scale. Otherwise: the policy's trunk with a new scalar head.
        """
        algorithm = self.algorithm
        if algorithm.value_model:
            return algorithm.value_model, "algorithm.value_model"
        specs = algorithm.reward_specs
        if len(specs) == 1 and specs[0].name == REWARD_MODEL:
            return specs[0].kwargs["path"], "algorithm.reward_model"
        return self.config.model_path, "model_path"

    def build(self) -> None:
        from peft import get_peft_model

        config, algorithm = self.config, self.algorithm
        torch.manual_seed(config.seed)  # LoRA and value-head init, then sampling
        # Weights stay fp32 whatever the precision: with bf16 the forwards run under autocast
        # (mixed precision). Pure-bf16 weights lose every AdamW update smaller than half a bf16
        # ulp (2^-8 relative) and quantise the critic's values, which is where the GPU run of
        # the demo differed from the CPU one (issue #11); the log-prob, KL and value math is fp32.
        precision = resolve_precision(config.precision)
        self.autocast_dtype = None if precision == "fp32" else torch_dtype(precision)
        dtype = torch.float32
        reference_kind = self.reference_policy()
        self.loss = get_registry().get_loss(algorithm.loss, "ppo")
        self.reward_functions = build_reward_functions(algorithm.reward_specs)

        self.tokenizer = load_tokenizer(config.model_path)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        policy = load_model(config.model_path, "fp32").to(self.device)
        disable_dropout(policy)
        if config.lora is not None:
            policy = get_peft_model(policy, peft_config(config.lora))
        self.model = policy
        reference_model = (
            freeze(load_model(config.model_path, "fp32").to(self.device)) if reference_kind == "copy" else None
        )
        self.reference = ReferencePolicy(reference_kind, model=reference_model, policy=policy)

        value_path, value_key = self.value_model_source()
        value_model = load_value_model(value_path, dtype, key=value_key).to(self.device)
        value_model.config.pad_token_id = self.tokenizer.pad_token_id
        disable_dropout(value_model)
        if algorithm.value_lora and config.lora is not None:
            lora = peft_config(config.lora)
            lora.task_type = "SEQ_CLS"  # keeps the scalar `score` head fully trainable
            value_model = get_peft_model(value_model, lora)
        self.value_model = value_model
        policy.train()
        value_model.train()

        value_lr = algorithm.value_learning_rate or config.learning_rate
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
                {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr},
            ],
            eps=algorithm.adam_epsilon,
            weight_decay=0.0,
        )
        num_steps = config.num_steps
        decay = (lambda step: 1.0 - step / num_steps) if algorithm.lr_scheduler == "linear" else (lambda step: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.kl_controller = (
            AdaptiveKLController(algorithm.kl_coef, algorithm.kl_target, algorithm.kl_horizon)
            if algorithm.adaptive_kl
            else FixedKLController(algorithm.kl_coef)
        )
        self.token_scorers: list[TokenRewardModel] = []
        if algorithm.reward_model_input == "tokens":
            self.reward_functions, self.token_scorers = token_level_reward_functions(
                self.reward_functions, self.tokenizer, _eos_token_ids(policy, self.tokenizer)
            )
        self.backend = create_backend(config, policy, self.tokenizer)
        if not self.backend.is_local:
            self.backend.sync_weights(policy)  # a server may have started from other weights
        self.sampling = SamplingParams(
            max_new_tokens=algorithm.max_completion_length, temperature=algorithm.temperature
        )
        # A dedicated generator for minibatch shuffling keeps it independent of sampling.
        self.shuffle_generator = torch.Generator().manual_seed(config.seed)

    def mixed_precision(self):
        """autocast to bf16/fp16 for the forwards when the run's precision asks for it (fp32: a no-op)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ experience

    def rollout(
        self, records: list[dict[str, Any]], sampling: SamplingParams, n: int
    ) -> tuple[list[Rollout], RewardScores]:
        """Sample ``n`` completions per record and score them.

        Returns the rollouts and their :class:`flux_core.rewards.RewardScores`.
        """
        prompts = [record["prompt"] for record in records]
        with self.mixed_precision():
            rollouts = self.backend.generate(prompts, n=n, sampling=sampling)
        owners = [records[r.prompt_index] for r in rollouts]
        completions = [
            [{"role": "assistant", "content": r.text}] if isinstance(owner["prompt"], list) else r.text
            for r, owner in zip(rollouts, owners)
        ]
        for scorer in self.token_scorers:  # reward models that score the sampled ids themselves
            scorer.bind(rollouts)
        column_names = sorted({key for record in records for key in record} - {"prompt"})
        columns = {name: [owner.get(name) for owner in owners] for name in column_names}
        scores = score_completions(self.reward_functions, [owner["prompt"] for owner in owners], completions, columns)
        return rollouts, scores

    @torch.no_grad()
    def _score_tokens(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Sampling-policy log-probs, entropy, reference log-probs and values, in chunks
        of one minibatch (the size the update already fits in memory)."""
        temperature, length = self.algorithm.temperature, batch.completion_length
        parts = defaultdict(list)
        for rows in torch.arange(self.rollout_size).split(self.minibatch_size):
            chunk = batch.select(rows)
            logprobs, entropy = completion_logprobs(
                self.model, chunk.input_ids, chunk.attention_mask, length, temperature, with_entropy=True
            )
            parts["logprobs"].append(logprobs)
            parts["entropy"].append(entropy)
            parts["values"].append(completion_values(self.value_model, chunk.input_ids, chunk.attention_mask, length))
            ref = self.reference.logprobs(chunk.input_ids, chunk.attention_mask, length, temperature)
            if ref is not None:
                parts["ref_logprobs"].append(ref)
        ref_logprobs = torch.cat(parts["ref_logprobs"]) if parts["ref_logprobs"] else None
        return torch.cat(parts["logprobs"]), ref_logprobs, torch.cat(parts["values"]), torch.cat(parts["entropy"])

    def make_experience(self, records: list[dict[str, Any]]) -> Experience:
        algorithm = self.algorithm
        rollouts, scores = self.rollout(records, self.sampling, algorithm.num_generations)
        batch = collate_rollouts(rollouts, self.tokenizer.pad_token_id).to(self.device)
        mask = batch.completion_mask
        # A completion no reward applies to (every reward returned None) scores 0, as in TRL.
        score = torch.tensor([0.0 if value is None else value for value in scores.total], device=self.device)
        if algorithm.missing_eos_penalty is not None:
            score = score - algorithm.missing_eos_penalty * batch.truncated.float()

        with self.mixed_precision():
            logprobs, ref_logprobs, values, entropy = self._score_tokens(batch)
        is_weights, is_metrics = behaviour_importance_weights(rollouts, logprobs, mask, algorithm.behaviour_is_cap)
        if ref_logprobs is not None:
            kl, kl_coef = kl_penalty(logprobs, ref_logprobs, algorithm.kl_estimator) * mask, self.kl_controller.value
        else:  # reference_policy: none
            kl, kl_coef = torch.zeros_like(logprobs), 0.0
        rewards = token_level_rewards(score, kl, mask, kl_coef)
        if algorithm.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = generalized_advantage_estimation(rewards, values, mask, algorithm.gamma, algorithm.lam)
        if algorithm.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        sequence_kl = kl.sum(dim=1)
        non_score_reward = (-kl_coef * sequence_kl).mean().item()
        metrics = {
            **scores.metrics(),
            "kl": sequence_kl.mean().item(),
            "kl_coef": kl_coef,
            "entropy": masked_mean(entropy, mask).item(),
            "non_score_reward": non_score_reward,
            "rlhf_reward": score.mean().item() + non_score_reward,
            "completion_length": mask.sum(dim=1).mean().item(),
            "truncated_fraction": batch.truncated.float().mean().item(),
            "value_explained_variance": explained_variance(values, returns, mask).item(),
            **is_metrics,
        }
        return Experience(batch, logprobs, ref_logprobs, values, advantages, returns, metrics, is_weights)

    # ------------------------------------------------------------------ update

    def update(self, experience: Experience, step: int = 0) -> dict[str, float]:
        """``ppo_epochs`` passes of minibatch updates; returns the mean of each statistic.

        Before each optimizer update the non-finite guard checks its loss, gradient norm
        and learning rate (``on_nonfinite``): ``stop`` raises, ``skip`` drops that update.
        """
        algorithm = self.algorithm
        length = experience.batch.completion_length
        policy_params, value_params = (group["params"] for group in self.optimizer.param_groups)
        stats = defaultdict(list)
        for _ in range(algorithm.ppo_epochs):
            order = torch.randperm(self.rollout_size, generator=self.shuffle_generator)
            for rows in order.split(self.minibatch_size):
                batch = experience.batch.select(rows)
                mask = batch.completion_mask
                with self.mixed_precision():
                    logprobs, _ = completion_logprobs(
                        self.model, batch.input_ids, batch.attention_mask, length, algorithm.temperature
                    )
                    values = completion_values(self.value_model, batch.input_ids, batch.attention_mask, length)
                inputs = PolicyLossInputs(
                    logprobs=logprobs,
                    old_logprobs=experience.logprobs[rows],
                    advantages=experience.advantages[rows],
                    completion_mask=mask,
                    ref_logprobs=None if experience.ref_logprobs is None else experience.ref_logprobs[rows],
                )
                per_token_loss = self._policy_loss_per_token(inputs)
                if experience.is_weights is not None:  # server rollouts: truncated importance sampling
                    per_token_loss = per_token_loss * experience.is_weights[rows]
                policy_loss = masked_mean(per_token_loss, mask)
                value_loss = clipped_value_loss(
                    values, experience.values[rows], experience.returns[rows], mask, algorithm.cliprange_value
                )
                loss = policy_loss + algorithm.vf_coef * value_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Policy and critic are clipped each on its own: one joint norm lets the critic's
                # (large, early) value-loss gradient shrink the policy's step to almost nothing.
                max_norm = algorithm.max_grad_norm if algorithm.max_grad_norm is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(policy_params, max_norm)
                value_grad_norm = torch.nn.utils.clip_grad_norm_(value_params, max_norm)
                checked = {
                    "loss": loss.item(),
                    "grad_norm": math.hypot(grad_norm.item(), value_grad_norm.item()),  # NaN/inf propagate
                    "learning_rate": optimizer_learning_rate(self.optimizer),
                }
                if self.guard.check(step, checked):
                    self.optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient alone
                else:
                    self.optimizer.step()

                with torch.no_grad():
                    stats["loss"].append(loss.item())
                    stats["policy_loss"].append(policy_loss.item())
                    stats["value_loss"].append(value_loss.item())
                    stats["clipfrac"].append(policy_clip_fraction(inputs, algorithm.cliprange).item())
                    stats["value_clipfrac"].append(
                        value_clip_fraction(
                            values, experience.values[rows], experience.returns[rows], mask, algorithm.cliprange_value
                        ).item()
                    )
                    stats["approx_kl"].append(approx_kl(logprobs, inputs.old_logprobs, mask).item())
                    stats["grad_norm"].append(grad_norm.item())
                    stats["value_grad_norm"].append(value_grad_norm.item())
        return {name: sum(values) / len(values) for name, values in stats.items()}

    def _policy_loss_per_token(self, inputs: PolicyLossInputs) -> Tensor:
        per_token = self.loss.fn(inputs, cliprange=self.algorithm.cliprange, **self.algorithm.loss_kwargs)
        if not isinstance(per_token, Tensor) or per_token.shape != inputs.logprobs.shape:
            shape = tuple(per_token.shape) if isinstance(per_token, Tensor) else type(per_token).__name__
            raise FluxError(
                f"ppo loss '{self.loss.name}' must return one value per completion token "
                f"(shape {tuple(inputs.logprobs.shape)}), got {shape}"
            )
        return per_token

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, records: Dataset) -> float:
        """Mean reward of greedy completions of ``records`` (deterministic)."""
        greedy = SamplingParams(max_new_tokens=self.algorithm.max_completion_length, temperature=0.0)
        totals = []
        for start in range(0, len(records), self.rollout_size):
            chunk = records.select(range(start, min(start + self.rollout_size, len(records)))).to_list()
            _, scores = self.rollout(chunk, greedy, n=1)
            totals.extend(value for value in scores.total if value is not None)
        return sum(totals) / len(totals) if totals else 0.0

    # ------------------------------------------------------------------ resume state

    STATE_DIR = "ppo_state"

    def save_state(self, directory: Path) -> None:
        """Write what continuing this run needs into ``directory/ppo_state`` (a checkpoint-N).

        accelerate's ``save_accelerator_state`` writes the critic's trainable weights
        (value model or its adapter, and the value head), the optimizer (policy and
        critic groups), the LR scheduler and the python/numpy/torch/cuda RNG states;
        ``ppo.pt`` adds the KL coefficient and the minibatch-shuffle generator. The
        policy's weights are the checkpoint's own (merged, or ``adapter/`` with LoRA);
        the data position is the step (the prompt order is a seeded replay).
        """
        from accelerate.checkpointing import save_accelerator_state

        state_dir = directory / self.STATE_DIR
        state_dir.mkdir()
        critic = {name: p.detach().contiguous() for name, p in self.value_model.named_parameters() if p.requires_grad}
        with quiet_accelerate_logs():
            save_accelerator_state(str(state_dir), [critic], [self.optimizer], [self.scheduler], [], 0, step=0)
        extra = {"kl_coef": self.kl_controller.value, "shuffle_generator": self.shuffle_generator.get_state()}
        torch.save(extra, state_dir / "ppo.pt")

    def restore_state(self, checkpoint: Path) -> None:
        """Load a :meth:`save_state` checkpoint into the built policy, critic and optimizer."""
        from accelerate.checkpointing import load_accelerator_state

        from flux_core.resume import ResumeError, restore_weights

        state_dir = checkpoint / self.STATE_DIR
        if not state_dir.is_dir():
            raise ResumeError(f"cannot resume {checkpoint}: no {self.STATE_DIR}/ (not written by a PPO run)")
        restore_weights(self.model, checkpoint)
        with quiet_accelerate_logs():
            loaded = load_accelerator_state(
                str(state_dir), [self.value_model], [self.optimizer], [self.scheduler], [], 0, strict=False
            )
        if "step" not in loaded:  # accelerate only logs a failure to restore the RNG states
            raise ResumeError(f"cannot resume {checkpoint}: its random states could not be restored")
        extra = torch.load(state_dir / "ppo.pt", weights_only=True)
        self.kl_controller.value = float(extra["kl_coef"])
        self.shuffle_generator.set_state(extra["shuffle_generator"])
        self.backend.sync_weights(self.model)

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        records: Dataset,
        eval_records: Dataset | None,
        callbacks: list[StepCallback],
        run: RunContext | None = None,
    ) -> FitResult:
        """Train; ``run`` (from ``FluxTrainer.fit``; None: a fresh run) carries the run's
        non-finite guard and, when resuming, the checkpoint to continue from."""
        config = self.config
        run = run or RunContext.fresh(config)
        self.guard = run.guard
        self.build()
        evaluate = (lambda: -self.evaluate(eval_records)) if eval_records else None
        # PPO's loss is no measure of progress (advantages are re-normalised every batch):
        # best/ is the highest reward, fed as -reward where DPO feeds the loss.
        checkpoints = CheckpointManager(
            config.output_dir, config, self.tokenizer, config.checkpoint.save_steps, evaluate, REWARD_SCORE_NAMES
        )
        checkpoints.attach(run, self.save_state)

        def on_step(result, model):
            reward = result.metrics.get("reward")
            checkpoints.on_step(result.step, None if reward is None else -reward, model)

        reporter = StepReporter(
            config,
            callbacks,
            metric_names={},  # the runner already uses Flux's metric names
            progress_metrics=("reward", "kl"),
            show_progress=self.show_progress,
            on_step=on_step,
            run=run,
        )
        batches = prompt_batches(records, config.batch_size, config.seed)
        step = 0
        if run.resume is not None:
            step = run.resume.step
            for _ in range(step):  # the data position: replay the seeded prompt order
                next(batches)
            self.restore_state(run.resume.path)  # last: it restores the RNG states
        try:
            for step in range(step + 1, config.num_steps + 1):
                experience = self.make_experience(next(batches))
                learning_rate = self.optimizer.param_groups[0]["lr"]
                stats = self.update(experience, step)
                self.scheduler.step()
                self.backend.sync_weights(self.model)
                self.kl_controller.update(experience.metrics["kl"], self.rollout_size)
                reporter.report(step, {**experience.metrics, **stats, "learning_rate": learning_rate}, self.model)
                if run.preemption.should_stop():  # SIGTERM: this step is done; save it and stop
                    checkpoints.save_for_resume(step, self.model)
                    raise Preempted(step)
        finally:
            reporter.close()
        checkpoints.finalize(step, self.model)
        return FitResult.from_run(reporter.history, step, checkpoints)
