"""What flux-dpo hands to registered DPO-family losses (``register(name, fn, algorithm="dpo")``).

A DPO loss is a plain function::

    def my_loss(inputs: PreferenceLogps, *, beta: float, label_smoothing: float, **loss_kwargs) -> Tensor

returning one loss per example (shape ``[batch]``); Flux averages them. ``loss_kwargs``
are the user's ``algorithm.loss_kwargs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class PreferenceLogps:
    """Per-example sequence log-probabilities of one batch of preference pairs.

    Attributes:
        chosen_logps: policy log-prob of each chosen completion, summed over its tokens.
        rejected_logps: same for the rejected completions.
        ref_chosen_logps: reference log-probs of the chosen completions, or ``None``
            in a reference-free run (treat the reference as 0).
        ref_rejected_logps: same for the rejected completions.
        chosen_lengths: number of completion tokens of each chosen completion (float).
        rejected_lengths: same for the rejected completions.
    """

    chosen_logps: "Tensor"
    rejected_logps: "Tensor"
    ref_chosen_logps: Optional["Tensor"]
    ref_rejected_logps: Optional["Tensor"]
    chosen_lengths: "Tensor"
    rejected_lengths: "Tensor"

    @property
    def reference_free(self) -> bool:
        return self.ref_chosen_logps is None

    @property
    def chosen_logratios(self) -> "Tensor":
        """log pi(chosen) - log ref(chosen); the policy log-prob alone when reference-free."""
        if self.ref_chosen_logps is None:
            return self.chosen_logps
        return self.chosen_logps - self.ref_chosen_logps

    @property
    def rejected_logratios(self) -> "Tensor":
        if self.ref_rejected_logps is None:
            return self.rejected_logps
        return self.rejected_logps - self.ref_rejected_logps
