"""FluxConfig: the YAML schema every algorithm shares, validated by pydantic v2.

The ``algorithm:`` block is validated by the selected algorithm's own schema (from its
plugin), and ``trl:`` keys are checked against the algorithm's TRL config class. Every
validation failure becomes one ``ConfigError`` line naming the file, the line, the key
path and, for a misspelled key, the closest valid one.
"""

from __future__ import annotations

import dataclasses
import re
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flux_core.config_checks import (
    LossArgumentError,
    check_not_bool_for_number,
    checked_loss_kwargs,
    checked_trl_value,
    nonfinite_number,
    parse_yaml,
    read_config_text,
)
from flux_core.errors import ConfigError, FluxError, close_match

# Optimizer steps of a run that sets neither num_steps nor num_epochs.
DEFAULT_NUM_STEPS = 1000


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, every field has a description."""

    # allow_inf_nan=False: NaN and infinity are refused in every number field, "inf" and "nan" strings included.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

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
    to use) and override :meth:`warnings_for` and :meth:`steps_per_epoch`.
    """

    name: str = Field(description="Which installed algorithm to run (dpo, grpo, ppo, ...).")

    flux_owned_trl_fields: ClassVar[dict[str, str]] = {}
    loss_arguments_set_by_flux: ClassVar[dict[str, str]] = {}

    @model_validator(mode="after")
    def _check_loss_kwargs(self) -> "AlgorithmConfig":
        """``loss_kwargs`` (in a schema with ``loss`` and ``loss_kwargs``) against the loss's signature.

        A schema declares ``loss_arguments_set_by_flux`` (argument -> the key that sets it) for
        the arguments its runner passes the loss itself (DPO: beta, label_smoothing).
        """
        loss, kwargs = getattr(self, "loss", None), getattr(self, "loss_kwargs", None)
        if not isinstance(loss, str) or not kwargs:
            return self
        from flux_core.registry import get_registry

        try:
            fn = get_registry().get_loss(loss, self.name).fn
        except FluxError:  # an unknown loss is the loss field's error
            return self
        try:
            checked = checked_loss_kwargs(fn, loss, kwargs, self.loss_arguments_set_by_flux)
        except LossArgumentError as error:
            raise _KeyError(("algorithm", "loss_kwargs", error.key), str(error)) from None
        kwargs.update(checked)  # in place: assigning would validate the model again
        return self

    def warnings_for(self, config: Any) -> list[str]:
        """One-line warnings about settings of ``config`` this algorithm ignores or overrides."""
        return []

    def steps_per_epoch(self, config: Any, num_examples: int, world_size: int) -> int:
        """Optimizer steps in one pass over ``num_examples`` training rows: what ``num_epochs`` counts.

        The default is transformers' count for a ``Trainer``: ``batch_size`` rows per process
        and batch, ``trl.gradient_accumulation_steps`` batches per step, ``world_size``
        processes. An algorithm whose steps consume rows otherwise overrides it (GRPO counts
        prompts per generation batch).
        """
        from flux_core.run.steps import batched_steps_per_epoch

        return batched_steps_per_epoch(config, num_examples, world_size)


