"""Adaptive async rollouts: a background producer generates upcoming batches while the trainer updates.

Three pieces, each usable alone (docs/rollouts.md, "Adaptive async"):

- :class:`StalenessController`: a small pure class. After each generation batch it gets
  the measured drift (the fraction of completion tokens whose importance ratio
  ``pi_current / pi_behaviour`` lies outside the clip range) and how long the trainer
  waited for the batch, and moves the staleness *bound* (how many policy versions old a
  batch may be when it is trained on) between 0 and ``max_staleness``: down by one when
  drift is above ``target_drift``, up by one when drift is below half the target and the
  trainer waited on generation. It never leaves ``[0, max_staleness]``.
- :class:`RolloutProducer`: drives a :class:`~flux_core.online.rollout.RolloutBackend` from
  background threads: up to ``max_staleness + 1`` batch generations at once (so one batch's
  latency never holds up the next) and one weight load at a time beside them. The trainer
  submits upcoming batches' prompts, publishes a weight snapshot after each optimizer step,
  and takes each batch when it needs it. A batch's version is the newest one the servers had
  confirmed loaded when it started (a lower bound of the weights that sampled it). A batch
  expected to be trained at step ``s`` may be started once version ``>= s - bound`` is
  loaded (AReaL's capacity rule: at most ``bound + 1`` batches ahead of the trainer); one
  that would be older than ``max_staleness`` when taken is regenerated with current
  weights, so the hard bound holds whatever the controller did. A take with no prefetched match (the first batch,
  eval, a changed order) generates with the current weights while the trainer waits.
- :func:`importance_drift`: the per-batch measurement, from the trainer's recomputed
  log-probs and the server's.

A failure in the producer (a dead server) is raised in the trainer's thread by the next
:meth:`RolloutProducer.take`, as the same one-line error synchronous generation gives.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flux_core.errors import FluxError
from flux_core.online.rollout import Rollout, RolloutBackend, SamplingParams

# ---------------------------------------------------------------------- controller


@dataclass(frozen=True)
class StepMeasurement:
    """What one generation batch measured, the controller's input.

    Attributes:
        drift: fraction of completion tokens whose importance ratio ``pi_current /
            pi_behaviour`` is outside ``[1 - epsilon, 1 + epsilon_high]`` (0..1).
        generation_wait_s: seconds the trainer blocked waiting for this batch.
        train_s: seconds the trainer spent on the step itself (scoring, forward,
            backward, optimizer), without the wait.
    """

    drift: float
    generation_wait_s: float
    train_s: float


class StalenessController:
    """Holds the measured drift at ``target_drift`` by moving the staleness bound in ``[0, max_staleness]``.

    Args:
        max_staleness: the hard upper bound (``adaptive_async.max_staleness``).
        target_drift: drift above this shrinks the bound (``adaptive_async.target_drift``).
        initial: the starting bound (default ``max_staleness``; clipped to the range).
        grow_below: drift must be below ``grow_below * target_drift`` to grow (hysteresis,
            so the bound does not flip every step around the target).
        wait_fraction: the trainer counts as waiting on generation when
            ``generation_wait_s > wait_fraction * train_s``; growing only helps then.
    """

    def __init__(
        self,
        max_staleness: int,
        target_drift: float,
        initial: int | None = None,
        grow_below: float = 0.5,
        wait_fraction: float = 0.05,
    ):
        if max_staleness < 0:
            raise FluxError(f"max_staleness must be >= 0, not {max_staleness}")
        if not 0 < target_drift < 1:
            raise FluxError(f"target_drift must be in (0, 1), not {target_drift}")
        self.max_staleness = max_staleness
        self.target_drift = target_drift
        self.grow_below = grow_below
        self.wait_fraction = wait_fraction
        start = max_staleness if initial is None else initial
        self.bound = min(max(start, 0), max_staleness)

    def waited(self, measurement: StepMeasurement) -> bool:
        return measurement.generation_wait_s > self.wait_fraction * max(measurement.train_s, 1e-3)

    def update(self, measurement: StepMeasurement) -> int:
        """Take one batch's measurement; return the new bound."""
        if measurement.drift > self.target_drift:
            self.bound = max(self.bound - 1, 0)
        elif measurement.drift < self.grow_below * self.target_drift and self.waited(measurement):
            self.bound = min(self.bound + 1, self.max_staleness)
        return self.bound


