"""Adaptive async rollouts without a model: the staleness controller on hand-made drift
sequences, and the producer driven by a fake backend and a fake trainer loop."""

from __future__ import annotations

import threading
import time

import pytest

from flux_core.errors import FluxError
from flux_core.online.async_rollout import RolloutProducer, StalenessController, StepMeasurement, importance_drift
from flux_core.online.rollout import Rollout, SamplingParams


def waiting(drift: float) -> StepMeasurement:
    """A step where the trainer waited on generation (1 s of a 2 s step)."""
    return StepMeasurement(drift=drift, generation_wait_s=1.0, train_s=2.0)


def not_waiting(drift: float) -> StepMeasurement:
    return StepMeasurement(drift=drift, generation_wait_s=0.0, train_s=2.0)


# ---------------------------------------------------------------------- controller


def test_the_bound_shrinks_while_drift_is_above_target_and_stops_at_zero():
    controller = StalenessController(max_staleness=3, target_drift=0.1)
    assert controller.bound == 3  # starts at the hard bound
    bounds = [controller.update(waiting(drift)) for drift in (0.3, 0.2, 0.15, 0.5, 0.9)]
    assert bounds == [2, 1, 0, 0, 0]


def test_the_bound_grows_only_when_drift_is_low_and_the_trainer_waits():
    controller = StalenessController(max_staleness=2, target_drift=0.1, initial=0)
    # low drift but no waiting: overlap would not help, the bound stays
    assert [controller.update(not_waiting(0.0)) for _ in range(3)] == [0, 0, 0]
    # waiting, drift between half the target and the target: hold (hysteresis)
    assert [controller.update(waiting(0.07)) for _ in range(3)] == [0, 0, 0]
    # waiting and drift well below target: one step up per batch, never past max_staleness
    assert [controller.update(waiting(0.01)) for _ in range(4)] == [1, 2, 2, 2]


def test_a_mixed_drift_sequence_follows_the_rules_and_never_leaves_the_range():
    controller = StalenessController(max_staleness=2, target_drift=0.2, initial=1)
    drifts = [0.0, 0.05, 0.5, 0.3, 0.01, 0.15, 0.02, 0.02, 0.9, 0.0]
    bounds = [controller.update(waiting(drift)) for drift in drifts]
    assert bounds == [2, 2, 1, 0, 1, 1, 2, 2, 1, 2]
    assert all(0 <= bound <= 2 for bound in bounds)


def test_max_staleness_zero_is_always_synchronous():
    controller = StalenessController(max_staleness=0, target_drift=0.1)
    assert [controller.update(waiting(0.0)) for _ in range(5)] == [0] * 5


@pytest.mark.parametrize(
    "settings", [{"max_staleness": -1, "target_drift": 0.1}, {"max_staleness": 1, "target_drift": 0}]
)
def test_bad_controller_settings_are_errors(settings):
    with pytest.raises(FluxError):
        StalenessController(**settings)


