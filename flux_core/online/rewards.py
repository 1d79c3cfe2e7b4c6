"""Reward functions for online algorithms (GRPO, PPO): selection, validation, weighting.

A reward is a plain function registered through the ``register_rewards`` hook::

    def my_reward(prompts, completions, *, my_setting=1.0, **columns) -> list[float | None]

- ``prompts`` / ``completions``: one entry per completion (a prompt is repeated once per
  completion sampled from it). Each is a string, or a list of chat messages when the
  data is chat-formatted (as in TRL).
- keyword-only parameters (``my_setting``) are the reward's *settings*, filled from
  ``kwargs:`` in YAML and checked when the config is loaded;
- every other keyword argument is a dataset column, one value per completion
  (e.g. a reference ``answer``).
- Return one number per completion, or ``None`` where the reward does not apply. A batch
  where it applies to no completion at all is an error: such a reward trains nothing.

YAML selects and weights rewards::

    algorithm:
      rewards:
        - {name: exact_match, kwargs: {column: answer}}
        - {name: format_check, weight: 0.5, kwargs: {pattern: "^<answer>.*</answer>$"}}
        - {model: ./my-reward-model}        # a sequence-classification model directory
        - {name: my_rewards:brevity, kwargs: {limit: 80}}   # a function by import path, no plugin

A name that no plugin registered but that reads ``module:function`` (or, as TRL's CLI takes it,
``module.function``) is imported when the config is validated, from any importable module or
one in the working directory; its metrics are named after the function (``reward_brevity``).

:func:`build_reward_functions` turns those specs into callables that TRL's trainers accept
directly and that turn every misbehaving reward into a one-line :class:`FluxError`
naming the reward (and, when it raised, the offending completion). :func:`score_completions`
combines several rewards into one weighted total per completion, for algorithms that
score outside TRL (PPO).
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Sequence

from pydantic import Field, PrivateAttr, field_validator, model_validator

from flux_core.config import StrictModel
from flux_core.errors import FluxError, close_match

REWARD_MODEL = "reward_model"


class RewardSpec(StrictModel):
    """One entry of ``algorithm.rewards``: which reward, its weight and its settings."""

    name: str | None = Field(
        default=None,
        description="A registered reward (see `flux plugins`), or a function by import path: `module:function` "
        "(also `module.function`), importable or in the working directory; may be omitted when `model` is given.",
    )
    model: str | None = Field(
        default=None,
        description="Directory of a sequence-classification reward model; shorthand for "
        "{name: reward_model, kwargs: {path: ...}}.",
    )
    weight: float = Field(default=1.0, description="Multiplier of this reward in the total reward.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the reward (its keyword-only parameters)."
    )
    label: str | None = Field(
        default=None,
        description="Name shown in metrics (reward_<label>); defaults to `name` (for an import path: the "
        "function's name). Needed when one reward is listed twice.",
    )

    _function_name: str | None = PrivateAttr(default=None)  # set for a reward given by import path

    @model_validator(mode="before")
    @classmethod
    def _expand_model_shorthand(cls, data: Any) -> Any:
        """``{model: PATH}`` means ``{name: reward_model, kwargs: {path: PATH}}``."""
        if not isinstance(data, dict) or data.get("model") is None:
            return data
        model = data["model"]
        if data.get("name") not in (None, REWARD_MODEL):
            raise ValueError(f"give either name: {data['name']} or model: {model}, not both")
        kwargs = dict(data.get("kwargs") or {})
        if kwargs.setdefault("path", model) != model:
            raise ValueError("give the reward model directory once: model: PATH or kwargs: {path: PATH}")
        return {**data, "name": REWARD_MODEL, "kwargs": kwargs}

    @field_validator("name")
    @classmethod
    def _known_reward(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                resolve_reward(name)  # imports an import path now, so a bad one fails before the run
            except FluxError as error:  # ValueError, so the config error names the file, line and key
                raise ValueError(str(error)) from None
        return name

    @model_validator(mode="after")
    def _check(self) -> "RewardSpec":
        if self.name is None:
            raise ValueError("each reward needs a name (a registered reward) or model (a reward model directory)")
        if not math.isfinite(self.weight):
            raise ValueError(f"weight must be a finite number, not {self.weight}")
        fn = resolve_reward(self.name)
        path = _import_path(self.name)
        if path is not None and not _is_registered(self.name):
            self._function_name = path[1].rpartition(".")[2]
        check_settings(self.name, fn, self.kwargs)
        # A reward may check its settings' values too (e.g. that a regex compiles).
        validate = getattr(fn, "validate_settings", None)
        if validate is not None:
            try:
                validate(**self.kwargs)
            except FluxError as error:
                raise ValueError(str(error)) from None
        return self

    @property
    def metric_name(self) -> str:
        """The name this reward has in metrics and error messages."""
        return self.label or self._function_name or self.name  # type: ignore[return-value]


def resolve_reward(name: str) -> Callable[..., Any]:
    """The function ``name`` selects: a registered reward, else a ``module:function`` (or
    ``module.function``) import path. Raises a one-line ``FluxError`` naming the module and
    what went wrong when it cannot be imported or is not callable."""
    from flux_core.registry import get_registry

    registry = get_registry()
    path = _import_path(name)
    if path is None or name in registry.rewards:
        return registry.get_reward(name).fn  # an unknown plain name: the registry's error, with the closest name
    module_name, attribute = path
    unregistered = "" if ":" in name else f"no reward is registered as '{name}', and as module.function: "
    if os.getcwd() not in sys.path:  # a module where flux runs, as TRL's CLI finds reward_funcs; appended, so
        sys.path.append(os.getcwd())  # a directory named like a library (a trl/ checkout) does not shadow it
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while it is imported
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FluxError(
            f"reward '{name}': {unregistered}cannot import module '{module_name}': {type(error).__name__}: {detail}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [n for n in dir(target) if not n.startswith("_")]
            raise FluxError(
                f"reward '{name}': {unregistered}module '{module_name}' has no attribute '{attribute}'"
                f"{close_match(part, public)}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise FluxError(
            f"reward '{name}': {module_name}:{attribute} is not callable ({type(target).__name__}); "
            "point at a function taking (prompts, completions, **columns)"
        )
    return target


def _import_path(name: str) -> tuple[str, str] | None:
    """``(module, attribute)`` when ``name`` reads as ``module:function`` or ``module.function``."""
    module, colon, attribute = name.partition(":")
    if not colon:
        module, _, attribute = name.rpartition(".")
    if module and attribute and all(part.isidentifier() for part in (*module.split("."), *attribute.split("."))):
        return module, attribute
    return None


def _is_registered(name: str) -> bool:
    from flux_core.registry import get_registry

    return name in get_registry().rewards


def reward_settings(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of ``fn``: the settings ``kwargs:`` may fill."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return {}
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_settings(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a setting ``fn`` does not take or a required one missing."""
    settings = reward_settings(fn)
    if settings:  # a reward without keyword-only parameters takes anything (columns and settings alike)
        for key in kwargs:
            if key not in settings:
                valid = ", ".join(settings)
                raise ValueError(
                    f"reward '{name}' has no setting '{key}'{close_match(key, settings)}; settings: {valid}"
                )
    for setting in settings.values():
        if setting.default is inspect.Parameter.empty and setting.name not in kwargs:
            raise ValueError(f"reward '{name}' needs kwargs: {{{setting.name}: ...}}")