# ---------------------------------------------------------------------- measurement


def importance_drift(
    current_logps: Any, behaviour_logps: Any, mask: Any, epsilon_low: float, epsilon_high: float
) -> tuple[float, float]:
    """``(is_ratio_mean, clipped_fraction)`` over the masked tokens of ``[batch, tokens]`` tensors.

    The ratio is ``exp(log pi_current - log pi_behaviour)`` per token; clipped means outside
    ``[1 - epsilon_low, 1 + epsilon_high]``. Tokens whose behaviour log-prob is NaN are left out.
    """
    import torch

    valid = mask.bool() & ~torch.isnan(behaviour_logps) & ~torch.isnan(current_logps)
    if not bool(valid.any()):
        return 1.0, 0.0
    ratio = torch.exp((current_logps - behaviour_logps)[valid].float())
    clipped = (ratio < 1 - epsilon_low) | (ratio > 1 + epsilon_high)
    return float(ratio.mean()), float(clipped.float().mean())


# ---------------------------------------------------------------------- weights


class WeightSnapshot:
    """A CPU copy of a policy's weights (LoRA merged) that writes itself like ``save_pretrained``.

    Taken in the trainer's thread right after an optimizer step, so the producer can write
    it to disk for the server while the trainer already changes the live weights.
    """

    def __init__(self, model: Any):
        import torch
        from peft import PeftModel

        from flux_core.run.checkpoint import merged_state_dict

        with torch.no_grad():
            if isinstance(model, PeftModel):
                state, self.base = merged_state_dict(model), model.get_base_model()
            else:
                state, self.base = model.state_dict(), model
            copies: dict[tuple, Any] = {}  # tied weights stay tied (one copy, two names)
            self.state = {}
            for key, value in state.items():
                identity = (value.data_ptr(), value.dtype, tuple(value.shape))
                if identity not in copies:
                    copies[identity] = value.detach().to("cpu", copy=True).contiguous()
                self.state[key] = copies[identity]

    def save_pretrained(self, directory: Any) -> None:
        self.base.save_pretrained(directory, state_dict=self.state)


# ---------------------------------------------------------------------- producer


@dataclass
class BatchInfo:
    """How a taken batch was produced.

    Attributes:
        staleness: policy versions between the weights that generated it and the step using it.
        version: the policy version (optimizer steps) that generated it.
        generation_wait_s: seconds :meth:`RolloutProducer.take` blocked.
        prefetched: False when it was generated while the trainer waited (a miss or a barrier).
    """

    staleness: int
    version: int
    generation_wait_s: float
    prefetched: bool


class _Batch:
    def __init__(self, seq: int, prompts: list, urgent: bool = False, expected: int | None = None):
        self.seq, self.prompts, self.urgent, self.expected = seq, prompts, urgent, expected
        self.state = "queued"  # -> running -> done
        self.rollouts: list[Rollout] | None = None
        self.version: int | None = None


