"""Checks behind FluxConfig's one-line errors that pydantic alone does not make.

- :func:`read_config_text` / :func:`parse_yaml`: a config file must be UTF-8 and valid
  YAML without duplicate keys (PyYAML silently keeps the last of two equal keys).
- :func:`check_not_bool_for_number`: ``true``/``false`` is never a number (pydantic's lax
  mode would turn ``num_steps: true`` into 1), while numeric strings such as YAML's
  ``5e-4`` still convert as before.
- :func:`checked_trl_value`: a ``trl:`` value must fit the type of its field in the TRL
  config dataclass, so a bad value fails when the config loads, not in the optimizer.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from flux_core.errors import ConfigError

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
        return TypeAdapter(annotation, config=ConfigDict(coerce_numbers_to_str=True))
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
    if isinstance(value, str) and isinstance(validated, (int, float)) and not isinstance(validated, bool):
        return validated
    return value
