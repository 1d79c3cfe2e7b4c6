"""KL coefficient controllers: fixed, or adaptive (Ziegler et al., 2019, section 2.2)."""

from __future__ import annotations


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, num_samples: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Moves the KL coefficient so the measured KL tracks ``target``.

    After each rollout of ``num_samples`` sequences with mean sequence KL ``current_kl``:
    ``error = clip(current_kl / target - 1, -0.2, 0.2)`` and
    ``kl_coef *= 1 + error * num_samples / horizon``. Too much KL raises the penalty,
    too little lowers it; the clip and the horizon keep each change small.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value = kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, num_samples: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * num_samples / self.horizon