def check_unique_labels(specs: Sequence[RewardSpec]) -> None:
    """Raise ``ValueError`` when two specs would share one metric name."""
    seen: set[str] = set()
    for spec in specs:
        if spec.metric_name in seen:
            raise ValueError(
                f"reward '{spec.metric_name}' is listed twice; give each a distinct label: "
                f"(e.g. label: {spec.metric_name}_2)"
            )
        seen.add(spec.metric_name)


class RewardFunction:
    """A configured reward: TRL-compatible callable that validates every value it returns.

    Call it as TRL does, ``fn(prompts=..., completions=..., **columns)``; it returns one
    ``float`` or ``None`` per completion. ``__name__`` is the metric name, which is what
    TRL logs the reward under.
    """

    def __init__(self, spec: RewardSpec, fn: Callable[..., Any]):
        self.spec = spec
        self.fn = fn
        self.name = spec.metric_name
        self.weight = spec.weight
        self.__name__ = self.name

    def __repr__(self) -> str:
        return f"RewardFunction({self.name!r}, weight={self.weight})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        clashes = sorted(columns.keys() & self.spec.kwargs.keys())
        if clashes:
            raise FluxError(
                f"reward '{self.name}': setting '{clashes[0]}' has the same name as a dataset column; rename one"
            )
        try:
            values = self.fn(prompts, completions, **columns, **self.spec.kwargs)
        except FluxError:
            raise  # already a user-facing message naming the reward
        except Exception as error:
            raise self._describe_failure(error, prompts, completions, columns) from error
        return self._checked(values, prompts)

    def _describe_failure(self, error: Exception, prompts, completions, columns) -> FluxError:
        """A one-line error naming the reward and, when it can be found, the completion that broke it."""
        index = self._first_failing_index(prompts, completions, columns)
        where = f" on completion {index} (prompt {_excerpt(prompts[index])})" if index is not None else ""
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return FluxError(f"reward '{self.name}' raised {type(error).__name__}{where}: {detail}".rstrip(": "))

    def _first_failing_index(self, prompts, completions, columns) -> int | None:
        # Rewards score batches; to point at the culprit, rescore one completion at a time.
        for index in range(len(completions)):
            single = {key: value[index : index + 1] for key, value in columns.items()}
            try:
                self.fn(prompts[index : index + 1], completions[index : index + 1], **single, **self.spec.kwargs)
            except Exception:
                return index
        return None

    def _checked(self, values: Any, prompts: Sequence[Any]) -> list[float | None]:
        try:
            values = list(values)
        except TypeError:
            raise FluxError(
                f"reward '{self.name}' returned {type(values).__name__}, not a list with one number per completion"
            ) from None
        if len(values) != len(prompts):
            raise FluxError(
                f"reward '{self.name}' returned {len(values)} values for {len(prompts)} completions; "
                "return exactly one per completion (None where it does not apply)"
            )
        checked: list[float | None] = []
        for index, value in enumerate(values):
            if value is None:
                checked.append(None)
                continue
            if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
                value = value.item()
            if not isinstance(value, Real):
                raise FluxError(
                    f"reward '{self.name}' returned {type(value).__name__} {_excerpt(value)} for completion {index} "
                    f"(prompt {_excerpt(prompts[index])}); rewards must be numbers or None"
                )
            value = float(value)
            if not math.isfinite(value):
                raise FluxError(
                    f"reward '{self.name}' returned {value} for completion {index} "
                    f"(prompt {_excerpt(prompts[index])}); rewards must be finite (return None where it does not apply)"
                )
            checked.append(value)
        if checked and all(value is None for value in checked):
            raise FluxError(
                f"reward '{self.name}' returned None for all {len(checked)} completions of a batch: it scored nothing "
                "(None means 'does not apply' and is fine for some completions); check its kwargs and columns"
            )
        return checked


