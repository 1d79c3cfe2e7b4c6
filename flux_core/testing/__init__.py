"""Flux's test kit: what a plugin's tests need, shipped with flux-train.

- :func:`build_tiny_model`: a tiny random-init Qwen3-style model + tokenizer, built offline in about a
  second (``flux tiny-model DIR``);
- :func:`preference_pairs` and :func:`prompt_rows`: deterministic synthetic data with something to learn;
- :func:`run_flux`: one training run from a config dict, returning its ``FitResult``;
- :func:`raw_trl_args` and :func:`raw_trl_losses`: the raw-TRL side of a parity test.

Installing flux-train registers :mod:`flux_core.testing.plugin` with pytest (a ``pytest11`` entry point):
its fixtures (``tiny_model_dir``, ``preferences_file``, ``preference_records``, ``prompt_records``,
``run_flux``, ``flux_cli``, ``register_plugin``) are there in any test suite, with no conftest.py. Nothing
here imports torch, TRL or pytest until a function needs it. See docs/plugins.md, "The test kit".
"""

from flux_core.testing.data import preference_pairs, prompt_rows
from flux_core.testing.parity import raw_trl_args, raw_trl_losses
from flux_core.testing.runs import run_flux
from flux_core.testing.tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tiny_model, build_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_tiny_model",
    "build_tokenizer",
    "preference_pairs",
    "prompt_rows",
    "raw_trl_args",
    "raw_trl_losses",
    "run_flux",
]
