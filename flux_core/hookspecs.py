"""Flux hook specifications: markers and specs only.

A plugin is any module or object with functions decorated ``@flux_core.hookimpl``,
registered through the ``flux`` entry-point group. The docstrings below are the
reference documentation for each hook (``flux plugins --hooks`` prints them).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("flux")
hookimpl = pluggy.HookimplMarker("flux")


@hookspec
def register_algorithms(register: Callable[..., None]) -> None:
    """Register training algorithms.

    Call ``register(algorithm)`` with a :class:`flux_core.registry.Algorithm` for each
    algorithm the plugin provides. ``algorithm.name`` is what YAML's ``algorithm.name``
    selects; ``algorithm.config_schema`` validates the ``algorithm:`` block.
    """


@hookspec
def register_losses(register: Callable[..., None]) -> None:
    """Register named losses.

    Call ``register(name, fn, algorithm=NAME)`` for an algorithm whose ``Algorithm``
    declares ``takes_losses``; naming any other algorithm is an error that names the
    plugin. YAML ``algorithm.loss: NAME`` selects one; ``algorithm.loss_kwargs`` fills
    ``loss_kwargs``. The calling convention of ``fn`` belongs to the algorithm's plugin,
    which documents it; for Flux's own:

    - ``dpo``: ``fn(inputs: flux_dpo.inputs.PreferenceLogps, *, beta, label_smoothing,
      **loss_kwargs)`` returning one loss per preference pair.
    - ``ppo``: ``fn(inputs: flux_ppo.losses.PolicyLossInputs, *, cliprange,
      **loss_kwargs)`` returning one policy loss per completion token.
    """


@hookspec
def register_rewards(register: Callable[..., None]) -> None:
    """Register named reward functions for online algorithms (GRPO, PPO).

    Call ``register(name, fn)``. ``fn(prompts, completions, *, setting=..., **columns)``
    returns one float (or ``None`` for "not applicable") per completion. Keyword-only
    parameters are the reward's settings, filled from the YAML entry's ``kwargs:`` and
    checked when the config loads; every other keyword argument is a dataset column
    (one value per completion). See ``flux_core.online.rewards``.
    """


@hookspec(firstresult=True)
def reference_policy(config: Any, use_lora: bool, num_examples: int | None) -> Any:
    """Decide how reference log-probs are obtained for a run.

    Return ``"copy"`` (a frozen copy of the initial policy), ``"adapter"`` (the LoRA
    policy with its adapter disabled), ``"precompute"`` (one pass over the training
    data before step 1, cached on disk), ``"none"`` (reference-free), an object
    implementing :class:`flux_core.reference.ReferenceLogpsProvider` (reference
    log-probs from elsewhere, e.g. a file), or ``None`` to let the next plugin decide.
    ``num_examples`` is the training set size, or ``None`` for online algorithms that
    generate their data (they cannot precompute). The built-in default (``trylast``)
    honours ``algorithm.reference_free`` and ``algorithm.reference_policy``, and
    ``auto`` picks the cheapest correct policy (see ``flux_core.reference.auto_policy``).
    """


@hookspec(firstresult=True)
def collate_batch(config: Any, tokenizer: Any, algorithm: str) -> Any:
    """Return the data collator for ``algorithm``, or ``None`` to use the next one.

    The built-in default returns ``None``, which keeps the trainer's own padded
    collator; flux-dpo returns its padding-free collator when ``algorithm.collation``
    is ``packed``, or ``auto`` on a machine with a variable-length attention kernel.
    """


@hookspec
def step_metrics(step: int, metrics: dict[str, float], config: Any) -> dict[str, float] | None:
    """Return extra named metrics to merge into this step's ``result.metrics``.

    Called once per optimizer step with the step's built-in metrics. A name that
    clashes with a built-in metric or with another plugin's is an error. The built-in
    plugin adds ``tokens_per_second`` and ``peak_memory_mb``.
    """
