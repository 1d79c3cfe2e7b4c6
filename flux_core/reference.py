"""Reference-model policies: how a run obtains reference log-probs.

The ``reference_policy`` hook returns one of the built-in names below, or an object
implementing :class:`ReferenceLogpsProvider` (a plugin's own source of reference
log-probs, e.g. a file produced by another system).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

BUILT_IN_POLICIES = {
    "copy": "a frozen copy of the initial policy (TRL's default)",
    "adapter": "the LoRA policy with its adapter disabled; no second model in memory",
    "precompute": "one no-grad pass over the training data before step 1, cached under output_dir",
    "none": "reference-free: a zero reference",
}


@runtime_checkable
class ReferenceLogpsProvider(Protocol):
    """A plugin-supplied reference: per-example log-probs for offline algorithms (DPO).

    ``reference_logps`` receives the training examples (dicts with ``prompt``,
    ``chosen``, ``rejected``) in dataset order and returns one
    ``(ref_chosen_logp, ref_rejected_logp)`` pair per example: sequence log-probs
    summed over completion tokens, as the policy's are.
    """

    name: str

    def reference_logps(self, examples: Sequence[dict[str, Any]]) -> Sequence[tuple[float, float]]: ...


def auto_policy(use_lora: bool, num_steps: int, batch_size: int, num_examples: int | None) -> tuple[str, str]:
    """The cheapest correct policy and why.

    Precompute when a fixed dataset is seen more than once (each reference forward is
    then paid once instead of every epoch); otherwise the disabled adapter with LoRA
    (free), else a frozen copy. Online algorithms (``num_examples is None``) score fresh
    completions every step, so they never precompute.
    """
    if num_examples:
        epochs = num_steps * batch_size / num_examples
        if epochs > 1:
            return "precompute", f"each example is seen {epochs:.1f} times"
    if use_lora:
        return "adapter", "LoRA: the policy with its adapter disabled is the reference"
    return "copy", "each example is seen at most once"