class SGLangConfig(StrictModel):
    """A rollout server speaking SGLang's native HTTP API (SGLang itself, or ``flux serve``)."""

    base_url: str | list[str] | None = Field(
        default=None,
        description="URL of an SGLang server (or `flux serve`, or an SGLang router) that generates rollouts for GRPO "
        "and PPO, or a list of server URLs: requests are balanced across them, weights are loaded by all, and a "
        "server that keeps failing is dropped (the run goes on with the others); unset: generate in the training "
        "process.",
    )
    timeout: PositiveFloat = Field(default=300.0, description="Seconds one HTTP request may take before it is retried.")
    max_concurrency: PositiveInt = Field(
        default=8,
        description="Most /generate requests one rollout batch is split into, per server, sent at once (adaptive "
        "async may have several batches in flight).",
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

    @field_validator("base_url")
    @classmethod
    def _servers(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list: give one server URL or several")
            repeated = sorted({url for url in value if value.count(url) > 1})
            if repeated:
                raise ValueError(f"{repeated[0]} is listed twice: list each server once")
        return value


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
        description="Flux column -> the dataset's own column, e.g. {prompt: question, chosen: good, rejected: bad}; "
        "also onto the ShareGPT and Alpaca columns (conversations, system, instruction, input, output, history).",
    )
    message_keys: dict[Literal["role", "content"], str] = Field(
        default_factory=dict,
        description="Chat message key -> the key your messages use for it, e.g. {role: speaker, content: text} "
        "(role/content and ShareGPT's from/value are read without it).",
    )
    roles: dict[Literal["system", "user", "assistant", "tool_call", "tool"], list[str]] = Field(
        default_factory=dict,
        description="Chat role -> the role names your messages use for it, on top of the built-in ones (user: "
        "human; assistant: gpt, model, bot; tool_call: function_call; tool: observation), e.g. "
        "{user: [customer], assistant: [agent]}.",
    )
    weight: PositiveFloat | None = Field(
        default=None,
        description="In a list of sources (a mixture): this source's share; each next example is drawn from it with "
        "probability weight / sum of weights (seeded by seed) until every source was used whole at least once. "
        "Give every source a weight, or none (then the sources are concatenated).",
    )
    rows: PositiveInt | None = Field(
        default=None,
        description="Take the first this many rows of this source (an error when it has fewer); not together with "
        "weights.",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            return {"path": str(value)}
        if not isinstance(value, (dict, DataSource)):
            kind = type(value).__name__
            raise ValueError(f"expected a path, glob or hub id, a {{path: ...}} mapping, or a list of them, not {kind}")
        return value


def _one_or_many(value: Any) -> str:
    return _SOURCE_LIST if isinstance(value, list) else _ONE_SOURCE


# `data:` and `eval_data:` take one source or a list of them, a mixture (flux_core.data.mixture). The
# discriminator validates a list as a list (and anything else as one source), so an error names one branch.
_ONE_SOURCE, _SOURCE_LIST = "source", "sources"
DataSources = Annotated[
    Union[Annotated[DataSource, Tag(_ONE_SOURCE)], Annotated[list[DataSource], Tag(_SOURCE_LIST)]],
    Discriminator(_one_or_many),
]


def mixture_problem(value: Any, needs_path: bool = True) -> tuple[tuple[Any, ...], str] | None:
    """The first rule a ``data:``/``eval_data:`` value breaks, as (its key path, what is wrong), else None.

    Each source of a list needs a path (and so does one source, with ``needs_path``); a
    ``weight`` belongs to a list, on every source or none; weights and ``rows`` do not mix.
    """
    path_required = "required: a file, glob, saved dataset directory or hub dataset id"
    if isinstance(value, DataSource):
        if needs_path and value.path is None:
            return ("path",), path_required
        if value.weight is not None:
            return ("weight",), "only in a list of sources (a mixture), where it is this source's share"
        return None
    if not value:
        return (), "an empty list; give one source or more"
    for index, source in enumerate(value):
        if source.path is None:
            return (index, "path"), path_required
    weighted = [source.weight is not None for source in value]
    if any(weighted) and not all(weighted):
        return (weighted.index(False), "weight"), "give every source of a mixture a weight, or none"
    limited = [index for index, source in enumerate(value) if source.rows is not None]
    if any(weighted) and limited:
        return (limited[0], "rows"), "give the sources weights or rows, not both"
    return None


class LoraConfig(StrictModel):
    r: PositiveInt = Field(default=8, description="LoRA rank.")
    alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | str = Field(
        default="all-linear",
        description="Module names to adapt (each must match a module: q_proj matches every ...self_attn.q_proj), "
        "or 'all-linear' for every linear layer except the output head; one name alone is a one-item list, any "
        "other string is peft's regex over full module names.",
    )

    @field_validator("target_modules")
    @classmethod
    def _one_name_is_a_list(cls, value: list[str] | str) -> list[str] | str:
        """``q_proj`` means ``[q_proj]``: peft would read the string as a regex over full names, match nothing."""
        import re

        if isinstance(value, str) and value != "all-linear" and re.fullmatch(r"[\w.-]+", value):
            return [value]
        return value
    quantize: Literal["4bit", "8bit"] | None = Field(
        default=None,
        description="QLoRA: load the frozen base model quantized through bitsandbytes (4bit: NF4 with double "
        "quantization, computing in the run's precision; 8bit: LLM.int8) and train the adapter on it. Needs "
        "`pip install 'flux-train[qlora]'`. Checkpoints hold the adapter and the merged model, dequantized to the "
        "run's precision.",
    )


class FluxConfig(StrictModel):
    """Everything one Flux run needs. Load it with :meth:`FluxConfig.from_yaml`."""

    model_path: str = Field(min_length=1, description="Hub model id (e.g. Qwen/Qwen3-8B) or a local model directory.")
    output_dir: str = Field(
        default="./outputs", min_length=1, description="Where checkpoint-N/, best/ and final/ are written."
    )
    sglang: SGLangConfig = Field(default_factory=SGLangConfig, description="Inference server for rollouts.")
    num_steps: PositiveInt | None = Field(
        default=None,
        description=f"Number of optimizer steps to train ({DEFAULT_NUM_STEPS} when num_epochs is not set either).",
    )
    num_epochs: PositiveFloat | None = Field(
        default=None,
        description="Train this many passes over the training data instead of num_steps (fractions allowed); the "
        "step count is computed once the data is loaded, from its rows, batch_size, trl.gradient_accumulation_steps "
        "and the number of processes.",
    )
    batch_size: PositiveInt = Field(default=8, description="Examples per optimizer step (per process).")
    learning_rate: float = Field(default=1e-6, gt=0, description="Peak learning rate.")
    max_length: PositiveInt | None = Field(
        default=1024, description="Truncate prompt+completion to this many tokens (None: no truncation)."
    )
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**32,
        description="Random seed for model init (LoRA), data order and sampling (0 to 2**32 - 1, numpy's range).",
    )
    chat_template: str | None = Field(
        default=None,
        description="Chat template that renders chat-message data and generate() prompts: a built-in name "
        "(chatml, llama-2, llama-3, llama-3.1, gemma, qwen2.5, qwen3), a .jinja file, or a model directory or hub "
        "id to take the template from; unset: the tokenizer's own. Checkpoints save it with the tokenizer.",
    )
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
    data: DataSources | None = Field(
        default=None,
        description="Training data: a path, glob or hub id, or {path, name, split, columns}, or a list of them (a "
        "mixture: each with an optional weight or rows) (fit(prompts=...) and --data override it).",
    )
    eval_data: DataSources | None = Field(
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

    @field_validator("push_to_hub")
    @classmethod
    def _hub_repo_id(cls, value: str | None) -> str | None:
        """A malformed repo id fails now, not after training (huggingface_hub's own rule)."""
        if value is not None:
            from huggingface_hub.errors import HFValidationError
            from huggingface_hub.utils import validate_repo_id

            try:
                validate_repo_id(value)
            except HFValidationError as error:
                reason = str(error).split(": '")[0].rstrip(".")
                raise ValueError(f"{value!r} is not a hub repo id ({reason}); give user/name") from None
        return value

    @model_validator(mode="after")
    def _warn_offline_push(self) -> "FluxConfig":
        if self.push_to_hub is not None:
            from huggingface_hub.constants import is_offline_mode

            from flux_core.run.layout import BEST_DIR

            if is_offline_mode():
                warnings.warn(
                    f"push_to_hub: the hub is offline (HF_HUB_OFFLINE), so the upload at the end will fail; upload "
                    f"best/ later with `hf upload {self.push_to_hub} {Path(self.output_dir) / BEST_DIR}`",
                    UserWarning,
                    stacklevel=2,
                )
        return self

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

    @field_validator("chat_template")
    @classmethod
    def _chat_template_form(cls, value: str | None) -> str | None:
        from flux_core.chat_templates import check_chat_template_setting

        if value is not None:
            check_chat_template_setting(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """NaN and infinity nowhere, also in free-form blocks (``trl:``, ``loss_kwargs``, reward ``kwargs``)."""
        found = nonfinite_number(data)
        if found is not None:
            raise _KeyError(found[0], f"{found[1]} is not a finite number; give a finite value")
        return data

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, data: Any) -> Any:
        """Exactly one of num_steps and num_epochs; neither means num_steps: DEFAULT_NUM_STEPS."""
        if isinstance(data, dict):
            if data.get("num_steps") is not None and data.get("num_epochs") is not None:
                raise _KeyError(("num_epochs",), "give num_steps or num_epochs, not both")
            if data.get("num_steps") is None and data.get("num_epochs") is None:
                data = {**data, "num_steps": DEFAULT_NUM_STEPS}
        return data

    @model_validator(mode="after")
    def _check_data_sources(self) -> "FluxConfig":
        for key, value in (("data", self.data), ("eval_data", self.eval_data)):
            problem = mixture_problem(value, needs_path=key == "data") if value is not None else None
            if problem is not None:
                raise _KeyError((key, *problem[0]), problem[1])
        if isinstance(self.data, list) and isinstance(self.eval_data, DataSource) and self.eval_data.path is None:
            raise _KeyError(("eval_data", "path"), "required when data is a list of sources")
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

    @property
    def base_quantization(self) -> str | None:
        """``4bit``/``8bit`` when the base model is loaded quantized (``lora.quantize``: QLoRA), else None."""
        return self.lora.quantize if self.lora is not None else None

    def to_yaml(self) -> str:
        """The config as YAML; an epoch-based run keeps num_epochs, not the step count a run derived from it."""
        exclude = {"num_steps"} if self.num_epochs is not None else None
        return yaml.safe_dump(self.model_dump(mode="json", exclude=exclude), sort_keys=False)


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
    try:  # as a config file is read: duplicate keys and alias bombs refused too
        value, _ = parse_yaml(raw, source="value")
    except ConfigError as error:
        problem = re.sub(r"^value:\d+: (invalid YAML: )?", "", str(error))  # a one-line value: no line to name
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {problem}") from None
    parts = key.strip().split(".")
    target: Any = data
    for depth, part in enumerate(parts):
        above = ".".join(parts[:depth])
        if isinstance(target, list):  # an item of a list: data.0.weight=0.5
            if not part.isdigit() or int(part) >= len(target):
                raise ConfigError(
                    f"--set {override!r}: {above} is a list of {len(target)}; index it with 0 to {len(target) - 1}"
                )
            key_or_index: Any = int(part)
        elif part.isdigit():
            raise ConfigError(
                f"--set {override!r}: {above or 'the config'} holds no list to index; set the whole list: "
                f"--set '{above}=[...]'"
            )
        else:
            key_or_index = part
        if depth == len(parts) - 1:
            target[key_or_index] = value
            return
        if isinstance(target, dict) and target.get(part) is None:
            target[part] = {}
        target = target[key_or_index]
        if not isinstance(target, (dict, list)):
            if parts[depth + 1].isdigit():
                path = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"--set {override!r}: {path} holds no list to index; set the whole list: --set '{path}=[...]'"
                )
            raise ConfigError(f"--set {override!r}: '{part}' is not a section")


# ---------------------------------------------------------------------- errors


def _line_of(node: Any, loc: tuple) -> int | None:
    """1-based line of the YAML key at ``loc`` (or of its deepest existing parent)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]  # an item of a list (a source of a mixture)
            line = node.start_mark.line + 1
            continue
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
        if isinstance(part, int):  # an item of a list of models: the same model
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = _model_in(field.annotation)
        if model is None:
            return None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds, through ``Optional``, ``list`` and ``Annotated`` unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((model for arg in typing.get_args(annotation) if (model := _model_in(arg)) is not None), None)


def _in_file(node: Any, loc: tuple) -> bool:
    """Whether the YAML document ``node`` spells the key at ``loc`` (rather than a ``--set`` creating it)."""
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        elif isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == str(part)), None)
        else:
            return False
    return node is not None


def _override_of(loc: tuple, overrides: dict[tuple[str, ...], str], yaml_node: Any = None) -> str | None:
    """The ``--set`` argument that set the key at ``loc`` or a section containing it, or that made the key
    at ``loc`` by setting one below it (``--set foo.bar=1`` makes the unknown section ``foo``)."""
    parts = tuple(str(part) for part in loc)
    for path, override in overrides.items():
        if path and parts[: len(path)] == path:
            return override
    for path, override in overrides.items():
        if path[: len(parts)] == parts and not _in_file(yaml_node, loc):
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
    if len(loc) > 1 and loc[0] in ("data", "eval_data") and loc[1] in (_ONE_SOURCE, _SOURCE_LIST):
        loc = loc[:1] + loc[2:]  # the union's tag is no key of the config
    context_error = (first.get("ctx") or {}).get("error")
    if isinstance(context_error, _KeyError):
        loc = context_error.loc
    key_path = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(yaml_node, loc) if yaml_node is not None else None
    where = f"{source}:{line}" if line else source
    override = _override_of(loc, overrides or {}, yaml_node)
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
