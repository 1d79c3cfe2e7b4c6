"""Non-finite guard: a NaN/Inf loss, gradient norm or learning rate never reaches the weights.

Before every optimizer step Flux checks the step's ``loss``, ``grad_norm`` and
``learning_rate`` (in that order). With ``on_nonfinite: stop`` (the default) the first
non-finite one stops the run with one line naming the step and the metric; the
optimizer never applies it, so no weights and no checkpoint hold it. With
``on_nonfinite: skip`` that optimizer step is not applied (its gradients are dropped,
so AdamW's moments and step count stay as they were; the LR schedule still advances),
the step is logged with its non-finite values, and the run stops once more than
``max_skipped_steps`` steps were skipped.

TRL-wrapped algorithms check from a ``TrainerCallback`` (:meth:`NonFiniteGuard.trl_callback`)
at ``on_pre_optimizer_step``: transformers calls it after gradient clipping and right
before ``optimizer.step()``. Under multi-process training the gradients are already
reduced there, so every rank decides alike. Under an fp16 ``GradScaler`` a non-finite
gradient norm is left to the scaler, which skips such steps by design.

Metrics keep NaN/Inf as they are (``metrics.jsonl`` and ``flux_checkpoint.json`` write
them as ``null``, never as invalid JSON), and ``best/`` never picks a non-finite score.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from flux_core.errors import FluxError

CHECKED_METRICS = ("loss", "grad_norm", "learning_rate")


class NonFiniteError(FluxError):
    """A step's loss, gradient norm, learning rate or the weights were NaN or infinite."""


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/Inf float (nested in dicts and lists) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def nonfinite_parameter(model: Any) -> str | None:
    """The name of the first parameter holding a NaN/Inf, or ``None`` when all are finite
    (or ``model`` has no parameters to check).

    A parameter's fp32 sum is finite when all its values are (NaN and infinity propagate),
    and summing is one pass without the boolean copy ``isfinite`` makes (many times faster
    on CPU); ``isfinite`` decides only where the sum is not finite (an overflow would be a
    false alarm)."""
    import torch

    with torch.no_grad():
        for name, parameter in getattr(model, "named_parameters", lambda: ())():
            if not parameter.is_floating_point() or bool(torch.isfinite(parameter.sum(dtype=torch.float32))):
                continue
            if not bool(torch.isfinite(parameter).all()):
                return name
    return None


class NonFiniteGuard:
    """Decides, before each optimizer step, whether the step may be applied.

    Args:
        policy: ``stop`` or ``skip`` (``config.on_nonfinite``).
        max_skipped_steps: with ``skip``, the run stops when more steps than this were skipped.
        skipped: steps already skipped (a resumed run carries them over).
    """

    def __init__(self, policy: str = "stop", max_skipped_steps: int = 10, skipped: list[int] | None = None):
        self.policy = policy
        self.max_skipped_steps = max_skipped_steps
        self.skipped: list[int] = list(skipped or [])

    @classmethod
    def from_config(cls, config: Any, skipped: list[int] | None = None) -> NonFiniteGuard:
        return cls(getattr(config, "on_nonfinite", "stop"), getattr(config, "max_skipped_steps", 10), skipped)

    def check(self, step: int, values: dict[str, float | None]) -> bool:
        """True when step ``step`` must be skipped; raises :class:`NonFiniteError` to stop.

        ``values`` maps metric names to this step's values (``None``: not measured).
        """
        bad = next(((name, v) for name, v in values.items() if v is not None and not math.isfinite(v)), None)
        if bad is None:
            return False
        name, value = bad
        if self.policy != "skip":
            raise NonFiniteError(
                f"step {step}: {name} is {value}; stopped before the optimizer step (on_nonfinite: stop), so no "
                "weights or checkpoints hold it; on_nonfinite: skip skips such steps instead"
            )
        if step not in self.skipped:
            self.skipped.append(step)
        if len(self.skipped) > self.max_skipped_steps:
            raise NonFiniteError(
                f"step {step}: {name} is {value}; {len(self.skipped)} steps skipped, more than max_skipped_steps: "
                f"{self.max_skipped_steps} (on_nonfinite: skip); the run stops"
            )
        warnings.warn(
            f"step {step}: {name} is {value}; the optimizer step was skipped "
            f"({len(self.skipped)} of at most {self.max_skipped_steps})",
            UserWarning,
            stacklevel=2,
        )
        return True

    def extra_metrics(self) -> dict[str, float]:
        """``skipped_steps`` (running count) on every step of a ``skip`` run."""
        return {"skipped_steps": float(len(self.skipped))} if self.policy == "skip" else {}

    def trl_callback(self, trainer: Any):
        """A ``TrainerCallback`` applying this guard to a transformers/TRL trainer's steps."""
        import torch
        from transformers import TrainerCallback

        guard = self

        class NonFiniteGuardCallback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                # transformers resets its running loss by subtracting it from itself, which
                # keeps a skipped step's NaN forever; start each step from zero instead.
                running = getattr(trainer, "_tr_loss", None)
                if running is not None and not bool(torch.isfinite(running).all()):
                    running.zero_()

            def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
                step = state.global_step + 1
                running = getattr(trainer, "_tr_loss", None)  # this step's summed micro-batch losses
                scaler = getattr(trainer.accelerator, "scaler", None)
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grad_norm = None
                if grads and scaler is None:
                    grad_norm = float(torch.nn.utils.get_total_norm(grads))
                values = {
                    "loss": None if running is None else float(running),
                    "grad_norm": grad_norm,
                    "learning_rate": optimizer_learning_rate(optimizer),
                }
                if guard.check(step, values):
                    model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient

        return NonFiniteGuardCallback()


def optimizer_learning_rate(optimizer: Any) -> float:
    """The learning rate to check: the first non-finite one among the parameter groups, else the first."""
    rates = [float(group["lr"]) for group in optimizer.param_groups]
    return next((rate for rate in rates if not math.isfinite(rate)), rates[0])
