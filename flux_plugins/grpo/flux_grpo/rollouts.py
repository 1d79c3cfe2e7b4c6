"""Feed any Flux :class:`~flux_core.online.rollout.RolloutBackend` to TRL's GRPOTrainer.

TRL generates locally by itself; a backend that is not local (a server) reaches the
trainer through TRL's ``rollout_func`` seam, so the GRPO algorithm never changes when a
backend is added. Synchronously (:class:`SyncingRolloutFunc`: sync weights, generate,
train, repeat) or, with ``adaptive_async.enabled``, from a background producer
(:class:`AsyncGRPORollouts`, on :mod:`flux_core.online.async_rollout`).
"""

from __future__ import annotations

from typing import Any, Callable

from flux_core import RolloutBackend, SamplingParams


class SyncingRolloutFunc:
    """A ``rollout_func(prompts, trainer)`` for ``GRPOTrainer`` that generates with ``backend``.

    TRL hands over each prompt already repeated ``num_generations`` times, so one
    completion is asked per entry. Weights are synced once per optimizer step, before
    the first generation that follows it; the caller syncs once before training starts
    (:class:`~flux_grpo.runner.GRPORunner` does, once TRL has wrapped the model) and
    after the last step (:class:`FinalWeightSync`).
    """

    def __init__(self, backend: RolloutBackend, sampling: SamplingParams):
        self.backend, self.sampling = backend, sampling
        self.synced_step = 0

    def __call__(self, prompts: list, trainer: Any) -> dict:
        step = trainer.state.global_step
        if step != self.synced_step:
            self.backend.sync_weights(trainer.model)
            self.synced_step = step
        rollouts = self.backend.generate(prompts, n=1, sampling=self.sampling)
        logprobs = [rollout.logprobs for rollout in rollouts]
        return {
            "prompt_ids": [rollout.prompt_ids for rollout in rollouts],
            "completion_ids": [rollout.completion_ids for rollout in rollouts],
            # TRL reads sampling log-probs only for importance-sampling correction; None = not reported.
            "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
        }


def as_trl_rollout_func(backend: RolloutBackend, sampling: SamplingParams) -> SyncingRolloutFunc:
    """A ``rollout_func(prompts, trainer)`` for ``GRPOTrainer`` that generates with ``backend`` (see
    :class:`SyncingRolloutFunc`)."""
    return SyncingRolloutFunc(backend, sampling)


class _SyncedByRolloutFunc:
    """Stands where TRL keeps its vLLM generation object; ``rollout_func`` already syncs the server."""

    def sync_weights(self) -> None:
        pass


def correct_with_server_logprobs(trainer: Any) -> None:
    """Make TRL apply its importance-sampling correction to a server backend's rollouts.

    TRL 1.16 recomputes the policy's log-probs and weights each token's loss by the
    truncated/masked ratio ``exp(logp_policy - logp_server)`` (``vllm_importance_sampling_*``
    settings in ``trl:``) only when ``use_vllm`` is on. The server's log-probs arrive
    through ``rollout_func``'s ``logprobs``; this switches that path on without loading
    vLLM (its weight sync is a no-op: ``rollout_func`` syncs). Set
    ``trl: {vllm_importance_sampling_correction: false}`` to train without the correction.
    """
    trainer.use_vllm = True
    trainer.vllm_mode = "server"
    trainer.vllm_generation = _SyncedByRolloutFunc()
    trainer._last_loaded_step = trainer.state.global_step


class FinalWeightSync:
    """``on_train_end``: push the last optimizer step's weights to the server (``rollout_func`` syncs
    only before a generation, so without this the server would end one step behind ``final/``)."""

    def __init__(self, backend: RolloutBackend, rollout_func: Any):
        self.backend, self.rollout_func = backend, rollout_func

    def callback(self) -> Any:
        from transformers import TrainerCallback

        sync = self

        class _FinalSync(TrainerCallback):
            def on_train_end(self, args, state, control, **kwargs):
                if state.global_step != sync.rollout_func.synced_step:
                    sync.backend.sync_weights(kwargs["model"])
                    sync.rollout_func.synced_step = state.global_step

        return _FinalSync()


# ---------------------------------------------------------------------- adaptive async

ASYNC_METRICS = (
    "staleness",
    "staleness_bound",
    "is_ratio_mean",
    "is_ratio_clipped_fraction",
    "generation_wait_s",
    "train_s",
)


class LookAheadIterator:
    """Wraps the trainer's epoch iterator: reads ``depth`` batches ahead and submits each upcoming
    generation batch's prompts to the producer, then hands batches over unchanged, in order.

    With ``generate_every > 1`` TRL repeats one generation batch ``generate_every`` times in a
    row and generates once; only its first occurrence is submitted.
    """

    def __init__(self, source: Any, submit: Callable[[list], None], depth: int, generate_every: int):
        from collections import deque

        self.source, self.submit, self.depth, self.generate_every = iter(source), submit, depth, generate_every
        self.buffer: deque = deque()
        self.exhausted = False
        self.last_prompts: list | None = None
        self.since_submit = 0

    def __iter__(self) -> LookAheadIterator:
        return self

    def __next__(self) -> Any:
        while not self.exhausted and len(self.buffer) <= self.depth:
            try:
                item = next(self.source)
            except StopIteration:
                self.exhausted = True
                break
            self.buffer.append(item)
            self._offer(item)
        if not self.buffer:
            raise StopIteration
        return self.buffer.popleft()

    def _offer(self, item: Any) -> None:
        if not isinstance(item, list) or not all(isinstance(row, dict) and "prompt" in row for row in item):
            return  # not a batch of prompt rows: take() generates it when asked
        prompts = [row["prompt"] for row in item]
        repeat = self.generate_every > 1 and prompts == self.last_prompts and self.since_submit < self.generate_every
        if repeat:
            self.since_submit += 1
            return
        self.submit(prompts)
        self.last_prompts, self.since_submit = prompts, 1


