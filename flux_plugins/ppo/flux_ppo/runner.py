"""PPORunner: FluxConfig + prompts -> a policy trained with actor-critic PPO.

One training step is one PPO iteration, as in InstructGPT and TRL <= 1.12:

1. **rollout**: sample ``num_generations`` completions for each of ``batch_size`` prompts
   through the shared rollout interface (:mod:`flux_core.online.rollout`);
2. **score**: the configured rewards (:mod:`flux_core.online.rewards`), minus
   ``missing_eos_penalty`` for completions cut without an EOS token;
3. **experience**: log-probs of the sampling policy, of the reference, and the critic's
   values, in one no-grad pass; per-token rewards = ``-kl_coef * KL`` plus the score
   on the last token; GAE advantages and returns; advantage whitening;
4. **update**: ``ppo_epochs`` passes over the rollout in ``num_minibatches`` shuffled
   minibatches, each one optimizer update of ``policy_loss + vf_coef * value_loss``.

Every piece of math is a small function in :mod:`flux_ppo.advantages` and
:mod:`flux_ppo.losses`; the policy loss comes from the loss registry.

Several processes (torchrun / accelerate launch): ``batch_size`` is per process. Each
process samples and scores its share of the step's prompts and computes the log-probs and
values of its rows; those are gathered, so every process holds the whole rollout and its
KL, GAE, whitening statistics and metrics. Each minibatch is split over the processes;
policy and critic are wrapped in DDP (through accelerate), which averages their gradients,
with each process's loss scaled so the average is the minibatch's token mean. The frozen
reference and reward models stay unwrapped. Only the main process writes metrics.jsonl,
the progress bar and checkpoints; stop/skip decisions use reduced numbers, so all agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from flux_core.config import FluxConfig
from flux_core.errors import FluxError
from flux_core.modeling import load_model, load_tokenizer, peft_config, resolve_precision, torch_dtype
from flux_core.online.backends import create_backend
from flux_core.online.rewards import REWARD_MODEL, RewardScores, build_reward_functions, score_completions
from flux_core.online.rollout import Rollout, SamplingParams
from flux_core.online.tokens import eos_token_ids as _eos_token_ids
from flux_core.plugins import get_plugin_manager
from flux_core.registry import get_registry
from flux_core.run.checkpoint import REWARD_SCORE_NAMES, CheckpointManager
from flux_core.run.context import RunContext
from flux_core.run.nonfinite import optimizer_learning_rate
from flux_core.run.preemption import Preempted
from flux_core.run.results import FitResult, StepCallback, StepReporter, StepResult
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
    compute_logits_in_fp32,
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

    Its logger also needs accelerate's process state (set up here when no Accelerator did).
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


def merge_scores(parts: Sequence[RewardScores]) -> RewardScores:
    """One :class:`RewardScores` of the processes' scores, in process order."""
    names = list(parts[0].by_name)
    return RewardScores(
        total=[value for part in parts for value in part.total],
        by_name={name: [value for part in parts for value in part.by_name[name]] for name in names},
        weights=dict(parts[0].weights),
    )


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


class CriticForward(torch.nn.Module):
    """The critic's per-token values as one module ``forward``, so that DDP (which only
    reduces gradients of parameters used through its wrapper's forward) can wrap it:
    :func:`flux_ppo.models.completion_values` calls the value model's trunk and head apart."""

    def __init__(self, value_model: torch.nn.Module):
        super().__init__()
        self.value_model = value_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, completion_length: int) -> Tensor:
        return completion_values(self.value_model, input_ids, attention_mask, completion_length)


