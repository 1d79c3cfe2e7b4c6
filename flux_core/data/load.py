"""Load training data for a ``data_format``: the data pipeline, one stage per module.

:func:`load_data` turns any supported source into an Arrow-backed ``datasets.Dataset``
in the shape the algorithm trains on, in this order:

1. read the source (:mod:`flux_core.data.sources`) and map the dataset's own column names
   onto the format's (``columns``);
2. detect which shape the rows are in (:mod:`flux_core.data.shapes`);
3. normalise that shape into the format's canonical columns (:mod:`flux_core.data.normalise`);
4. check every row in batches and warn about data that would train badly
   (:mod:`flux_core.data.checks`); a normaliser's input rows are checked before it runs;
5. split off eval rows (:mod:`flux_core.data.split`, in :func:`load_training_data`).

The format comes from the registry (:func:`flux_core.registry.get_data_format`). A bad row
stops the run before any model loads, with one error naming the file and line (or row)
and the key; data that would train badly (identical pairs, empty completions, fewer rows
than a batch) is reported in one warning line each. Rows are never held as Python
objects all at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from flux_core.config import DataSource
from flux_core.data.checks import check, check_rows
from flux_core.data.formats import DataFormat
from flux_core.data.normalise import normalise
from flux_core.data.shapes import detect_shape, gives_preference_pairs
from flux_core.data.sources import read_source
from flux_core.data.split import split_off_eval
from flux_core.errors import DataError
from flux_core.registry import get_data_format, import_attribute


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
    fmt = get_data_format(data_format)
    columns = columns or {}
    text_columns = [columns.get(key, key) for key in fmt.text_keys + fmt.alternative_keys]
    dataset, where = read_source(source, name=name, split=split, text_columns=text_columns)
    if len(dataset) == 0:
        raise DataError(f"{where.name}: no examples found (expected {fmt.description})")
    dataset = _map_columns(dataset, columns, fmt, what, where.name)
    convert = None
    if gives_preference_pairs(dataset, fmt):  # e.g. KTO given pairs: load them as pairs, then convert
        convert, fmt = fmt.from_preferences, get_data_format("preferences")
    elif fmt.normalize:  # a plugin's format with shapes of its own detects, checks and normalises them
        return import_attribute(fmt.normalize)(dataset, where, num_proc)
    shape = detect_shape(dataset, fmt, where)
    if not shape.canonical:  # a normaliser assumes well-formed values: check the rows it reads, as the user wrote them
        check_rows(dataset, shape.kinds, where, shape.needs, allow_empty=shape.allow_empty)
    dataset, shape = normalise(dataset, shape, where, num_proc)
    check(dataset, fmt, shape, where)
    return import_attribute(convert)(dataset, num_proc) if convert else dataset


def _map_columns(dataset: Any, columns: Mapping[str, str], fmt: DataFormat, what: str, name: str) -> Any:
    """The end of reading: rename the dataset's own columns onto ``fmt``'s (``columns``: Flux name -> column)."""
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


def load_training_data(config: Any, data_format: str, train: Any = None, eval_data: Any = None) -> tuple[Any, Any]:
    """The train and (optional) eval datasets of a run.

    ``train`` and ``eval_data`` are what ``fit`` was given (any source, or the
    ``{path, name, split, columns}`` long form), else ``config.data`` and
    ``config.eval_data``. An eval source without a path reads another split of the
    training source; ``config.eval_fraction`` carves eval rows off the training data.
    """
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
    if isinstance(value, (str, Path)) or (isinstance(value, dict) and set(value) <= set(DataSource.model_fields)):
        return DataSource.model_validate(value)
    return value


def _load_source(source: Any, data_format: str, what: str, options: dict[str, Any]) -> Any:
    """Load a ``DataSource``, a ``(source, {name, split, columns})`` pair, or a plain source."""
    if isinstance(source, DataSource):
        source = (source.path, source.model_dump(exclude={"path"}))
    if not isinstance(source, tuple):
        source = (source, {})
    data, spec = source
    return load_data(data, data_format, **spec, **options, what=what)
