"""Checks behind FluxConfig's one-line errors that pydantic alone does not make.

- :func:`read_config_text` / :func:`parse_yaml`: a config file must be UTF-8 and valid
  YAML without duplicate keys (PyYAML silently keeps the last of two equal keys).
- :func:`check_not_bool_for_number`: ``true``/``false`` is never a number (pydantic's lax
  mode would turn ``num_steps: true`` into 1), while numeric strings such as YAML's
  ``5e-4`` still convert as before.
- :func:`nonfinite_number`: NaN and infinity are refused wherever a number is read,
  free-form blocks (``trl:``, ``loss_kwargs``, reward ``kwargs``) included.
- :func:`checked_trl_value`: a ``trl:`` value must fit the type of its field in the TRL
  config dataclass, one of its enum's names where the field takes an enum or a string,
  and the range transformers needs (:data:`TRL_FIELD_BOUNDS`), so a bad value fails when
  the config loads, not in the optimizer.
- :func:`checked_loss_kwargs`: ``algorithm.loss_kwargs`` must be arguments of the loss
  function, of the types its signature declares.
"""

from __future__ import annotations

import difflib
import enum
import functools
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from flux_core.errors import ConfigError, close_match

# ------------------------------------------------------------------------- YAML


def read_config_text(path: Path) -> str:
    """The text of the config file ``path``; a missing, unreadable or non-UTF-8 file is a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - raw.rfind(b"\n", 0, error.start)
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column}); save the file as UTF-8"
        ) from None


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """``(data, node)``: the parsed document and its node tree (for line numbers).

    Invalid YAML and duplicate keys are ConfigErrors naming ``source`` and the line.
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_expanded_size(node, source)
        check_duplicate_keys(node, source)
        return loader.construct_document(node), node
    except yaml.reader.ReaderError as error:  # a control character; it has a position, not a mark
        line = text.count("\n", 0, error.position) + 1
        raise ConfigError(f"{source}:{line}: invalid YAML: {_first_line(str(error))}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: invalid YAML: {_first_line(problem)}") from None
    finally:
        if loader is not None:
            loader.dispose()


# More values than any config holds: a document whose aliases expand beyond it is an alias bomb.
MAX_EXPANDED_VALUES = 100_000


def check_expanded_size(node: yaml.Node, source: str) -> None:
    """Raise a ConfigError when ``node``, with every alias written out, holds more than
    :data:`MAX_EXPANDED_VALUES` values (an alias bomb: ten lines of ``&a [*b, *b, ...]``
    expand to billions of values) or an alias inside its own anchor (a recursive document).

    Counted on the node graph, where an alias is the anchored node itself, each node once.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(item: yaml.Node) -> int:
        if id(item) in sizes:
            return sizes[id(item)]
        if id(item) in open_nodes:
            raise ConfigError(f"{source}:{item.start_mark.line + 1}: invalid YAML: an alias refers to its own anchor")
        open_nodes.add(id(item))
        children = []
        if isinstance(item, yaml.MappingNode):
            children = [child for pair in item.value for child in pair]
        elif isinstance(item, yaml.SequenceNode):
            children = item.value
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(id(item))
        if total > MAX_EXPANDED_VALUES:
            raise ConfigError(
                f"{source}:{item.start_mark.line + 1}: invalid YAML: its aliases expand to more than "
                f"{MAX_EXPANDED_VALUES:,} values (an alias bomb?); write the values out"
            )
        sizes[id(item)] = total
        return total

    size(node)


def check_duplicate_keys(node: yaml.Node, source: str, path: tuple[str, ...] = ()) -> None:
    """Raise a ConfigError for the first mapping key that appears twice, naming both lines."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    key_path = ".".join((*path, key_node.value))
                    raise ConfigError(
                        f"{source}:{line}: {key_path}: duplicate key (first set on line {first_line[key]})"
                    )
                first_line[key] = line
            check_duplicate_keys(value_node, source, (*path, str(getattr(key_node, "value", "?"))))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            check_duplicate_keys(item, source, (*path, str(index)))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# ------------------------------------------------------------------------ types