def prompt_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of prompt ``index`` (in the global batch) at ``step``."""
    return random.Random(f"{seed}:{step}:{index}").getrandbits(63)


class PPORunner:
    """Builds policy, reference, value model, rewards and rollout backend; runs PPO."""

    def __init__(self, config: FluxConfig, show_progress: bool = True):
        self.config = config
        self.algorithm = config.algorithm
        self.show_progress = show_progress
        # batch_size is per process: this process's share of the rollout.
        self.rollout_size = config.batch_size * self.algorithm.num_generations
        if self.rollout_size % self.algorithm.num_minibatches:
            raise FluxError(
                f"algorithm.num_minibatches: {self.algorithm.num_minibatches} does not divide the rollout batch "
                f"(batch_size * num_generations = {self.rollout_size}); pick a divisor of {self.rollout_size}"
            )
        # This process's share of each minibatch (num_processes shares make one minibatch).
        self.minibatch_size = self.rollout_size // self.algorithm.num_minibatches
        self.guard = RunContext.fresh(config).guard  # fit() replaces it with its run's
        self.model: Any = None
        self.tokenizer: Any = None
        self.value_model: Any = None
        self.autocast_dtype: torch.dtype | None = None
        self.accelerator: Any = None
        self.num_processes, self.process_index = 1, 0
        self.step = 0  # the step being trained (seeds per-prompt sampling)

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

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
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from peft import get_peft_model

        config, algorithm = self.config, self.algorithm
        # Under torchrun / accelerate launch this joins the process group (gloo on CPU, NCCL on GPUs).
        # Forwards run under PPORunner's own autocast, so accelerate adds no mixed precision. An
        # earlier run in this process (a bf16 TRL trainer on a GPU, a CPU one) leaves its mixed
        # precision and device in accelerate's process-wide state, which refuses different ones:
        # start afresh, as transformers' TrainingArguments does (a process group stays joined).
        AcceleratorState._reset_state(reset_partial_state=True)
        self.accelerator = accelerator = Accelerator(mixed_precision="no")
        self.num_processes, self.process_index = accelerator.num_processes, accelerator.process_index
        torch.manual_seed(config.seed)  # LoRA and value-head init (the same on every rank), then sampling
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
        self.device = accelerator.device
        policy = load_model(config.model_path, "fp32").to(self.device)
        disable_dropout(policy)
        if config.lora is not None:
            policy = get_peft_model(policy, peft_config(config.lora))
        self.model = policy
        reference_model = (
            freeze(load_model(config.model_path, "fp32").to(self.device)) if reference_kind == "copy" else None
        )
        self.reference = ReferencePolicy(reference_kind, model=reference_model, policy=policy)
        if algorithm.fp32_lm_head:  # a no-op in fp32; under autocast the logits stay full precision
            for model in filter(None, (policy, reference_model)):
                compute_logits_in_fp32(model)

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
        # The trained networks go through accelerate: under several processes DDP all-reduces
        # (averages) their gradients in backward. The frozen reference and reward models are
        # not wrapped (no gradients to reduce); the rollout and no-grad scoring passes use the
        # plain modules, which share the wrapped ones' parameters.
        self.policy_train: Any = policy
        self.critic_train: Any = CriticForward(value_model)
        if self.num_processes > 1:
            self.policy_train, self.critic_train = accelerator.prepare(self.policy_train, self.critic_train)

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
        # A dedicated generator for minibatch shuffling keeps it independent of sampling
        # (and the same on every rank: they shuffle the one global rollout alike).
        self.shuffle_generator = torch.Generator().manual_seed(config.seed)
        if self.process_index > 0:  # without seed_per_prompt, ranks must not draw the same samples
            torch.manual_seed(config.seed + 1_000_003 * self.process_index)

    def mixed_precision(self):
        """autocast to bf16/fp16 for the forwards when the run's precision asks for it (fp32: a no-op)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ experience

    def rollout(
        self, records: list[dict[str, Any]], sampling: SamplingParams, n: int, first_index: int | None = None
    ) -> tuple[list[Rollout], RewardScores]:
        """Sample ``n`` completions per record and score them.

        ``first_index``: the index of ``records[0]`` in the step's global batch; with
        ``seed_per_prompt`` each prompt is then sampled under its own seed (see :func:`prompt_seed`).
        Returns the rollouts and their :class:`flux_core.online.rewards.RewardScores`.
        """
        prompts = [record["prompt"] for record in records]
        with self.mixed_precision():
            if first_index is not None and self.algorithm.seed_per_prompt and sampling.temperature > 0:
                rollouts = self._generate_seeded(prompts, n, sampling, first_index)
            else:
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

    def _generate_seeded(self, prompts: list[Any], n: int, sampling: SamplingParams, first_index: int) -> list[Rollout]:
        """One generate call per prompt, under a seed of its own: a prompt's completions are the
        same whichever process samples it and whatever else is in its batch."""
        devices = [self.device] if self.device.type == "cuda" else []
        rollouts: list[Rollout] = []
        for offset, prompt in enumerate(prompts):
            with torch.random.fork_rng(devices=devices):  # the run's own RNG stream is left as it was
                torch.manual_seed(prompt_seed(self.config.seed, self.step, first_index + offset))
                sampled = self.backend.generate([prompt], n=n, sampling=sampling)
            rollouts.extend(dataclasses.replace(rollout, prompt_index=offset) for rollout in sampled)
        return rollouts

    @torch.no_grad()
    def _score_tokens(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Sampling-policy log-probs, entropy, reference log-probs and values, in chunks
        of one minibatch (the size the update already fits in memory)."""
        temperature, length = self.algorithm.temperature, batch.completion_length
        parts = defaultdict(list)
        for rows in torch.arange(batch.input_ids.size(0)).split(self.minibatch_size):
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

    def make_experience(self, records: list[dict[str, Any]], first_index: int = 0) -> Experience:
        """The experience of the step's global rollout, the same on every process.

        ``records`` are this process's share of the prompts, at ``first_index`` in the global
        batch. Each process samples and scores its share and computes log-probs and values
        for its rows; the rollouts, scores and those tensors are then gathered, so the KL,
        GAE, whitening statistics and metrics below are those of the whole rollout, as one
        process with the global batch would compute them.
        """
        algorithm = self.algorithm
        rollouts, scores = self.rollout(records, self.sampling, algorithm.num_generations, first_index)
        local_count = len(rollouts)
        if self.num_processes > 1:
            from accelerate.utils import gather_object

            rollouts = gather_object(rollouts)
            scores = merge_scores(gather_object([scores]))
        # Padded to the global widths, so each row is scored as one process would score it.
        batch = collate_rollouts(rollouts, self.tokenizer.pad_token_id).to(self.device)
        mask = batch.completion_mask
        # A completion no reward applies to (every reward returned None) scores 0, as in TRL.
        score = torch.tensor([0.0 if value is None else value for value in scores.total], device=self.device)
        if algorithm.missing_eos_penalty is not None:
            score = score - algorithm.missing_eos_penalty * batch.truncated.float()

        with self.mixed_precision():
            if self.num_processes > 1:
                start = self.process_index * local_count
                own = batch.select(torch.arange(start, start + local_count, device=self.device))
                parts = self._score_tokens(own)
                logprobs, ref_logprobs, values, entropy = (
                    None if part is None else self.accelerator.gather(part.contiguous()) for part in parts
                )
            else:
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

    def _global_means(self, means: list[Tensor], tokens: Tensor, total_tokens: Tensor) -> list[float]:
        """Token-weighted means over the whole minibatch from each process's means over its rows."""
        if self.num_processes == 1:
            return [mean.item() for mean in means]
        stacked = torch.stack([mean.detach().float() for mean in means]) * (tokens / total_tokens.clamp(min=1))
        return self.accelerator.reduce(stacked, reduction="sum").tolist()

    def update(self, experience: Experience, step: int = 0) -> dict[str, float]:
        """``ppo_epochs`` passes of minibatch updates; returns the mean of each statistic.

        Every process holds the whole rollout and shuffles it alike; each minibatch is split
        into ``num_processes`` shares, one per process. A process's loss is its share's
        token mean scaled by ``its tokens * num_processes / minibatch tokens``, so the
        gradients DDP averages are those of the minibatch's token mean, as on one process.

        Before each optimizer update the non-finite guard checks its loss, gradient norm
        and learning rate (``on_nonfinite``): ``stop`` raises, ``skip`` drops that update.
        Every process checks the same (reduced) numbers, so all take the same decision.
        """
        algorithm = self.algorithm
        length = experience.batch.completion_length
        policy_params, value_params = (group["params"] for group in self.optimizer.param_groups)
        share_size, rank = self.minibatch_size, self.process_index
        stats = defaultdict(list)
        for _ in range(algorithm.ppo_epochs):
            order = torch.randperm(self.rollout_size * self.num_processes, generator=self.shuffle_generator)
            for minibatch in order.split(share_size * self.num_processes):
                rows = minibatch[rank * share_size : (rank + 1) * share_size]
                batch = experience.batch.select(rows)
                mask = batch.completion_mask
                tokens = mask.sum()
                total_tokens = experience.batch.completion_mask[minibatch].sum()
                with self.mixed_precision():
                    logprobs, _ = completion_logprobs(
                        self.policy_train, batch.input_ids, batch.attention_mask, length, algorithm.temperature
                    )
                    values = self.critic_train(batch.input_ids, batch.attention_mask, length)
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
                if self.num_processes > 1:  # DDP averages the processes' gradients
                    (loss * (tokens * self.num_processes / total_tokens.clamp(min=1))).backward()
                else:
                    loss.backward()
                # Policy and critic are clipped each on its own: one joint norm lets the critic's
                # (large, early) value-loss gradient shrink the policy's step to almost nothing.
                max_norm = algorithm.max_grad_norm if algorithm.max_grad_norm is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(policy_params, max_norm)
                value_grad_norm = torch.nn.utils.clip_grad_norm_(value_params, max_norm)
                with torch.no_grad():
                    means = self._global_means(
                        [
                            policy_loss,
                            value_loss,
                            policy_clip_fraction(inputs, algorithm.cliprange),
                            value_clip_fraction(
                                values,
                                experience.values[rows],
                                experience.returns[rows],
                                mask,
                                algorithm.cliprange_value,
                            ),
                            approx_kl(logprobs, inputs.old_logprobs, mask),
                        ],
                        tokens,
                        total_tokens,
                    )
                global_policy_loss, global_value_loss, clipfrac, value_clipfrac, kl = means
                global_loss = global_policy_loss + algorithm.vf_coef * global_value_loss
                if self.num_processes == 1:
                    global_loss = loss.item()
                checked = {
                    "loss": global_loss,
                    "grad_norm": math.hypot(grad_norm.item(), value_grad_norm.item()),  # NaN/inf propagate
                    "learning_rate": optimizer_learning_rate(self.optimizer),
                }
                if self.guard.check(step, checked):
                    self.optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient alone
                else:
                    self.optimizer.step()

                stats["loss"].append(global_loss)
                stats["policy_loss"].append(global_policy_loss)
                stats["value_loss"].append(global_value_loss)
                stats["clipfrac"].append(clipfrac)
                stats["value_clipfrac"].append(value_clipfrac)
                stats["approx_kl"].append(kl)
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
        """Mean reward of greedy completions of ``records`` (deterministic).

        Collective under several processes: each scores its contiguous share of ``records``
        and the scores are gathered, so every process returns the same mean.
        """
        greedy = SamplingParams(max_new_tokens=self.algorithm.max_completion_length, temperature=0.0)
        share = -(-len(records) // self.num_processes)
        start, stop = self.process_index * share, min((self.process_index + 1) * share, len(records))
        totals = []
        for first in range(start, stop, self.rollout_size):
            chunk = records.select(range(first, min(first + self.rollout_size, stop))).to_list()
            _, scores = self.rollout(chunk, greedy, n=1)
            totals.extend(value for value in scores.total if value is not None)
        if self.num_processes > 1:
            from accelerate.utils import gather_object

            totals = gather_object(totals)
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

        from flux_core.run.resume import ResumeError, restore_weights

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
        is_main = self.is_main_process
        # Evaluation is collective under several processes: every process runs it (below, at
        # save points and at the end) and only the main one's CheckpointManager reads the result.
        latest_eval: dict[str, float] = {}
        evaluate = (lambda: latest_eval["score"]) if eval_records else None

        def run_evaluation() -> None:
            if eval_records:
                latest_eval["score"] = -self.evaluate(eval_records)

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
        # batch_size is per process: the step's global batch is num_processes shares of it.
        share = config.batch_size
        batches = prompt_batches(records, share * self.num_processes, config.seed)
        first_index = self.process_index * share
        step = 0
        if run.resume is not None:
            step = run.resume.step
            for _ in range(step):  # the data position: replay the seeded prompt order
                next(batches)
            self.restore_state(run.resume.path)  # last: it restores the RNG states
        save_steps = config.checkpoint.save_steps
        try:
            for step in range(step + 1, config.num_steps + 1):
                self.step = step
                experience = self.make_experience(next(batches)[first_index : first_index + share], first_index)
                learning_rate = self.optimizer.param_groups[0]["lr"]
                stats = self.update(experience, step)
                self.scheduler.step()
                self.backend.sync_weights(self.model)
                self.kl_controller.update(experience.metrics["kl"], self.rollout_size * self.num_processes)
                if save_steps and step % save_steps == 0:
                    run_evaluation()
                logs = {**experience.metrics, **stats, "learning_rate": learning_rate}
                if is_main:  # metrics.jsonl, progress bar, callbacks and checkpoints: written once
                    reporter.report(step, logs, self.model)
                else:  # the same numbers (they are gathered), kept for this process's FitResult
                    reporter.history.append(StepResult(step=step, metrics=dict(logs)))
                if run.preemption.should_stop(self.accelerator):  # SIGTERM on any rank: save this step, stop
                    if is_main:
                        checkpoints.save_for_resume(step, self.model)
                    self.accelerator.wait_for_everyone()
                    raise Preempted(step)
        finally:
            reporter.close()
        run_evaluation()
        if is_main:
            checkpoints.finalize(step, self.model)
        self.accelerator.wait_for_everyone()  # no process leaves before final/ is written
        return FitResult.from_run(reporter.history, step, checkpoints)
