"""Load, normalise and check training data for each ``data_format``.

:func:`load_data` turns any supported source (see :mod:`flux_core.data.sources`) into
an Arrow-backed ``datasets.Dataset`` in the shape the algorithm trains on: the
dataset's own column names are mapped onto Flux's (``columns``), the shapes public
datasets ship in are normalised (:mod:`flux_core.data.shapes`), and every row is
checked in batches (:mod:`flux_core.data.checks`). A bad row stops the run before any
model loads, with one error naming the file and line (or row) and the key; data that
would train badly (identical pairs, empty completions, fewer rows than a batch) is
reported in one warning line each. Rows are never held as Python objects all at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from flux_core.data.checks import CHAT, check_rows, column_kind, contents, rendered, text_kind
from flux_core.errors import DataError


@dataclass(frozen=True)
class DataFormat:
    """The columns one data format trains on; other columns are kept as extra columns."""

    name: str
    text_keys: tuple[str, ...]
    description: str
    # Columns that can stand in for the text keys (normalised into them), for column mapping.
    alternative_keys: tuple[str, ...] = ()
    # Boolean columns every row needs (a plugin's format, e.g. KTO's ``label``).
    label_keys: tuple[str, ...] = ()
    # "module:attribute" of ``fn(pairs, num_proc) -> dataset``: preference pairs (checked and normalised
    # as the "preferences" format) given instead of this format's keys are converted by it.
    from_preferences: str | None = None
    # "module:attribute" of ``fn(dataset, where, num_proc) -> dataset`` for a format with several shapes
    # (e.g. SFT's messages, prompt + completion, or text): it checks the rows with flux_core.data.checks
    # and normalises them, instead of the generic checks of text_keys and label_keys.
    normalize: str | None = None


DATA_FORMATS = {
    "preferences": DataFormat(
        "preferences",
        ("prompt", "chosen", "rejected"),
        "preference pairs: prompt, chosen, rejected (strings or chat message lists; "
        "prompt may be implicit in chosen and rejected)",
    ),
    "prompts": DataFormat(
        "prompts",
        ("prompt",),
        "prompts (string or chat message list, or a messages conversation); extra keys reach reward functions",
        alternative_keys=("messages",),
    ),
}


def register_data_format(fmt: DataFormat, plugin: str) -> None:
    """Add a plugin's format (``Algorithm.data_format_spec``) to :data:`DATA_FORMATS`; a different
    format under a taken name is an error."""
    known = DATA_FORMATS.get(fmt.name)
    if known is not None and known != fmt:
        raise DataError(f"plugin '{plugin}' defines data_format '{fmt.name}', which is already defined differently")
    DATA_FORMATS[fmt.name] = fmt


def get_data_format(name: str) -> DataFormat:
    if name not in DATA_FORMATS:
        from flux_core.registry import get_registry

        get_registry()  # registering the algorithms registers their plugins' formats
    try:
        return DATA_FORMATS[name]
    except KeyError:
        raise DataError(f"unknown data_format '{name}'; use one of: {', '.join(DATA_FORMATS)}") from None


def load_data(
    source: Any,
    data_format: str,
    *,
    name: str | None = None,
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    num_proc: int | None = None,
    what: str = "data",
) -> Any:
    """Read ``source``, map ``columns`` (Flux name -> dataset column), normalise and check it.

    Returns a ``datasets.Dataset`` whose text columns are all strings or all chat
    message lists, with every extra column kept. ``what`` names the config key in
    errors about ``columns`` (``data`` or ``eval_data``).
    """
    from flux_core.data.sources import read_source

    fmt = get_data_format(data_format)
    columns = columns or {}
    text_columns = [columns.get(key, key) for key in fmt.text_keys + fmt.alternative_keys]
    dataset, where = read_source(source, name=name, split=split, text_columns=text_columns)
    if len(dataset) == 0:
        raise DataError(f"{where.name}: no examples found (expected {fmt.description})")
    dataset = _map_columns(dataset, columns, fmt, what, where.name)
    if fmt.name == "preferences":
        return _load_preferences(dataset, fmt, where, num_proc)
    if fmt.name == "prompts":
        return _load_prompts(dataset, fmt, where, num_proc)
    return _load_plugin_format(dataset, fmt, where, num_proc)


def _map_columns(dataset: Any, columns: Mapping[str, str], fmt: DataFormat, what: str, name: str) -> Any:
    valid = fmt.text_keys + fmt.alternative_keys + fmt.label_keys
    renames = {}
    for flux_name, dataset_name in columns.items():
        if flux_name not in valid:
            raise DataError(f"{what}.columns.{flux_name}: not a {fmt.name} column; map one of: {', '.join(valid)}")
        if dataset_name not in dataset.column_names:
            raise DataError(
                f"{what}.columns.{flux_name}: {name} has no column '{dataset_name}' "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        if dataset_name != flux_name:
            renames[dataset_name] = flux_name
    clashes = [flux for flux in renames.values() if flux in dataset.column_names and flux not in renames]
    if clashes:
        raise DataError(
            f"{what}.columns.{clashes[0]}: {name} already has a '{clashes[0]}' column; "
            "map it away first or choose the other one"
        )
    return dataset.rename_columns(renames) if renames else dataset


def _load_preferences(dataset: Any, fmt: DataFormat, where: Any, num_proc: int | None) -> Any:
    from flux_core.data.shapes import normalize_preferences, preferences_need_normalising

    needs = ", ".join(fmt.text_keys)
    present = [key for key in fmt.text_keys if key in dataset.column_names or key != "prompt"]
    kinds = {key: text_kind(dataset, key, where, needs) for key in present}
    completions = ("chosen", "rejected")
    if preferences_need_normalising(kinds, where):  # check the rows the map reads first
        check_rows(dataset, kinds, where, needs, allow_empty=completions)
        dataset = normalize_preferences(dataset, kinds, where, num_proc)
        kinds = {key: column_kind(dataset, key) for key in fmt.text_keys}
    counts = check_rows(dataset, kinds, where, needs, allow_empty=completions, counters=_pair_counters(kinds["chosen"]))
    total = len(dataset)
    if counts["identical"]:
        _warn(
            f"{where.name}: {counts['identical']} of {total} pairs have chosen == rejected; "
            "they carry no preference signal"
        )
    if counts["empty"]:
        _warn(f"{where.name}: {counts['empty']} of {total} pairs have an empty chosen or rejected completion")
    return dataset


def _load_prompts(dataset: Any, fmt: DataFormat, where: Any, num_proc: int | None) -> Any:
    from flux_core.data.shapes import prompts_from_messages

    needs = "prompt (or messages)"
    if "prompt" not in dataset.column_names and "messages" in dataset.column_names:
        if text_kind(dataset, "messages", where, needs) != CHAT:
            raise DataError(f"{where(0)}: 'messages' must be a list of chat messages")
        check_rows(dataset, {"messages": CHAT}, where, needs)
        dataset = prompts_from_messages(dataset, where, num_proc)
    check_rows(dataset, {"prompt": text_kind(dataset, "prompt", where, needs)}, where, needs)
    return dataset


def _load_plugin_format(dataset: Any, fmt: DataFormat, where: Any, num_proc: int | None) -> Any:
    """A format core has no normalisation for: its text keys must be non-empty strings (or chat
    message lists, the same kind in every key), its label keys booleans. Preference pairs given
    instead go through the "preferences" checks, then ``fmt.from_preferences``."""
    from flux_core.data.checks import check_labels, describe_kind
    from flux_core.registry import _import_attribute

    own = set(fmt.text_keys + fmt.label_keys) - {"prompt"}
    columns = set(dataset.column_names)
    if fmt.from_preferences and {"chosen", "rejected"} <= columns and not own & columns:
        pairs = _load_preferences(dataset, DATA_FORMATS["preferences"], where, num_proc)
        return _import_attribute(fmt.from_preferences)(pairs, num_proc)
    if fmt.normalize:
        return _import_attribute(fmt.normalize)(dataset, where, num_proc)
    needs = ", ".join(fmt.text_keys + fmt.label_keys)
    kinds = {key: text_kind(dataset, key, where, needs) for key in fmt.text_keys}
    first = fmt.text_keys[0]
    for key, kind in kinds.items():
        if kind != kinds[first]:
            raise DataError(
                f"{where(0)}: '{key}' is {describe_kind(kind)} but '{first}' is {describe_kind(kinds[first])}; "
                "use one kind of value for all of them"
            )
    check_rows(dataset, kinds, where, needs)
    for key in fmt.label_keys:
        check_labels(dataset, key, where, needs)
    return dataset


def _pair_counters(kind: str) -> dict[str, Any]:
    """Row predicates for the pair warnings: identical completions, an empty completion."""
    import pyarrow.compute as pc

    def identical(batch):
        return pc.equal(rendered(batch.column("chosen"), kind), rendered(batch.column("rejected"), kind))

    def empty(batch):
        return pc.or_(*(_is_blank(contents(batch.column(key), kind)) for key in ("chosen", "rejected")))

    return {"identical": identical, "empty": empty}


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)


def _is_blank(values: Any) -> Any:
    import pyarrow.compute as pc

    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)


def split_off_eval(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Carve ``fraction`` of ``dataset`` off as eval data, the same rows for the same ``seed``."""
    if not 0 < fraction < 1:
        raise DataError(f"eval_fraction must be between 0 and 1, not {fraction}")
    held_out = max(1, round(len(dataset) * fraction))
    if held_out >= len(dataset):
        raise DataError(f"eval_fraction {fraction} leaves no training rows out of {len(dataset)}")
    parts = dataset.train_test_split(test_size=held_out, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def load_training_data(config: Any, data_format: str, train: Any = None, eval_data: Any = None) -> tuple[Any, Any]:
    """The train and (optional) eval datasets of a run.

    ``train`` and ``eval_data`` are what ``fit`` was given (any source, or the
    ``{path, name, split, columns}`` long form), else ``config.data`` and
    ``config.eval_data``. An eval source without a path reads another split of the
    training source; ``config.eval_fraction`` carves eval rows off the training data.
    """
    from flux_core.config import DataSource

    train = _as_data_source(train if train is not None else config.data)
    if train is None:
        raise DataError("no training data: give fit(prompts=...), --data, or a data: key in the config")
    evaluation = _as_data_source(eval_data if eval_data is not None else config.eval_data)
    options = {"num_proc": config.dataset_num_proc}
    train_dataset = _load_source(train, data_format, "data", options)
    if isinstance(evaluation, DataSource) and evaluation.path is None:  # another split of the training source
        if isinstance(train, DataSource):
            evaluation = train.model_copy(update=evaluation.model_dump(exclude_unset=True))
        else:
            evaluation = (train, evaluation.model_dump(exclude={"path"}))
    eval_dataset = _load_source(evaluation, data_format, "eval_data", options) if evaluation is not None else None
    if evaluation is None and config.eval_fraction is not None:
        train_dataset, eval_dataset = split_off_eval(train_dataset, config.eval_fraction, config.seed)
    if config.batch_size > len(train_dataset):
        warnings.warn(
            f"batch_size {config.batch_size} is larger than the training data ({len(train_dataset)} rows): "
            "every step repeats examples",
            UserWarning,
            stacklevel=2,
        )
    return train_dataset, eval_dataset


def _as_data_source(value: Any) -> Any:
    """A ``DataSource`` for path-like values and long-form dicts; datasets and lists as given."""
    from flux_core.config import DataSource

    if isinstance(value, (str, Path)) or (isinstance(value, dict) and set(value) <= set(DataSource.model_fields)):
        return DataSource.model_validate(value)
    return value


def _load_source(source: Any, data_format: str, what: str, options: dict[str, Any]) -> Any:
    """Load a ``DataSource``, a ``(source, {name, split, columns})`` pair, or a plain source."""
    from flux_core.config import DataSource

    if isinstance(source, DataSource):
        source = (source.path, source.model_dump(exclude={"path"}))
    if not isinstance(source, tuple):
        source = (source, {})
    data, spec = source
    return load_data(data, data_format, **spec, **options, what=what)
