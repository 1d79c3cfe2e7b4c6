"""FluxConfig: the YAML schema every algorithm shares, validated by pydantic v2.

The ``algorithm:`` block is validated by the selected algorithm's own schema (from its
plugin), and ``trl:`` keys are checked against the algorithm's TRL config class. Every
validation failure becomes one ``ConfigError`` line naming the file, the line, the key
path and, for a misspelled key, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flux_core.config_checks import check_not_bool_for_number, checked_trl_value, parse_yaml, read_config_text
from flux_core.errors import ConfigError, FluxError, close_match


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, every field has a description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true``/``false`` is not a number here (pydantic's lax mode would read it as 1/0)."""
        check_not_bool_for_number(cls.model_fields[info.field_name].annotation, value)
        return value


class AlgorithmConfig(StrictModel):
    """Base of every ``algorithm:`` block; plugins subclass it with their own keys.

    A subclass may also declare ``flux_owned_trl_fields`` (TRL config fields its runner
    sets from Flux keys: ``trl:`` may not set them, and the message says which Flux key
    to use) and override :meth:`warnings_for`.
    """

    name: str = Field(description="Which installed algorithm to run (dpo, grpo, ppo, ...).")

    flux_owned_trl_fields: ClassVar[dict[str, str]] = {}

    def warnings_for(self, config: Any) -> list[str]:
        """One-line warnings about settings of ``config`` this algorithm ignores or overrides."""
        return []


class SGLangConfig(StrictModel):
    """A rollout server speaking SGLang's native HTTP API (SGLang itself, or ``flux serve``)."""

    base_url: str | None = Field(
        default=None,
        description="URL of an SGLang server (or `flux serve`) that generates rollouts for GRPO and PPO; "
        "unset: generate in the training process.",
    )
    timeout: PositiveFloat = Field(default=300.0, description="Seconds one HTTP request may take before it is retried.")
    max_concurrency: PositiveInt = Field(
        default=8, description="Most /generate requests in flight at once (a rollout batch is split across them)."
    )
    max_retries: NonNegativeInt = Field(
        default=3,
        description="Retries of a request that failed to connect, timed out or got a 5xx, with backoff 0.5, 1, 2 s...",
    )
    weights_dir: str | None = Field(
        default=None,
        description="Directory both trainer and server can read, where the policy is written (safetensors) for "
        "/update_weights_from_disk after each optimizer step (default OUTPUT_DIR/sglang_weights).",
    )


class AdaptiveAsyncConfig(StrictModel):
    """Generate the next rollout batches on the server while the trainer updates (GRPO; docs/rollouts.md)."""

    enabled: bool = Field(
        default=False,
        description="Overlap rollout generation with training: a background producer generates upcoming batches on "
        "the rollout server (sglang.base_url) while the trainer runs the current step. GRPO only for now.",
    )
    max_staleness: NonNegativeInt = Field(
        default=1,
        description="Hard bound: a batch is trained on at most this many policy versions (optimizer steps) after "
        "the weights that generated it; 0 = synchronous.",
    )
    target_drift: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Fraction of completion tokens whose importance ratio pi_current / pi_behaviour falls outside "
        "the clip range [1 - epsilon, 1 + epsilon_high]; above it the staleness bound shrinks, well below it "
        "(half) while the trainer waits on generation, the bound grows back towards max_staleness.",
    )


class CheckpointConfig(StrictModel):
    save_steps: PositiveInt | None = Field(
        default=None,
        description="Write output_dir/checkpoint-N every this many steps (None: only best/ and final/).",
    )