def test_importance_drift_counts_tokens_outside_the_clip_range():
    import math

    import torch

    current = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # ratios exp(current - behaviour): 1, e^0.5 (1.65, clipped), e^-0.1 (0.905), padding; e^-1 (0.37, clipped), 1, ...
    behaviour = torch.tensor([[0.0, -0.5, 0.1, 9.0], [1.0, 0.0, float("nan"), 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    mean, clipped = importance_drift(current, behaviour, mask, 0.2, 0.2)
    ratios = [1.0, math.exp(0.5), math.exp(-0.1), math.exp(-1.0), 1.0]  # the NaN token and padding are left out
    assert mean == pytest.approx(sum(ratios) / 5, rel=1e-5)
    assert clipped == pytest.approx(2 / 5)


# ---------------------------------------------------------------------- producer


class FakeBackend:
    """A server: generations run concurrently (each takes `generate_seconds`, like a remote call) and a weight load
    may land while they run; each rollout's text records the weight version it was sampled with."""

    is_local = False

    def __init__(self, generate_seconds: float = 0.02, fail_after: int | None = None, load_seconds: float = 0.0):
        self.version = None
        self.generate_seconds, self.load_seconds = generate_seconds, load_seconds
        self.fail_after = fail_after
        self.calls: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        self.generating = self.peak = 0
        self.loading = threading.Lock()  # two weight loads must never overlap

    def sync_weights(self, model) -> None:
        assert self.loading.acquire(blocking=False), "two weight loads overlapped"
        try:
            time.sleep(self.load_seconds)
            with self.lock:
                self.calls.append(("sync", model))
                self.version = model
        finally:
            self.loading.release()

    def generate(self, prompts, n, sampling) -> list[Rollout]:
        with self.lock:
            if self.fail_after is not None and sum(kind == "generate" for kind, _ in self.calls) >= self.fail_after:
                raise FluxError("rollout server at http://fake failed POST /generate 4 times (last: ConnectError)")
            self.calls.append(("generate", tuple(prompts)))
            version = self.version
            self.generating += 1
            self.peak = max(self.peak, self.generating)
        time.sleep(self.generate_seconds)
        with self.lock:
            self.generating -= 1
        return [Rollout(i, [1], [2], f"v{version}", False, [-0.5]) for i, _ in enumerate(prompts)]


def make_producer(backend, max_staleness, initial=None, last_step=None, steps_per_batch=1):
    controller = StalenessController(max_staleness, target_drift=0.1, initial=initial)
    return RolloutProducer(
        backend,
        SamplingParams(),
        controller,
        steps_per_batch=steps_per_batch,
        last_step=last_step,
        snapshot=lambda m: m,
    )


def batch(index: int) -> list[str]:
    return [f"prompt {index}", f"prompt {index}"]


def fake_training(producer, steps, lookahead, train_seconds=0.03, drifts=None):
    """A trainer loop: submits `lookahead` batches ahead, takes, trains, measures, publishes."""
    infos, submitted = [], 0
    producer.publish_weights(0, 0)
    for step in range(steps):
        while submitted < min(steps, step + lookahead + 1):
            producer.submit(batch(submitted))
            submitted += 1
        rollouts, info = producer.take(batch(step), step)
        sampled_with = int(rollouts[0].text[1:])
        # The reported version is a lower bound of the weights that sampled the batch: staleness is never under-counted.
        assert info.version <= sampled_with <= step and step - sampled_with <= info.staleness
        infos.append(info)
        time.sleep(train_seconds)
        drift = drifts[step] if drifts else 0.0
        producer.measure(StepMeasurement(drift, info.generation_wait_s, train_seconds))
        producer.publish_weights(step + 1, step + 1)
    producer.close()
    return infos


def test_prefetched_batches_are_never_older_than_max_staleness():
    backend = FakeBackend(generate_seconds=0.01)
    producer = make_producer(backend, max_staleness=2)
    infos = fake_training(producer, steps=12, lookahead=3)
    staleness = [info.staleness for info in infos]
    assert max(staleness) <= 2
    assert max(staleness) >= 1  # generation ran ahead of the trainer
    assert sum(info.prefetched for info in infos) >= 10  # only the first batch (nothing known yet) is a miss
    assert backend.version == 12  # close() loaded the last step's weights


def test_max_staleness_zero_generates_every_batch_with_the_current_weights():
    backend = FakeBackend()
    infos = fake_training(make_producer(backend, max_staleness=0), steps=8, lookahead=3)
    assert [info.staleness for info in infos] == [0] * 8
    assert [info.version for info in infos] == list(range(8))


def test_high_drift_shrinks_the_bound_to_synchronous_generation():
    backend = FakeBackend(generate_seconds=0.01)
    producer = make_producer(backend, max_staleness=2)
    infos = fake_training(producer, steps=12, lookahead=3, drifts=[0.5] * 12)
    assert producer.bound == 0
    # Batches started after the bound reached 0 (two high-drift steps) are fresh; nothing exceeds the hard bound.
    assert [info.staleness for info in infos[5:]] == [0] * 7
    assert max(info.staleness for info in infos) <= 2


def test_a_batch_taken_later_than_predicted_is_regenerated_within_the_bound():
    backend = FakeBackend()
    producer = make_producer(backend, max_staleness=1)
    producer.publish_weights(0, 0)
    for index in range(3):
        producer.submit(batch(index))
    producer.take(batch(0), 0)
    producer.publish_weights(1, 1)
    time.sleep(0.3)  # batch 1 is generated with version 1 (expected at step 1)
    producer.publish_weights(5, 5)  # ... but the trainer jumps ahead: it is now 4 versions old
    _, info = producer.take(batch(1), 5)
    producer.close()
    assert info.staleness == 0 and not info.prefetched and producer.regenerated == 1


def test_prompts_the_producer_never_saw_are_generated_while_the_trainer_waits():
    backend = FakeBackend()
    producer = make_producer(backend, max_staleness=1)
    producer.publish_weights(3, 3)
    rollouts, info = producer.take(["an eval prompt"], 3)
    producer.close()
    assert info.staleness == 0 and not info.prefetched and producer.misses == 1
    assert rollouts[0].text == "v3"


def test_a_backend_failure_in_the_producer_is_raised_in_the_trainer_thread():
    backend = FakeBackend(fail_after=2)
    producer = make_producer(backend, max_staleness=1)
    with pytest.raises(FluxError, match="failed POST /generate"):
        fake_training(producer, steps=6, lookahead=2)
    producer.close(load_latest=False)
    assert producer.in_flight == 0


def test_nothing_is_prefetched_past_the_last_step():
    backend = FakeBackend()
    producer = make_producer(backend, max_staleness=2, last_step=4)
    fake_training(producer, steps=4, lookahead=4)
    generated = [prompts for kind, prompts in backend.calls if kind == "generate"]
    assert generated == [tuple(batch(i)) for i in range(4)]


def test_eval_prompts_between_steps_leave_the_prefetched_batches_alone():
    backend = FakeBackend()
    producer = make_producer(backend, max_staleness=1)
    producer.publish_weights(0, 0)
    for index in range(3):
        producer.submit(batch(index))
    producer.take(batch(0), 0)
    producer.publish_weights(1, 1)
    _, evaluated = producer.take(["an eval prompt"], 1, prefetched=False)
    _, info = producer.take(batch(1), 1)
    producer.close()
    assert not evaluated.prefetched and evaluated.staleness == 0
    assert info.prefetched and producer.misses == 1  # only the eval prompt was generated on demand


def test_up_to_max_staleness_plus_one_batches_generate_at_once_while_weights_load():
    # Generation is slow against training (a remote server's latency): the producer keeps 3 batches in flight.
    backend = FakeBackend(generate_seconds=0.3, load_seconds=0.05)
    producer = make_producer(backend, max_staleness=2)
    infos = fake_training(producer, steps=10, lookahead=6, train_seconds=0.02)
    assert backend.peak == producer.peak_in_flight == 3
    assert max(info.staleness for info in infos) <= 2
    assert sum(info.prefetched for info in infos) >= 9


@pytest.mark.parametrize("max_staleness", [0, 1])
def test_no_more_than_max_staleness_plus_one_batches_are_in_flight(max_staleness):
    backend = FakeBackend(generate_seconds=0.1)
    producer = make_producer(backend, max_staleness=max_staleness)
    infos = fake_training(producer, steps=6, lookahead=6, train_seconds=0.0)
    assert backend.peak <= max_staleness + 1 and max(info.staleness for info in infos) <= max_staleness
