"""PPORunner: FluxConfig + prompts -> a policy trained with actor-critic PPO.

One training step is one PPO iteration, as in InstructGPT and TRL <= 1.12, and each phase
of it has a module of its own:

1. **rollout**, 2. **score**, 3. **experience**: :class:`flux_ppo.experience.ExperienceMaker`
   samples ``num_generations`` completions for each of ``batch_size`` prompts, scores them,
   and computes log-probs, reference log-probs, values, the KL penalty, GAE advantages and
   returns into an :class:`~flux_ppo.experience.Experience`;
4. **update**: :class:`flux_ppo.update.PPOUpdater` makes ``ppo_epochs`` passes over it in
   ``num_minibatches`` shuffled minibatches, each one optimizer update of
   ``policy_loss + vf_coef * value_loss``.

This module wires up what both phases use (the networks load in :mod:`flux_ppo.models`,
the optimizer in :mod:`flux_ppo.update`; rewards and the rollout backend come from Flux),
runs the loop (:meth:`PPORunner.fit`), evaluates, and saves and restores what a resumed
run needs. The math is small functions in :mod:`flux_ppo.advantages` and
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
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn

from flux_core import (
    PPO_STATE_DIR,
    PPO_STATE_FILE,
    REWARD_SCORE_NAMES,
    CheckpointManager,
    FitResult,
    FluxConfig,
    FluxError,
    Loss,
    Preempted,
    ResumeError,
    RewardScores,
    Rollout,
    RunContext,
    SamplingParams,
    StepCallback,
    StepReporter,
    StepResult,
    build_reward_functions,
    create_backend,
    eos_token_ids,
    get_registry,
    load_tokenizer,
    resolve_precision,
    restore_weights,
    torch_dtype,
    with_resolved_steps,
)
from flux_ppo.experience import (
    Experience,
    ExperienceMaker,
    RolloutBatch,
    behaviour_importance_weights,
    collate_rollouts,
    merge_scores,
    prompt_seed,
)
from flux_ppo.kl_control import AdaptiveKLController, FixedKLController
from flux_ppo.models import REFERENCE_POLICIES, CriticForward, load_critic, load_policy, reference_policy_kind
from flux_ppo.scoring import TokenRewardModel, token_level_reward_functions
from flux_ppo.update import PPOUpdater, build_optimizer, trained_modules

if TYPE_CHECKING:
    from datasets import Dataset

# REFERENCE_POLICIES, CriticForward, Experience, RolloutBatch and the rollout helpers were defined
# here before the phases had modules of their own (flux_ppo.experience, flux_ppo.models): still
# importable from here.
__all__ = [
    "REFERENCE_POLICIES",
    "CriticForward",
    "Experience",
    "PPORunner",
    "RolloutBatch",
    "behaviour_importance_weights",
    "collate_rollouts",
    "merge_scores",
    "prompt_batches",
    "prompt_seed",
    "quiet_accelerate_logs",
]


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


class PPORunner:
    """Builds policy, reference, value model, rewards and rollout backend; runs PPO."""

    STATE_DIR = PPO_STATE_DIR

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

    def build(self) -> None:
        """Load and wire everything a run needs.

        The order is part of the run's numbers: one seeded RNG stream initialises the LoRA
        adapters and the value head, then samples.
        """
        config, algorithm = self.config, self.algorithm
        self._join_processes()
        torch.manual_seed(config.seed)  # LoRA and value-head init (the same on every rank), then sampling
        # Weights stay fp32 whatever the precision: with bf16 the forwards run under autocast
        # (mixed precision). Pure-bf16 weights lose every AdamW update smaller than half a bf16
        # ulp (2^-8 relative) and quantise the critic's values, which is where the GPU run of
        # the demo differed from the CPU one (issue #11); the log-prob, KL and value math is fp32.
        precision = resolve_precision(config.precision)
        self.autocast_dtype = None if precision == "fp32" else torch_dtype(precision)
        reference_kind = reference_policy_kind(config)
        loss = get_registry().get_loss(algorithm.loss, "ppo")
        self.reward_functions = build_reward_functions(algorithm.reward_specs)

        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        self.device = self.accelerator.device
        self.model, self.reference = load_policy(config, reference_kind, self.device)
        self.value_model = load_critic(config, self.tokenizer.pad_token_id, self.device)
        self.model.train()
        self.value_model.train()
        policy_train, critic_train = trained_modules(self.model, self.value_model, self.accelerator)
        self.optimizer, self.scheduler = build_optimizer(config, self.model, self.value_model)
        self.kl_controller = (
            AdaptiveKLController(algorithm.kl_coef, algorithm.kl_target, algorithm.kl_horizon)
            if algorithm.adaptive_kl
            else FixedKLController(algorithm.kl_coef)
        )
        self.token_scorers: list[TokenRewardModel] = []
        if algorithm.reward_model_input == "tokens":
            self.reward_functions, self.token_scorers = token_level_reward_functions(
                self.reward_functions, self.tokenizer, eos_token_ids(self.model, self.tokenizer)
            )
        self.backend = create_backend(config, self.model, self.tokenizer)
        if not self.backend.is_local:
            self.backend.sync_weights(self.model)  # a server may have started from other weights
        self._build_phases(policy_train, critic_train, loss)
        if self.process_index > 0:  # without seed_per_prompt, ranks must not draw the same samples
            torch.manual_seed(config.seed + 1_000_003 * self.process_index)

    def _join_processes(self) -> None:
        """A fresh accelerate state: this process's place in the process group."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # Under torchrun / accelerate launch this joins the process group (gloo on CPU, NCCL on GPUs).
        # Forwards run under PPORunner's own autocast, so accelerate adds no mixed precision. An
        # earlier run in this process (a bf16 TRL trainer on a GPU, a CPU one) leaves its mixed
        # precision and device in accelerate's process-wide state, which refuses different ones:
        # start afresh, as transformers' TrainingArguments does (a process group stays joined).
        AcceleratorState._reset_state(reset_partial_state=True)
        self.accelerator = Accelerator(mixed_precision="no")
        self.num_processes, self.process_index = self.accelerator.num_processes, self.accelerator.process_index

    def _build_phases(self, policy_train: nn.Module, critic_train: nn.Module, loss: Loss) -> None:
        """The experience maker (phases 1-3) and the updater (phase 4), over the built networks."""
        self.experience_maker = ExperienceMaker(
            self.algorithm,
            seed=self.config.seed,
            policy=self.model,
            value_model=self.value_model,
            reference=self.reference,
            backend=self.backend,
            reward_functions=self.reward_functions,
            token_scorers=self.token_scorers,
            pad_token_id=self.tokenizer.pad_token_id,
            chunk_size=self.minibatch_size,
            accelerator=self.accelerator,
            mixed_precision=self.mixed_precision,  # bound: a changed autocast_dtype applies
        )
        self.sampling = self.experience_maker.sampling
        # A dedicated generator for minibatch shuffling keeps it independent of sampling
        # (and the same on every rank: they shuffle the one global rollout alike).
        self.shuffle_generator = torch.Generator().manual_seed(self.config.seed)
        self.updater = PPOUpdater(
            self.algorithm,
            policy=policy_train,
            critic=critic_train,
            optimizer=self.optimizer,
            loss=loss,
            guard=self.guard,
            shuffle_generator=self.shuffle_generator,
            rollout_size=self.rollout_size,
            minibatch_size=self.minibatch_size,
            accelerator=self.accelerator,
            mixed_precision=self.mixed_precision,
        )

    def mixed_precision(self) -> contextlib.AbstractContextManager:
        """autocast to bf16/fp16 for the forwards when the run's precision asks for it (fp32: a no-op)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ the phases of a step

    def rollout(
        self, records: list[dict[str, Any]], sampling: SamplingParams, n: int, first_index: int | None = None
    ) -> tuple[list[Rollout], RewardScores]:
        """Phases 1-2 at the step being trained: see :meth:`ExperienceMaker.rollout`."""
        return self.experience_maker.rollout(records, sampling, n, first_index, self.step)

    def make_experience(self, records: list[dict[str, Any]], first_index: int = 0) -> Experience:
        """Phases 1-3 at the step being trained, under the current KL coefficient:
        see :meth:`ExperienceMaker.make_experience`."""
        return self.experience_maker.make_experience(records, first_index, self.step, self.kl_controller.value)

    def update(self, experience: Experience, step: int = 0) -> dict[str, float]:
        """Phase 4: see :meth:`PPOUpdater.update`."""
        return self.updater.update(experience, step)

    def train_step(self, step: int, records: list[dict[str, Any]], first_index: int) -> dict[str, float]:
        """One PPO iteration on this process's ``records``, then the LR and KL schedules; its metrics."""
        self.step = step
        experience = self.make_experience(records, first_index)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        stats = self.update(experience, step)
        self.scheduler.step()
        self.backend.sync_weights(self.model)
        self.kl_controller.update(experience.metrics["kl"], self.rollout_size * self.num_processes)
        return {**experience.metrics, **stats, "learning_rate": learning_rate}

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

    def save_state(self, directory: Path) -> None:
        """Write what continuing this run needs into ``directory/ppo_state`` (a checkpoint-N).

        accelerate's ``save_accelerator_state`` writes the critic's trainable weights
        (value model or its adapter, and the value head), the optimizer (policy and
        critic groups), the LR scheduler and the python/numpy/torch/cuda RNG states;
        ``ppo.pt`` adds the KL coefficient and the minibatch-shuffle generator. The
        policy's weights are the checkpoint's own (merged, or ``adapter/`` with LoRA);
        the data position is the step (the prompt order is a seeded replay).

        With several processes every rank calls this on the staged checkpoint
        (:meth:`~flux_core.run.checkpoint.CheckpointManager.stage`) and writes its own RNG
        states (``random_states_<rank>.pkl``: each rank samples its own completions); the
        weights, optimizer, scheduler and ``ppo.pt``, the same on every rank, are written
        by the main one.
        """
        from accelerate.checkpointing import save_accelerator_state

        state_dir = directory / self.STATE_DIR
        state_dir.mkdir(exist_ok=True)  # the ranks write into one staged directory
        critic = {name: p.detach().contiguous() for name, p in self.value_model.named_parameters() if p.requires_grad}
        with quiet_accelerate_logs():
            save_accelerator_state(
                str(state_dir), [critic], [self.optimizer], [self.scheduler], [], self.process_index, step=0
            )
        if self.is_main_process:
            extra = {"kl_coef": self.kl_controller.value, "shuffle_generator": self.shuffle_generator.get_state()}
            torch.save(extra, state_dir / PPO_STATE_FILE)

    def restore_state(self, checkpoint: Path) -> None:
        """Load a :meth:`save_state` checkpoint into the built policy, critic and optimizer."""
        from accelerate.checkpointing import load_accelerator_state

        state_dir = checkpoint / self.STATE_DIR
        if not state_dir.is_dir():
            raise ResumeError(f"cannot resume {checkpoint}: no {self.STATE_DIR}/ (not written by a PPO run)")
        restore_weights(self.model, checkpoint)
        with quiet_accelerate_logs():
            loaded = load_accelerator_state(
                str(state_dir),
                [self.value_model],
                [self.optimizer],
                [self.scheduler],
                [],
                self.process_index,
                strict=False,
            )
        if "step" not in loaded:  # accelerate only logs a failure to restore the RNG states
            raise ResumeError(f"cannot resume {checkpoint}: its random states could not be restored")
        extra = torch.load(state_dir / PPO_STATE_FILE, weights_only=True)
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
        # num_epochs: one epoch is one pass over the prompts, batch_size of them per process and step.
        config = self.config = with_resolved_steps(self.config, len(records))
        run = run or RunContext.fresh(config)
        self.guard = run.guard
        self.build()
        checkpoints, run_evaluation = self._checkpoints(run, eval_records)
        reporter = self._reporter(run, callbacks, checkpoints)
        # batch_size is per process: the step's global batch is num_processes shares of it.
        share = config.batch_size
        batches = prompt_batches(records, share * self.num_processes, config.seed)
        first_index = self.process_index * share
        start = 0
        if run.resume is not None:
            start = run.resume.step
            for _ in range(start):  # the data position: replay the seeded prompt order
                next(batches)
            self.restore_state(run.resume.path)  # last: it restores the RNG states
        save_steps = config.checkpoint.save_steps
        step = start  # the last step trained (stays the resumed one when there is none left)
        try:
            for step in range(start + 1, config.num_steps + 1):
                logs = self.train_step(step, next(batches)[first_index : first_index + share], first_index)
                if save_steps and step % save_steps == 0:
                    run_evaluation()
                checkpoints.stage(step, self.model)  # every rank writes its part of checkpoint-N (several processes)
                if self.is_main_process:  # metrics.jsonl, progress bar, callbacks and checkpoints: written once
                    reporter.report(step, logs, self.model)
                else:  # the same numbers (they are gathered), kept for this process's FitResult
                    reporter.history.append(StepResult(step=step, metrics=dict(logs)))
                if run.preemption.should_stop(self.accelerator):  # SIGTERM on any rank: save this step, stop
                    self._stop_preempted(checkpoints, step)
        finally:
            reporter.close()
        run_evaluation()
        if self.is_main_process:
            checkpoints.finalize(step, self.model)
        self.accelerator.wait_for_everyone()  # no process leaves before final/ is written
        return FitResult.from_run(reporter.history, step, checkpoints)

    def _checkpoints(
        self, run: RunContext, eval_records: Dataset | None
    ) -> tuple[CheckpointManager, Callable[[], None]]:
        """The run's checkpoints, and the evaluation to run at save points and at the end.

        Evaluation is collective under several processes: every process runs it and only
        the main one's CheckpointManager reads the result.
        """
        config = self.config
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
        return checkpoints, run_evaluation

    def _reporter(self, run: RunContext, callbacks: list[StepCallback], checkpoints: CheckpointManager) -> StepReporter:
        def on_step(result: StepResult, model: Any) -> None:
            reward = result.metrics.get("reward")
            checkpoints.on_step(result.step, None if reward is None else -reward, model)

        return StepReporter(
            self.config,
            callbacks,
            metric_names={},  # the runner already uses Flux's metric names
            progress_metrics=("reward", "kl"),
            show_progress=self.show_progress,
            on_step=on_step,
            run=run,
        )

    def _stop_preempted(self, checkpoints: CheckpointManager, step: int) -> NoReturn:
        """Save ``step`` for resuming (every rank its part, the main process the rest), then stop every process."""
        if not checkpoints.is_save_point(step):  # else checkpoint-N was written with this step
            checkpoints.save_for_resume_at = step
            checkpoints.stage(step, self.model)
        if self.is_main_process:
            checkpoints.save_for_resume(step, self.model)
        self.accelerator.wait_for_everyone()
        raise Preempted(step)