def build_reward_functions(specs: Sequence[RewardSpec | dict[str, Any]]) -> list[RewardFunction]:
    """Turn ``algorithm.rewards`` entries into validated, TRL-compatible reward callables."""
    specs = [spec if isinstance(spec, RewardSpec) else RewardSpec.model_validate(spec) for spec in specs]
    if not specs:
        raise FluxError("algorithm.rewards is empty: list at least one reward (see `flux plugins` for names)")
    try:
        check_unique_labels(specs)
    except ValueError as error:
        raise FluxError(str(error)) from None
    return [RewardFunction(spec, resolve_reward(spec.name)) for spec in specs]  # type: ignore[arg-type]


@dataclass(frozen=True)
class RewardScores:
    """Rewards of one batch of completions.

    Attributes:
        total: weighted sum of the rewards that apply to each completion; ``None``
            where no reward applies (every reward returned ``None``).
        by_name: each reward's own values (unweighted), keyed by its metric name.
        weights: each reward's weight, keyed by its metric name.
    """

    total: list[float | None]
    by_name: dict[str, list[float | None]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``reward``, ``reward_std`` and ``reward_<name>`` (means over applicable completions)."""
        metrics = {}
        totals = [value for value in self.total if value is not None]
        if totals:
            metrics["reward"] = _mean(totals)
            metrics["reward_std"] = _std(totals)
        for name, values in self.by_name.items():
            applicable = [value for value in values if value is not None]
            if applicable:
                metrics[f"reward_{name}"] = _mean(applicable)
        return metrics


def score_completions(
    reward_functions: Sequence[RewardFunction],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: dict[str, Sequence[Any]] | None = None,
) -> RewardScores:
    """Score each completion with every reward and combine them by weight.

    ``columns`` holds the dataset's extra columns, one value per completion. As in TRL,
    a ``None`` reward is left out of a completion's total (not counted as 0).
    """
    columns = columns or {}
    by_name = {fn.name: fn(prompts, completions, **columns) for fn in reward_functions}
    weights = {fn.name: fn.weight for fn in reward_functions}
    total: list[float | None] = []
    for index in range(len(completions)):
        parts = [weights[name] * values[index] for name, values in by_name.items() if values[index] is not None]
        total.append(sum(parts) if parts else None)
    return RewardScores(total=total, by_name=by_name, weights=weights)


def completion_text(completion: Any) -> str:
    """The text of a completion: itself, or the content of its last chat message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise FluxError(f"expected a completion string or chat message list, not {type(completion).__name__}")


def _excerpt(value: Any, limit: int = 60) -> str:
    text = completion_text(value) if isinstance(value, list) and value and isinstance(value[-1], dict) else str(value)
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    # Sample standard deviation (n - 1), matching the reward_std that TRL's GRPOTrainer logs.
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
