"""Load training data for a ``data_format``: the data pipeline, one stage per module.

:func:`load_data` turns any supported source into an Arrow-backed ``datasets.Dataset``
in the shape the algorithm trains on, in this order:

1. read the source (:mod:`flux_core.data.sources`) and map the dataset's own column names
   onto the format's (``columns``);
2. bring chat messages to ``{"role", "content"}`` (:mod:`flux_core.data.messages`: ShareGPT's
   ``from``/``value``, role names, content parts, tool calls; ``message_keys``, ``roles``), then
   detect which shape the rows are in (:mod:`flux_core.data.shapes`): a practitioners' layout
   (ShareGPT, Alpaca) first, then the format's own;
3. normalise that shape into the format's canonical columns (:mod:`flux_core.data.normalise`);
4. check every row in batches and warn about data that would train badly
   (:mod:`flux_core.data.checks`); a normaliser's input rows are checked before it runs;
5. split off eval rows (:mod:`flux_core.data.split`, in :func:`load_training_data`).

A list of sources (``data: [a.jsonl, {path: b.jsonl, weight: 2}]``) is a mixture: steps 1-4
run for each source on its own, then :mod:`flux_core.data.mixture` cuts, reconciles and
mixes them, before step 5.

The format comes from the registry (:func:`flux_core.registry.get_data_format`). A bad row
stops the run before any model loads, with one error naming the file and line (or row)
and the key; data that would train badly (identical pairs, empty completions, fewer rows
than a batch, columns training never reads) is reported in one warning line each. Rows are never held as Python
objects all at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from flux_core.config import DataSource, FluxConfig, mixture_problem
from flux_core.data.checks import check, check_rows, warn_unused_columns
from flux_core.data.formats import DataFormat
from flux_core.data.messages import MessageStyle, to_chat_messages
from flux_core.data.mixture import LoadedSource, in_context, mix, source_label, take_rows
from flux_core.data.normalise import normalise, normalise_layout
from flux_core.data.shapes import LAYOUT_COLUMNS, detect_shape, gives_preference_pairs
from flux_core.data.sources import read_source
from flux_core.data.split import split_off_eval
from flux_core.errors import DataError
from flux_core.registry import get_data_format, get_registry, import_attribute


def load_data(
    source: Any,
    data_format: str,
    *,
    name: str | None = None,
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    message_keys: Mapping[str, str] | None = None,
    roles: Mapping[str, list[str]] | None = None,
    num_proc: int | None = None,
    what: str = "data",
    return_shape: bool = False,
) -> Any:
    """Read ``source``, map ``columns`` (Flux name -> dataset column), normalise and check it.

    Returns a ``datasets.Dataset`` whose text columns are all strings or all chat
    message lists, with every extra column kept (one warning names those training
    does not use). ``message_keys`` and ``roles`` say how the data writes chat messages
    (:class:`flux_core.data.messages.MessageStyle`). ``what`` names the config key in
    errors about ``columns`` (``data`` or ``eval_data``). ``return_shape``: return
    ``(dataset, shape name)`` instead, the name of the shape detected (``None`` for a
    plugin's format that detects its shapes itself), for ``flux data``.
    """
    fmt = get_data_format(data_format)
    columns = columns or {}
    text_columns = [columns.get(key, key) for key in fmt.text_keys + fmt.alternative_keys]
    dataset, where = read_source(source, name=name, split=split, text_columns=text_columns, what=what)
    if len(dataset) == 0:
        raise DataError(f"{where.name}: no examples found (expected {fmt.description})")
    dataset = _map_columns(dataset, columns, fmt, what, where.name)
    trained, convert = fmt, None
    if gives_preference_pairs(dataset, fmt):  # e.g. KTO given pairs: load them as pairs, then convert
        convert, fmt = fmt.from_preferences, get_data_format("preferences")
    dataset = to_chat_messages(dataset, fmt, MessageStyle.of(message_keys, roles, what), where, num_proc)
    dataset, detected = normalise_layout(dataset, fmt, where, num_proc)  # ShareGPT, Alpaca -> the format's columns
    if fmt.normalize:  # a plugin's format with shapes of its own detects, checks and normalises them
        dataset = import_attribute(fmt.normalize)(dataset, where, num_proc)
    else:
        shape = detect_shape(dataset, fmt, where)
        detected = detected or shape.name
        if not shape.canonical:  # a normaliser assumes well-formed values: check the rows it reads as written
            check_rows(dataset, shape.kinds, where, shape.needs, allow_empty=shape.allow_empty)
        dataset, shape = normalise(dataset, shape, where, num_proc)
        check(dataset, fmt, shape, where)
    if convert:
        dataset = import_attribute(convert)(dataset, num_proc)
    warn_unused_columns(dataset, trained, detected, _trained_by(trained), where)
    if convert:
        detected = f"{detected}, converted to {data_format}"
    return (dataset, detected) if return_shape else dataset


def _trained_by(fmt: DataFormat) -> str:
    """The algorithms that train on ``fmt``, for messages (``dpo or reward_model``)."""
    names = sorted(name for name, algorithm in get_registry().algorithms.items() if algorithm.data_format == fmt.name)
    return " or ".join(names) or f"{fmt.name} data"


def _map_columns(dataset: Any, columns: Mapping[str, str], fmt: DataFormat, what: str, name: str) -> Any:
    """The end of reading: rename the dataset's own columns onto ``fmt``'s (``columns``: Flux name -> column)."""
    valid = fmt.text_keys + fmt.alternative_keys + fmt.label_keys + LAYOUT_COLUMNS
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
    train = _as_data_source(train if train is not None else config.data, "data")
    if train is None:
        raise DataError("no training data: give fit(prompts=...), --data, or a data: key in the config")
    evaluation = _as_data_source(eval_data if eval_data is not None else config.eval_data, "eval_data")
    options = {"num_proc": config.dataset_num_proc}
    train_dataset = _load_source(train, data_format, "data", options, seed=config.seed)
    if isinstance(evaluation, DataSource) and evaluation.path is None:  # another split of the training source
        if isinstance(train, list):
            raise DataError("eval_data.path: required when data is a list of sources")
        if isinstance(train, DataSource):  # its path, name and columns; the eval source's own split and rows
            evaluation = train.model_copy(update={**evaluation.model_dump(exclude_unset=True), "rows": evaluation.rows})
        else:
            evaluation = (train, evaluation)
    eval_dataset = None
    if evaluation is not None:
        eval_dataset = _load_source(evaluation, data_format, "eval_data", options, seed=config.seed)
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


def load_source(
    source: Any, data_format: str, *, num_proc: int | None = None, seed: int | None = None, return_shape: bool = False
) -> Any:
    """One source in any form ``fit`` takes (a path, the ``{path, name, split, columns}`` long form, a
    list of them mixed by ``seed``, a dataset, a list of dicts), loaded as :func:`load_training_data`
    loads the training data, without splitting off eval rows (``flux data`` shows all of it)."""
    options = {"num_proc": num_proc, "return_shape": return_shape}
    return _load_source(_as_data_source(source, "data"), data_format, "data", options, seed=seed)


def training_data_identity(dataset: Any, source: Any) -> dict[str, str]:
    """What a checkpoint records of its training data, for resuming to refuse other data.

    ``fingerprint`` combines ``datasets``' fingerprint of the loaded training ``dataset``
    (content-true for local files, see :mod:`flux_core.data.sources`; it also follows the
    column mapping, the normalising, the mixing and the eval split) with where each source
    lives; ``sources`` names them for messages. ``source`` is what the data was loaded from.
    """
    from datasets.fingerprint import Hasher

    sources = _as_data_source(source, "data")
    sources = sources if isinstance(sources, list) else [sources]
    places, names = [], []
    for item in sources:
        if isinstance(item, DataSource):
            local = Path(item.path).expanduser()
            places.append(str(local.resolve()) if local.exists() else item.path)
            mixing = [f"{key} {value:g}" for key, value in (("weight", item.weight), ("rows", item.rows)) if value]
            names.append(item.path + (f" ({', '.join(mixing)})" if mixing else ""))
        else:
            places.append(None)
            names.append(f"a {type(item).__name__}" if not isinstance(item, list) else "a list of rows")
    return {"fingerprint": Hasher.hash([dataset._fingerprint, places]), "sources": " + ".join(names)}


# The DataSource keys that say how to mix sources, not how to read one.
MIXING_KEYS = ("weight", "rows")


def _as_data_source(value: Any, what: str) -> Any:
    """A ``DataSource`` for path-like values and long-form dicts, a list of them for a list of sources
    (a mixture); datasets and lists of rows as given."""
    if _is_source(value):
        return _validated(value, what)
    if isinstance(value, list) and value and all(_is_source(item) for item in value):
        sources = [_validated(item, f"{what}[{index}]") for index, item in enumerate(value)]
        problem = mixture_problem(sources)
        if problem is not None:
            key = what + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem[0])
            raise DataError(f"{key}: {problem[1]}")
        return sources
    return value


def _is_source(value: Any) -> bool:
    """A path, a ``DataSource``, or its long form (a dict of nothing but its keys: a row never is one)."""
    if isinstance(value, (str, Path, DataSource)):
        return True
    return isinstance(value, dict) and set(value) <= set(DataSource.model_fields)


def _validated(value: Any, what: str) -> DataSource:
    from pydantic import ValidationError

    if isinstance(value, DataSource):
        return value
    try:
        return DataSource.model_validate(value)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        key = ".".join([what, *(str(part) for part in first["loc"])])
        raise DataError(f"{key}: {first['msg'].removeprefix('Value error, ')}") from None


def _load_source(source: Any, data_format: str, what: str, options: dict[str, Any], seed: int | None = None) -> Any:
    """Load a ``DataSource``, a list of them (a mixture, mixed by ``seed``; default: the config's
    default seed), a ``(source, DataSource without a path)`` pair, or a plain source."""
    if isinstance(source, list) and source and all(isinstance(item, DataSource) for item in source):
        return _load_mixture(source, data_format, what, options, seed)
    rows = None
    if isinstance(source, DataSource):
        source, rows = (source.path, _read_options(source)), source.rows
    elif isinstance(source, tuple):
        source, rows = (source[0], _read_options(source[1])), source[1].rows
    else:
        source = (source, {})
    data, spec = source
    loaded = load_data(data, data_format, **spec, **options, what=what)
    if rows is None:
        return loaded
    if isinstance(loaded, tuple):  # (dataset, shape name)
        return take_rows(loaded[0], rows, what), loaded[1]
    return take_rows(loaded, rows, what)


def _read_options(source: DataSource) -> dict[str, Any]:
    """How to read ``source``: ``load_data``'s keyword arguments."""
    return source.model_dump(exclude={"path", *MIXING_KEYS})


def _load_mixture(sources: list[DataSource], data_format: str, what: str, options: dict[str, Any], seed: Any) -> Any:
    """Each source through :func:`load_data`, then mixed (:mod:`flux_core.data.mixture`); errors name the source."""
    loaded, shapes = [], []
    for index, source in enumerate(sources):
        key, label = f"{what}[{index}]", source_label(what, index, source.path)
        try:
            dataset = load_data(source.path, data_format, **_read_options(source), **options, what=key)
        except DataError as error:
            raise in_context(error, key, source.path) from None
        if isinstance(dataset, tuple):  # (dataset, shape name)
            dataset, shape = dataset
            shapes.append(f"{key}: {shape}")
        loaded.append(LoadedSource(dataset, label, source.weight, source.rows))
        loaded[-1].set_aside()  # its mapped pages leave memory while the next source loads
    fmt = get_data_format(data_format)
    seed = FluxConfig.model_fields["seed"].default if seed is None else seed
    mixed = mix(loaded, fmt, seed, what)
    return (mixed, "; ".join(shapes)) if options.get("return_shape") else mixed
