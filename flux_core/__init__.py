"""flux_core: hook specifications, plugin manager, registries, config and the user API.

Plugin authors import everything they need from here::

    from flux_core import Algorithm, AlgorithmConfig, TRLRunner, build_trl_config, hookimpl

``__all__`` is the plugin API; the modules behind it are implementation detail and may
move. Names load on first use, so ``import flux_core`` never imports torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

from flux_core.hookspecs import hookimpl

__version__ = "0.1.0"  # the one place flux-train's version is written (pyproject.toml reads it)
# The distribution this package is installed as (`flux-core` on PyPI is an unrelated project).
DISTRIBUTION = "flux-train"

# name -> the module that defines it. Grouped by what a plugin uses them for.
_PLUGIN_API = {
    # registering an algorithm
    "Algorithm": "flux_core.registry",
    "AlgorithmConfig": "flux_core.config",
    "FluxConfig": "flux_core.config",
    "DataFormat": "flux_core.data.formats",
    "get_registry": "flux_core.registry",
    "get_plugin_manager": "flux_core.plugins",
    "Loss": "flux_core.registry",
    "PlotPanel": "flux_core.registry",
    # what an algorithm relies on in TRL (Algorithm.trl_relies_on), checked when a run starts
    "TRLReliance": "flux_core.compat",
    "TESTED_TRL": "flux_core.compat",
    # the one guarded import of a plugin's trl.experimental trainer (one line if TRL moved it)
    "import_trl_experimental": "flux_core.compat",
    # checking and fingerprinting a plugin's own data shapes (flux-sft's formats, flux-dpo's cache key)
    "TEXT": "flux_core.data.formats",
    "CHAT": "flux_core.data.formats",
    "text_kind": "flux_core.data.shapes",
    "check_rows": "flux_core.data.checks",
    "describe_kind": "flux_core.data.formats",
    "update_digest": "flux_core.data.checks",
    # whether the model's chat template renders the data's tool calls and tool schemas (before TRL tokenizes)
    "check_template_renders": "flux_core.data.rendering",
    # showing rows as the trainer tokenizes them (Algorithm.preview, `flux data`)
    "TrainingView": "flux_core.data.views",
    "pair_view": "flux_core.data.views",
    "sequence_view": "flux_core.data.views",
    "prompt_view": "flux_core.data.views",
    # errors users see as one line
    "FluxError": "flux_core.errors",
    "ConfigError": "flux_core.errors",
    "DataError": "flux_core.errors",
    # the runner contract and what every runner is built from
    "Runner": "flux_core.runner",
    "TRLRunner": "flux_core.trl_based.runner",
    "RunContext": "flux_core.run.context",
    "StepResult": "flux_core.run.results",
    "StepCallback": "flux_core.run.results",
    "StepReporter": "flux_core.run.reporter",
    "FitResult": "flux_core.run.results",
    "CheckpointManager": "flux_core.run.checkpoint",
    "REWARD_SCORE_NAMES": "flux_core.run.checkpoint",
    "NonFiniteGuard": "flux_core.run.nonfinite",
    "with_resolved_steps": "flux_core.run.steps",
    "resolved_num_steps": "flux_core.run.steps",
    "optimizer_learning_rate": "flux_core.run.nonfinite",
    "Preempted": "flux_core.run.preemption",
    "ResumeError": "flux_core.run.resume",
    "restore_weights": "flux_core.run.resume",
    # the names of the files a run writes (flux_core.run.layout spells them all)
    "PPO_STATE_DIR": "flux_core.run.layout",
    "PPO_STATE_FILE": "flux_core.run.layout",
    "EVAL_SCRATCH_PREFIX": "flux_core.run.layout",
    "reference_cache_file": "flux_core.run.layout",
    "staged_path": "flux_core.run.layout",
    # models and TRL settings
    "load_model": "flux_core.modeling",
    "load_tokenizer": "flux_core.modeling",
    "peft_config": "flux_core.modeling",
    "resolve_precision": "flux_core.modeling",
    "torch_dtype": "flux_core.modeling",
    "looks_local": "flux_core.modeling",
    "check_weight_files": "flux_core.modeling",
    "check_finite_weights": "flux_core.modeling",
    "build_trl_config": "flux_core.trl_based.settings",
    # `flux eval` through a runner's own TRL trainer (Algorithm.evaluator)
    "evaluate_with_trainer": "flux_core.trl_based.evaluation",
    # one line on stderr per phase before the first step ("flux: tokenizing 256 rows")
    "announce_phase": "flux_core.report.phases",
    "SHARED_OWNED_TRL_FIELDS": "flux_core.trl_based.settings",
    "ReferenceLogpsProvider": "flux_core.reference",
    "BUILT_IN_POLICIES": "flux_core.reference",
    # online algorithms: rollouts and rewards
    "RolloutBackend": "flux_core.online.rollout",
    "Rollout": "flux_core.online.rollout",
    "SamplingParams": "flux_core.online.rollout",
    "create_backend": "flux_core.online.backends",
    "RewardSpec": "flux_core.online.rewards",
    "RewardFunction": "flux_core.online.rewards",
    "build_reward_functions": "flux_core.online.rewards",
    "REWARD_MODEL": "flux_core.online.rewards",
    "RewardScores": "flux_core.online.rewards",
    "score_completions": "flux_core.online.rewards",
    "load_reward_model": "flux_core.online.builtin_rewards",
    "eos_token_ids": "flux_core.online.tokens",
    "check_unique_labels": "flux_core.online.rewards",
    # Flux rewards as TRL's online trainers (GRPO, RLOO) call them, and the metrics TRL logs them under
    "TRLReward": "flux_core.trl_based.rewards",
    "reward_metric_names": "flux_core.trl_based.rewards",
    # batches of prompt groups as TRL's GRPOTrainer and RLOOTrainer form them
    "check_group_batches": "flux_core.trl_based.groups",
    "group_steps_per_epoch": "flux_core.trl_based.groups",
    "rollout_warnings": "flux_core.online.rollout",
    # adaptive async: rollouts generated ahead of training (torch loads only inside importance_drift)
    "RolloutProducer": "flux_core.online.async_rollout",
    "StalenessController": "flux_core.online.async_rollout",
    "StepMeasurement": "flux_core.online.async_rollout",
    "importance_drift": "flux_core.online.async_rollout",
}

__all__ = ["__version__", "hookimpl", *_PLUGIN_API]


def __getattr__(name: str) -> Any:
    module = _PLUGIN_API.get(name)
    if module is None:
        raise AttributeError(f"module 'flux_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PLUGIN_API))
