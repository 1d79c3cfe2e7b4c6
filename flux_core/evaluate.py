"""``flux eval``: score a checkpoint on held-out data, alone or beside another.

Preference data is scored by the algorithm's own evaluator (``Algorithm.evaluator``;
DPO's: loss, accuracy and reward margin against the base model). Prompt data is scored
with reward functions: the mean reward of greedy and of sampled completions, with a
few samples to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.run.layout import CONFIG_FILE

SAMPLES = 3


def checkpoint_config(checkpoint: str | Path, config_path: str | None) -> Any:
    """The run config a checkpoint was trained with (its ``flux_config.yaml``), or ``config_path``
    (a missing one is an error naming it)."""
    from flux_core.config import FluxConfig

    if config_path:
        return FluxConfig.from_yaml(config_path)
    path = check_checkpoint(checkpoint) / CONFIG_FILE
    if not path.exists():
        raise FluxError(f"{checkpoint}: no {CONFIG_FILE} (not written by Flux); pass the run's config with --config")
    return FluxConfig.from_yaml(path)


def check_checkpoint(checkpoint: str | Path) -> Path:
    """The directory to load for a local ``checkpoint`` (a missing one is an error naming it);
    a hub id is returned as given."""
    from flux_core.modeling import looks_local
    from flux_core.run.checkpoint import resolve_checkpoint

    return resolve_checkpoint(checkpoint) if looks_local(str(checkpoint)) else Path(checkpoint)


def evaluate(config: Any, checkpoint: str | Path, data: Any, rewards: list[str] | None = None) -> dict[str, Any]:
    """Metrics of the model in ``checkpoint`` on ``data`` (any source ``fit`` takes)."""
    from flux_core.data.load import load_data
    from flux_core.quiet import quiet_libraries
    from flux_core.registry import get_registry

    check_checkpoint(checkpoint)
    algorithm = get_registry().get_algorithm(config.algorithm.name)
    dataset = load_data(data, algorithm.data_format)
    with quiet_libraries():
        if algorithm.evaluator is not None:
            return algorithm.load_evaluator()(config, str(checkpoint), dataset)
        return evaluate_prompts(config, str(checkpoint), dataset, rewards)


def evaluate_prompts(config: Any, checkpoint: str, dataset: Any, reward_names: list[str] | None) -> dict[str, Any]:
    """Mean reward of greedy and of sampled completions of every prompt, and a few samples."""
    from flux_core.modeling import load_model, load_tokenizer, resolve_precision
    from flux_core.online.rewards import build_reward_functions, completion_text, score_completions
    from flux_core.online.rollout import LocalBackend, SamplingParams

    specs = reward_specs(reward_names) if reward_names else getattr(config.algorithm, "rewards", [])
    if not specs:
        raise FluxError("flux eval on prompts needs rewards: the config's algorithm.rewards, or --reward NAME")
    reward_functions = build_reward_functions(specs)
    model = load_model(checkpoint, resolve_precision(config.precision))
    backend = LocalBackend(model, load_tokenizer(checkpoint, config.chat_template), max_batch_size=config.batch_size)
    length = getattr(config.algorithm, "max_completion_length", 64)
    temperature = getattr(config.algorithm, "temperature", 1.0) or 1.0
    prompts = dataset["prompt"]
    columns = {name: dataset[name] for name in dataset.column_names if name != "prompt"}
    metrics: dict[str, Any] = {}
    for label, sampling in (
        ("greedy", SamplingParams(max_new_tokens=length, temperature=0.0)),
        ("sampled", SamplingParams(max_new_tokens=length, temperature=temperature)),
    ):
        rollouts = backend.generate(prompts, n=1, sampling=sampling)
        completions = [rollout.text for rollout in rollouts]
        scores = [value for value in score_completions(reward_functions, prompts, completions, columns).total]
        scored = [value for value in scores if value is not None]
        metrics[f"reward_{label}"] = sum(scored) / len(scored) if scored else float("nan")
        if label == "greedy":
            metrics["samples"] = [
                {"prompt": completion_text(prompt), "completion": completion, "reward": score}
                for prompt, completion, score in list(zip(prompts, completions, scores))[:SAMPLES]
            ]
    return metrics


def reward_specs(names: list[str]) -> list[Any]:
    """``--reward NAME`` options as reward specs; an unknown name, or a reward that needs settings,
    is a one-line error naming the option."""
    from pydantic import ValidationError

    from flux_core.online.rewards import RewardSpec

    specs = []
    for name in names:
        try:
            specs.append(RewardSpec.model_validate({"name": name}))
        except ValidationError as error:
            problem = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise FluxError(
                f"--reward {name}: {problem} (--reward takes a name; settings go in the config's algorithm.rewards)"
            ) from None
    return specs


def write_report(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """``eval.json``: every checkpoint's metrics (and samples); non-finite values as null."""
    from flux_core.run.nonfinite import json_safe

    path.write_text(json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")


def table(results: dict[str, dict[str, Any]]) -> str:
    """The numeric metrics of each checkpoint side by side, one row a metric."""
    names = sorted({key for metrics in results.values() for key, value in metrics.items() if _is_number(value)})
    header = ["metric", *results]
    rows = [[name, *(_format(metrics.get(name)) for metrics in results.values())] for name in names]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else "-"