def nonfinite_number(data: Any, loc: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """``(key path, value)`` of the first NaN or infinite float in the nested dicts and lists of ``data``."""
    if isinstance(data, float) and not math.isfinite(data):
        return loc, str(data)
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = nonfinite_number(value, (*loc, key))
        if found is not None:
            return found
    return None


def _leaf_types(annotation: Any) -> list[Any]:
    """The member types of ``annotation`` with Optional/Union/Annotated unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaf_types(arg)]
    return [annotation]


def _number_kind(annotation: Any) -> str | None:
    """``"an integer"`` or ``"a number"`` when ``annotation`` takes numbers but no booleans, else None."""
    leaves = _leaf_types(annotation)
    takes_bool = any(
        leaf is bool
        or leaf is Any
        or (typing.get_origin(leaf) is Literal and any(isinstance(arg, bool) for arg in typing.get_args(leaf)))
        for leaf in leaves
    )
    if takes_bool:
        return None
    if float in leaves:
        return "a number"
    if int in leaves:
        return "an integer"
    return None


def check_not_bool_for_number(annotation: Any, value: Any) -> None:
    """Raise ``ValueError`` when ``value`` is a boolean and ``annotation`` is a number type.

    pydantic's lax mode reads ``true`` as 1 for an ``int`` or ``float`` field, which turns
    a typo such as ``--set num_steps=true`` into a silent one-step run.
    """
    if isinstance(value, bool):
        kind = _number_kind(annotation)
        if kind is not None:
            raise ValueError(f"expected {kind}, not a boolean ({str(value).lower()})")


@functools.cache
def _trl_field_types(trl_class: type) -> dict[str, Any]:
    return typing.get_type_hints(trl_class)


@functools.cache
def _adapter(annotation: Any):
    """A lax pydantic validator for ``annotation``, or None for types pydantic cannot check."""
    from pydantic import ConfigDict, TypeAdapter
    from pydantic.errors import PydanticSchemaGenerationError

    try:
        # Numbers are accepted for string fields: TRL itself would take a run_name of 2024.
        return TypeAdapter(annotation, config=ConfigDict(coerce_numbers_to_str=True, allow_inf_nan=False))
    except (PydanticSchemaGenerationError, TypeError):  # e.g. accelerate's ParallelismConfig
        return None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)  # transformers.trainer_utils.SchedulerType -> SchedulerType


def _takes_single_string_for_list(annotation: Any, value: Any) -> bool:
    # TRL wraps a single string into a list for some list[str] fields (e.g. DPOConfig.loss_type).
    return isinstance(value, str) and any(
        typing.get_origin(leaf) is list and typing.get_args(leaf) in ((str,), ()) for leaf in _leaf_types(annotation)
    )


# Ranges of TRL (transformers) config fields that their types do not state, as (lowest, highest) allowed,
# None for no bound: transformers checks some only once the trainer starts (warmup_steps), others never
# (gradient_accumulation_steps: 0 divides by zero), and seeds must fit numpy's 32 bits.
TRL_FIELD_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "gradient_accumulation_steps": (1, None),
    "per_device_eval_batch_size": (1, None),
    "eval_accumulation_steps": (1, None),
    "warmup_steps": (0, None),
    "weight_decay": (0, None),
    "max_grad_norm": (0, None),
    "adam_epsilon": (0, None),
    "adam_beta1": (0, 1),
    "adam_beta2": (0, 1),
    "dataloader_num_workers": (0, None),
    "save_total_limit": (0, None),
    "seed": (0, 2**32 - 1),
    "data_seed": (0, 2**32 - 1),
}


def _check_bounds(key: str, number: Any, value: Any) -> None:
    """``number`` (``value`` as validated) within :data:`TRL_FIELD_BOUNDS`; the message shows ``value``."""
    lowest, highest = TRL_FIELD_BOUNDS.get(key, (None, None))
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        return
    if lowest is not None and number < lowest:
        raise ValueError(f"{value} is too small: it must be at least {lowest}")
    if highest is not None and number > highest:
        raise ValueError(f"{value} is too large: it must be at most {highest}")


def _check_enum_name(annotation: Any, value: Any) -> None:
    """A string for a field typed ``SomeEnum | str`` (transformers' scheduler, optimizer, strategies) must be
    one of the enum's values: transformers converts it with ``SomeEnum(value)`` when the trainer starts."""
    enums = [leaf for leaf in _leaf_types(annotation) if isinstance(leaf, type) and issubclass(leaf, enum.Enum)]
    if not enums or not isinstance(value, str) or str not in _leaf_types(annotation):
        return
    names = [str(member.value) for enum_type in enums for member in enum_type]
    if value not in names:
        raise ValueError(f"unknown value {value!r}{close_match(value, names)}; one of: {', '.join(names)}")


def checked_trl_value(trl_class: type, key: str, value: Any) -> Any:
    """``value`` checked against the type of ``trl_class.<key>``; raises ``ValueError`` if it does not fit.

    Returns the value to pass on: unchanged, except that a numeric string for a number
    field (YAML reads ``1e-2`` as a string) becomes the number.
    """
    from pydantic import ValidationError

    annotation = _trl_field_types(trl_class).get(key, Any)
    where = f"{trl_class.__name__}.{key} takes {_type_name(annotation)}"
    try:
        check_not_bool_for_number(annotation, value)
    except ValueError as error:
        raise ValueError(f"{error}; {where}") from None
    adapter = _adapter(annotation)
    if adapter is None or _takes_single_string_for_list(annotation, value):
        return value
    try:
        validated = adapter.validate_python(value)
    except ValidationError as error:
        raise ValueError(f"{error.errors(include_url=False)[0]['msg']}; {where}") from None
    _check_enum_name(annotation, value)
    _check_bounds(key, validated, value)
    if isinstance(value, str) and isinstance(validated, (int, float)) and not isinstance(validated, bool):
        return validated
    return value


# ------------------------------------------------------------------------ loss_kwargs


def checked_loss_kwargs(fn: Any, loss: str, kwargs: dict[str, Any], set_by_flux: dict[str, str]) -> dict[str, Any]:
    """``kwargs`` (``algorithm.loss_kwargs``) checked against the signature of the loss function ``fn``.

    Every key must be a keyword argument of ``fn`` after its first (the batch) and not one
    Flux passes itself (``set_by_flux``: argument -> the key that sets it); a value must
    fit the argument's annotation, when it has one pydantic can check. A loss taking
    ``**kwargs`` accepts any key. Raises ``ValueError`` with a ``loc`` attribute (the key);
    returns the values to pass (numeric strings such as YAML's ``5e-2`` as numbers).
    """
    from pydantic import ValidationError

    parameters = list(inspect.signature(fn).parameters.values())[1:]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    named = {p.name: p for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    own = [name for name in named if name not in set_by_flux]
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation only importable for type checkers
        hints = {}
    checked = {}
    for key, value in kwargs.items():
        if key in set_by_flux:
            raise LossArgumentError(key, f"is set by Flux: use {set_by_flux[key]}")
        if key not in named and not takes_any:
            takes = f"it takes {', '.join(own)}" if own else "it takes no loss_kwargs"
            hint = close_match(key, own)
            flux_key = difflib.get_close_matches(key, list(set_by_flux), n=1)
            if not hint and flux_key:
                hint = f" (did you mean {set_by_flux[flux_key[0]]}?)"
            raise LossArgumentError(key, f"not an argument of loss '{loss}'{hint}; {takes}")
        annotation = hints.get(key, Any)
        try:
            check_not_bool_for_number(annotation, value)
            adapter = _adapter(annotation)
            validated = adapter.validate_python(value) if adapter is not None else value
        except ValidationError as error:
            message = error.errors(include_url=False)[0]["msg"]
            raise LossArgumentError(key, f"{message}; loss '{loss}' takes {key}: {_type_name(annotation)}") from None
        except ValueError as error:
            raise LossArgumentError(key, f"{error}; loss '{loss}' takes {key}: {_type_name(annotation)}") from None
        numeric_string = isinstance(value, str) and isinstance(validated, (int, float))
        checked[key] = validated if numeric_string and not isinstance(validated, bool) else value
    return checked


class LossArgumentError(ValueError):
    """A bad ``algorithm.loss_kwargs`` entry; ``key`` is the entry's key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