class DataSource(StrictModel):
    """Where a dataset comes from: the long form of ``data:`` and ``eval_data:``.

    The short form ``data: FILE`` is ``data: {path: FILE}``.
    """

    path: str | None = Field(
        default=None,
        description=(
            "A JSONL/JSON/Parquet/CSV file or a glob of shards, a directory written by save_to_disk, or a hub "
            "dataset id (e.g. trl-lib/ultrafeedback_binarized). eval_data without a path takes data's path, name "
            "and columns (give it another split)."
        ),
    )
    name: str | None = Field(default=None, description="The hub dataset's subset (configuration) name.")
    split: str | None = Field(default=None, description="Which split to read (default: train, or the only split).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Flux column -> the dataset's own column, e.g. {prompt: question, chosen: good, rejected: bad}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"path": str(value)} if isinstance(value, (str, Path)) else value


class LoraConfig(StrictModel):
    r: PositiveInt = Field(default=8, description="LoRA rank.")
    alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | str = Field(
        default="all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer except the output head.",
    )


class FluxConfig(StrictModel):
    """Everything one Flux run needs. Load it with :meth:`FluxConfig.from_yaml`."""

    model_path: str = Field(description="Hub model id (e.g. Qwen/Qwen3-8B) or a local model directory.")
    output_dir: str = Field(default="./outputs", description="Where checkpoint-N/, best/ and final/ are written.")
    sglang: SGLangConfig = Field(default_factory=SGLangConfig, description="Inference server for rollouts.")
    num_steps: PositiveInt = Field(default=1000, description="Number of optimizer steps to train.")
    batch_size: PositiveInt = Field(default=8, description="Examples per optimizer step (per process).")
    learning_rate: float = Field(default=1e-6, gt=0, description="Peak learning rate.")
    max_length: PositiveInt | None = Field(
        default=1024, description="Truncate prompt+completion to this many tokens (None: no truncation)."
    )
    seed: int = Field(default=42, description="Random seed for model init (LoRA), data order and sampling.")
    gradient_checkpointing: Literal["auto"] | bool = Field(
        default="auto",
        description=(
            "Recompute activations in the backward pass to save memory (~20-30% slower). auto: off only when the "
            "estimated peak training memory without it, x1.25, fits in the free GPU memory (or available RAM); a "
            "step that runs out of memory anyway turns it on and runs again. TRL's own default is on."
        ),
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on GPUs that support it, fp32 on CPU."
    )
    compile: bool = Field(
        default=False,
        description=(
            "torch.compile the model (transformers' torch_compile) for TRL-based algorithms: the first steps pay "
            "the compile time, later ones may run faster. Off by default: see benchmarks/README.md for what it "
            "measured."
        ),
    )
    data: DataSource | None = Field(
        default=None,
        description="Training data: a path, glob or hub id, or {path, name, split, columns} (fit(prompts=...) and "
        "--data override it).",
    )
    eval_data: DataSource | None = Field(
        default=None,
        description="Optional held-out data in the training data format (same forms as data); picks best/ by eval loss.",
    )
    eval_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Hold out this fraction of the training data as eval_data, the same rows for the same seed.",
    )
    dataset_num_proc: PositiveInt | None = Field(
        default=None, description="Worker processes for normalising and tokenizing large datasets (None: one)."
    )
    algorithm: SerializeAsAny[AlgorithmConfig] = Field(description="The algorithm and its settings.")
    lora: LoraConfig | None = Field(default=None, description="Train a LoRA adapter instead of every weight.")
    adaptive_async: AdaptiveAsyncConfig = Field(default_factory=AdaptiveAsyncConfig, description="Async rollouts.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoint cadence.")
    plot: bool = Field(
        default=False,
        description="Redraw output_dir/metrics.png at every save point (flux train always draws it at the end).",
    )
    report_to: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Experiment trackers to log every step to: any of tensorboard, wandb, mlflow, trackio, or none.",
    )
    run_name: str | None = Field(default=None, description="The run's name in trackers (default: output_dir's name).")
    push_to_hub: str | None = Field(
        default=None,
        description="Hub model repo id (user/name) to upload best/ (else final/) to at the end, model card included.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_or_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("report_to")
    @classmethod
    def _installed_trackers(cls, value: list[str]) -> list[str]:
        from flux_core.report.trackers import check_trackers

        check_trackers(value)
        return value
    on_nonfinite: Literal["stop", "skip"] = Field(
        default="stop",
        description=(
            "A step whose loss, grad norm or learning rate is NaN/Inf: stop = end the run (exit 1) before the "
            "optimizer applies it; skip = do not apply that optimizer step and go on (see max_skipped_steps)."
        ),
    )
    max_skipped_steps: NonNegativeInt = Field(
        default=10, description="With on_nonfinite: skip, stop the run once more steps than this were skipped."
    )
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra settings passed to the algorithm's TRL config (e.g. DPOConfig); each key must be a field of it.",
    )

    @field_validator("algorithm", mode="before")
    @classmethod
    def _validate_algorithm(cls, value: Any) -> Any:
        if isinstance(value, AlgorithmConfig) and type(value) is not AlgorithmConfig:
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("needs a 'name' key naming the algorithm (e.g. name: dpo)")
        from flux_core.registry import get_registry

        try:
            algorithm = get_registry().get_algorithm(str(value["name"]))
        except FluxError as error:  # reported at algorithm.name, with its line
            raise _KeyError(("algorithm", "name"), str(error)) from None
        return algorithm.config_schema.model_validate(value)

    @model_validator(mode="after")
    def _check_trl_block(self) -> "FluxConfig":
        if self.trl:
            from flux_core.registry import get_registry

            algorithm = get_registry().get_algorithm(self.algorithm.name)
            trl_class = algorithm.load_trl_config()
            if trl_class is None:
                raise ValueError(f"algorithm '{algorithm.name}' takes no trl: block")
            valid = {f.name for f in dataclasses.fields(trl_class)}
            for key in self.trl:
                if key not in valid:
                    raise _KeyError(("trl", key), f"not a field of {trl_class.__name__}{close_match(key, valid)}")
            owned = self.algorithm.flux_owned_trl_fields
            for key in self.trl:
                if key in owned:
                    raise _KeyError(("trl", key), owned[key])
            for key in list(self.trl):  # the value's type, so a bad one fails now rather than mid-run
                try:
                    self.trl[key] = checked_trl_value(trl_class, key, self.trl[key])
                except ValueError as error:
                    raise _KeyError(("trl", key), str(error)) from None
            if self.trl.get("use_liger_kernel"):
                import importlib.util

                if importlib.util.find_spec("liger_kernel") is None:  # transformers would fail at step 0
                    raise _KeyError(
                        ("trl", "use_liger_kernel"),
                        "needs liger-kernel, which is not installed: pip install liger-kernel (Triton kernels, "
                        "for CUDA GPUs)",
                    )
        return self

    @model_validator(mode="after")
    def _check_data_sources(self) -> "FluxConfig":
        if self.data is not None and self.data.path is None:
            raise _KeyError(("data", "path"), "required: a file, glob, saved dataset directory or hub dataset id")
        if self.eval_data is not None and self.eval_fraction is not None:
            raise _KeyError(("eval_fraction",), "give eval_data or eval_fraction, not both")
        return self

    @model_validator(mode="after")
    def _warn_on_ignored_settings(self) -> "FluxConfig":
        for message in self.algorithm.warnings_for(self):
            warnings.warn(message, UserWarning, stacklevel=2)
        return self

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "FluxConfig":
        """Load ``path``, apply ``--set``-style ``key.sub=value`` overrides, validate.

        The file must be UTF-8 YAML without duplicate keys. An error in a value that an
        override set names that ``--set`` argument rather than the file's line.
        """
        path = Path(path)
        data, node = parse_yaml(read_config_text(path), str(path))
        if data is None:
            raise ConfigError(f"{path}: config file is empty")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        for override in overrides or ():
            apply_override(data, override)
        overridden = {tuple(o.partition("=")[0].strip().split(".")): o for o in overrides or ()}
        return cls.from_dict(data, source=str(path), yaml_node=node, overrides=overridden)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        source: str = "config",
        yaml_node: Any = None,
        overrides: dict[tuple[str, ...], str] | None = None,
    ) -> "FluxConfig":
        """Validate ``data``; errors name ``source`` (and the YAML line when known).

        ``overrides`` maps a key path to the ``--set`` argument that set it.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, source, yaml_node, data, overrides)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _KeyError(ValueError):
    """A validation error about a key below the one pydantic reports (e.g. ``trl.<key>``)."""

    def __init__(self, loc: tuple[str, ...], message: str):
        super().__init__(message)
        self.loc = loc


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``key.sub=value`` override (value parsed as YAML) to ``data``."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set algorithm.beta=0.2")
    target = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: '{part}' is not a section")
        target = child
    try:
        target[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {override!r}: value is not valid YAML") from None


# ---------------------------------------------------------------------- errors


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the YAML key at ``loc`` (or of its deepest existing parent)."""
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line