class AsyncGRPORollouts:
    """Adaptive async rollouts for TRL's GRPOTrainer, on any non-local backend.

    ``rollout_func`` (this object) takes each generation batch from a
    :class:`~flux_core.online.async_rollout.RolloutProducer`, which generates upcoming batches
    in the background: :meth:`install` wraps the trainer's ``get_batch_samples`` so the
    producer sees the next batches' prompts, measures each batch's importance-ratio
    drift after TRL recomputed the policy's log-probs, and adds a callback that times
    each step, feeds the controller and publishes the weights after every optimizer step.
    """

    def __init__(self, producer: Any, epsilon_low: float, epsilon_high: float, max_staleness: int):
        self.producer = producer
        self.epsilon_low, self.epsilon_high = epsilon_low, epsilon_high
        self.max_staleness = max_staleness
        self.trainer: Any = None
        self._step_started = 0.0
        self._taken: Any = None  # BatchInfo of the batch taken during the current step
        self._drift: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ TRL seams

    def __call__(self, prompts: list, trainer: Any) -> dict:
        step = trainer.state.global_step
        if self.producer.published_version is None or self.producer.published_version < step:
            self.producer.publish_weights(trainer.model, step)  # first call (or resumed run)
        training = trainer.model.training  # eval prompts are generated now, prefetched batches kept
        rollouts, info = self.producer.take(prompts, step, prefetched=training)
        if training:
            self._taken = info
            metrics = trainer._metrics["train"]
            metrics["staleness"].append(float(info.staleness))
            metrics["staleness_bound"].append(float(self.producer.bound))
            metrics["generation_wait_s"].append(info.generation_wait_s)
        logprobs = [rollout.logprobs for rollout in rollouts]
        return {
            "prompt_ids": [rollout.prompt_ids for rollout in rollouts],
            "completion_ids": [rollout.completion_ids for rollout in rollouts],
            "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
        }

    def install(self, trainer: Any) -> None:
        from flux_core import FluxError

        args = trainer.args
        if trainer.accelerator.num_processes > 1:
            raise FluxError("adaptive_async runs with one training process for now; turn it off for multi-process runs")
        if not (trainer.use_vllm and trainer.vllm_importance_sampling_correction):
            raise FluxError(
                "adaptive_async trains on rollouts of older policies and needs the importance-sampling correction: "
                "remove trl.vllm_importance_sampling_correction: false (or turn adaptive_async off)"
            )
        generate_every = args.steps_per_generation * trainer.num_iterations
        if generate_every % args.gradient_accumulation_steps:
            raise FluxError(
                f"adaptive_async needs whole optimizer steps per generation batch: trl.steps_per_generation "
                f"({args.steps_per_generation}) x algorithm.num_iterations ({trainer.num_iterations}) is not a "
                f"multiple of gradient_accumulation_steps ({args.gradient_accumulation_steps})"
            )
        self.trainer = trainer
        self.producer.steps_per_batch = generate_every // args.gradient_accumulation_steps
        depth = (self.max_staleness + 1) * generate_every + args.gradient_accumulation_steps
        original_get_batch_samples = trainer.get_batch_samples
        wrapped: dict[str, Any] = {"source": None, "iterator": None}

        def get_batch_samples(epoch_iterator, num_batches, device):
            if wrapped["source"] is not epoch_iterator:  # a new epoch (or a resumed one)
                wrapped["source"] = epoch_iterator
                wrapped["iterator"] = LookAheadIterator(epoch_iterator, self.producer.submit, depth, generate_every)
            return original_get_batch_samples(wrapped["iterator"], num_batches, device)

        trainer.get_batch_samples = get_batch_samples
        original_score = trainer._generate_and_score_completions

        def generate_and_score(inputs):
            output = original_score(inputs)
            if trainer.model.training and "old_per_token_logps" in output and "sampling_per_token_logps" in output:
                from flux_core import importance_drift

                mean, clipped = importance_drift(
                    output["old_per_token_logps"],
                    output["sampling_per_token_logps"],
                    output["completion_mask"],
                    self.epsilon_low,
                    self.epsilon_high,
                )
                trainer._metrics["train"]["is_ratio_mean"].append(mean)
                trainer._metrics["train"]["is_ratio_clipped_fraction"].append(clipped)
                self._drift = clipped
            return output

        trainer._generate_and_score_completions = generate_and_score
        trainer.add_callback(self._callback())

    def _callback(self) -> Any:
        import time

        from transformers import TrainerCallback

        from flux_core import StepMeasurement

        rollouts = self

        class _AsyncStep(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                rollouts._step_started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                rollouts.producer.publish_weights(kwargs["model"], state.global_step)
                taken, rollouts._taken = rollouts._taken, None
                if taken is None:
                    return  # a step that reused an earlier generation batch (num_iterations > 1)
                train_s = max(time.perf_counter() - rollouts._step_started - taken.generation_wait_s, 0.0)
                rollouts.trainer._metrics["train"]["train_s"].append(train_s)
                drift, rollouts._drift = rollouts._drift, None
                if drift is not None:
                    rollouts.producer.measure(StepMeasurement(drift, taken.generation_wait_s, train_s))

            def on_train_end(self, args, state, control, **kwargs):
                rollouts.close(load_latest=True)  # the server ends with the final weights

        return _AsyncStep()

    def close(self, load_latest: bool = False) -> None:
        """Stop the producer (idempotent); ``load_latest``: the server loads the newest weights first."""
        if not self._closed:
            self._closed = True
            self.producer.close(load_latest=load_latest)