class RolloutProducer:
    """Generates submitted batches in background threads, up to ``max_staleness + 1`` at once, within the bound.

    Args:
        backend: the rollout backend (a server backend; it is called from several threads
            at once: generations of different batches, and a weight load beside them).
        sampling: sampling settings of every batch.
        controller: decides the current bound; :meth:`measure` feeds it.
        steps_per_batch: optimizer steps each generation batch is trained for
            (GRPO: ``num_iterations``); used to predict when a batch will be taken.
        last_step: batches expected at or after this step are never prefetched.
        snapshot: turns a model into what ``backend.sync_weights`` loads (tests pass ``lambda m: m``).

    A batch's ``version`` is the newest weight version every server had confirmed loaded
    when its generation started. A load may finish while a batch generates, so the weights
    that sampled it are that version or newer: its staleness is never under-counted, and the
    per-token behaviour log-probs the server returns are exact whichever weights sampled them.

    Trainer-thread methods: :meth:`submit`, :meth:`publish_weights`, :meth:`take`,
    :meth:`measure`, :meth:`close`. Any backend failure stops the producer; the next
    :meth:`take` (or :meth:`close`) raises it.
    """

    def __init__(
        self,
        backend: RolloutBackend,
        sampling: SamplingParams,
        controller: StalenessController,
        steps_per_batch: int = 1,
        last_step: int | None = None,
        snapshot: Callable[[Any], Any] = WeightSnapshot,
    ):
        self.backend, self.sampling, self.controller = backend, sampling, controller
        self.steps_per_batch = steps_per_batch
        self.last_step = last_step
        self.snapshot = snapshot
        self.max_in_flight = controller.max_staleness + 1  # prefetched generations running at once
        self._cond = threading.Condition()
        self._queue: deque[_Batch] = deque()  # submitted, not yet taken, in order
        self._wanted: _Batch | None = None  # the batch take() waits for, when not yet started
        self._seq = 0
        self._anchor: tuple[int, int] | None = None  # (seq, step) of the last taken prefetched batch
        self._pending: tuple[int, Any] | None = None  # newest published (version, snapshot), not yet loading
        self.published_version: int | None = None
        self.loaded_version: int | None = None
        self._loading = False  # a weight load is in flight
        self._generating = 0  # generations in flight
        self._error: BaseException | None = None
        self._closed = False
        self.weight_loads = 0
        self.generated = 0  # batches generated (prefetched or not, used or not)
        self.regenerated = 0  # batches dropped because they would have exceeded max_staleness
        self.misses = 0  # takes with no prefetched batch
        self.peak_in_flight = 0  # most generations that ran at once

    # ------------------------------------------------------------------ trainer thread

    def submit(self, prompts: Sequence[Any]) -> None:
        """An upcoming generation batch's prompts (in the order the trainer will ask for them)."""
        with self._cond:
            self._queue.append(_Batch(self._seq, list(prompts)))
            self._seq += 1
            self._dispatch()

    def publish_weights(self, model: Any, version: int) -> None:
        """The policy after ``version`` optimizer steps; the servers load it as soon as the previous load ended."""
        snapshot = self.snapshot(model)
        with self._cond:
            self._pending = (version, snapshot)
            self.published_version = version
            self._dispatch()

    def take(self, prompts: Sequence[Any], step: int, prefetched: bool = True) -> tuple[list[Rollout], BatchInfo]:
        """The rollouts of ``prompts`` for training at ``step`` (policy version ``step``), waiting if needed.

        Weights of version ``step`` must have been published: a batch that was not
        prefetched is generated with them while the caller waits. Submitted batches before
        the match are dropped (the trainer skipped them). ``prefetched=False`` (eval
        prompts): generate now and leave the submitted batches alone.
        """
        started = time.perf_counter()
        prompts = list(prompts)
        with self._cond:
            self._raise_if_failed()
            if self.published_version is None or self.published_version < step:
                raise FluxError(
                    f"internal: rollouts for step {step} asked before that step's weights were published "
                    f"(newest: {self.published_version})"
                )
            while prefetched and self._queue and self._queue[0].prompts != prompts:  # skipped: never used
                self._queue.popleft()
            if prefetched and self._queue:
                batch, prefetched = self._queue.popleft(), True
                self._anchor = (batch.seq, step)
                batch.expected = step
            else:
                self.misses += 1
                batch, prefetched = _Batch(-1, prompts, urgent=True, expected=step), False
            while True:
                if batch.state == "queued":
                    self._wanted = batch
                self._dispatch()
                while batch.state != "done":
                    self._cond.wait()
                    self._raise_if_failed()
                staleness = step - batch.version
                if staleness <= self.controller.max_staleness:
                    break
                # Older than the hard bound (taken later than predicted): regenerate with current weights.
                self.regenerated += 1
                prefetched = False
                batch = _Batch(-1, prompts, urgent=True, expected=step)
        info = BatchInfo(staleness, batch.version, time.perf_counter() - started, prefetched)
        return batch.rollouts, info

    def measure(self, measurement: StepMeasurement) -> int:
        """Feed one batch's measurement to the controller; the new bound applies to batches not yet started."""
        with self._cond:
            bound = self.controller.update(measurement)
            self._dispatch()
            return bound

    @property
    def bound(self) -> int:
        return self.controller.bound

    @property
    def in_flight(self) -> int:
        """Backend calls running now (generations and weight loads)."""
        with self._cond:
            return self._generating + self._loading

    def close(self, load_latest: bool = True, timeout: float | None = None) -> None:
        """Stop prefetching; with ``load_latest``, first make the servers load the newest published weights.

        Waits for the generations in flight to end (bounded by the backend's own timeout).
        With ``load_latest``, raises a producer failure that no :meth:`take` reported.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._queue.clear()
            self._closed = True
            if not load_latest:
                self._pending = None
            self._dispatch()
            while self._loading or self._generating or (self._pending is not None and self._error is None):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            if load_latest:
                self._raise_if_failed()

    # ------------------------------------------------------------------ scheduling (under the lock)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _expected_step(self, batch: _Batch) -> int | None:
        if batch.expected is not None:
            return batch.expected
        if self._anchor is None:
            return None  # nothing taken yet: the trainer's pace is unknown
        seq, step = self._anchor
        return step + (batch.seq - seq) * self.steps_per_batch

    def _may_start(self, batch: _Batch) -> bool:
        expected = self._expected_step(batch)
        if expected is None or self.loaded_version is None:
            return False
        if batch.urgent:
            return self.loaded_version >= expected
        if batch is not self._wanted and self.last_step is not None and expected >= self.last_step:
            return False
        return self.loaded_version >= expected - self.controller.bound

    def _dispatch(self) -> None:
        """Start what may start: the newest weights once the previous load ended, the batch the trainer waits
        for, then queued batches in order while fewer than ``max_in_flight`` generate. Wakes waiters."""
        self._cond.notify_all()
        if self._error is not None:
            return
        if (
            not self._loading
            and self._pending is not None
            and (self.loaded_version is None or self._pending[0] > self.loaded_version)
        ):
            (version, snapshot), self._pending = self._pending, None
            self._loading = True
            self._spawn(self._load, version, snapshot)
        if self._closed:
            return
        wanted = self._wanted
        if wanted is not None and wanted.state == "queued" and self._may_start(wanted):
            self._wanted = None
            self._start(wanted)
        for batch in self._queue:
            if batch.state != "queued":
                continue
            if self._generating >= self.max_in_flight or not self._may_start(batch):
                break  # in order only
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        batch.state, batch.version = "running", self.loaded_version
        self._generating += 1
        self.peak_in_flight = max(self.peak_in_flight, self._generating)
        self._spawn(self._generate, batch)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, name="flux-rollout-producer", daemon=True).start()

    # ------------------------------------------------------------------ worker threads

    def _load(self, version: int, snapshot: Any) -> None:
        try:
            self.backend.sync_weights(snapshot)
        except BaseException as error:  # noqa: BLE001 - raised in the trainer's thread by take/close
            self._finish("load", error)
            return
        with self._cond:
            self.loaded_version = max(version, self.loaded_version if self.loaded_version is not None else version)
            self.weight_loads += 1
        self._finish("load")

    def _generate(self, batch: _Batch) -> None:
        try:
            rollouts = self.backend.generate(batch.prompts, n=1, sampling=self.sampling)
        except BaseException as error:  # noqa: BLE001 - raised in the trainer's thread by take/close
            self._finish("generate", error)
            return
        with self._cond:
            batch.rollouts, batch.state = rollouts, "done"
            self.generated += 1
        self._finish("generate")

    def _finish(self, kind: str, error: BaseException | None = None) -> None:
        """One backend call (``"load"`` or ``"generate"``) ended; the first failure stops the producer."""
        with self._cond:
            if kind == "load":
                self._loading = False
            else:
                self._generating -= 1
            if error is not None and self._error is None:
                self._error = error
            self._dispatch()