def _model_at(loc: tuple, root: type[BaseModel], data_root: Any) -> type[BaseModel] | None:
    """The pydantic model class whose fields live at ``loc`` (for 'did you mean')."""
    model: Any = root
    for part in loc:
        if model is FluxConfig and part == "algorithm":
            model = _algorithm_schema(data_root) or AlgorithmConfig
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _override_of(loc: tuple, overrides: dict[tuple[str, ...], str]) -> str | None:
    """The ``--set`` argument that set the key at ``loc`` or a section containing it."""
    parts = tuple(str(part) for part in loc)
    for path, override in overrides.items():
        if path and parts[: len(path)] == path:
            return override
    return None


def _algorithm_schema(data: Any) -> type[BaseModel] | None:
    try:
        from flux_core.registry import get_registry

        return get_registry().get_algorithm(data["algorithm"]["name"]).config_schema
    except (FluxError, KeyError, TypeError):
        return None


def format_validation_error(
    error: ValidationError,
    source: str,
    yaml_node: Any = None,
    data: Any = None,
    overrides: dict[tuple[str, ...], str] | None = None,
) -> str:
    """One line for the first problem: ``file:line: key.path: what is wrong``.

    When a ``--set`` override set the key (or a section above it), the line names that
    override instead: ``--set 'num_steps=true': num_steps: ...``.
    """
    first = error.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    context_error = (first.get("ctx") or {}).get("error")
    if isinstance(context_error, _KeyError):
        loc = context_error.loc
    key_path = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(yaml_node, loc) if yaml_node is not None else None
    where = f"{source}:{line}" if line else source
    override = _override_of(loc, overrides or {})
    if override is not None:
        where = f"--set {override!r}"

    if first["type"] == "extra_forbidden":
        model = _model_at(loc[:-1], FluxConfig, data)
        valid = list(getattr(model, "model_fields", {})) if model else []
        hint = close_match(loc[-1], valid) or (f" (valid keys: {', '.join(valid)})" if valid else "")
        return f"{where}: {key_path}: unknown key{hint}"
    if first["type"] == "missing":
        return f"{where}: {key_path}: required key is missing"
    message = first["msg"]
    if isinstance(context_error, Exception):
        message = str(context_error)
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{where}: {key_path}: {message}"
