"""``flux data``: the first examples as the algorithm will train on them, and token lengths over the data.

:func:`preview_data` runs the data pipeline (:mod:`flux_core.data.load`) on a run's data,
keeping the shape it detected and the warnings it raised, loads only the tokenizer, and
tokenizes the rows with the algorithm's view (``Algorithm.preview``, else
:func:`flux_core.data.views.default_view`): TRL's own dataset preparation, so the tokens
marked as trained are those the trainer's loss reads. Lengths, rows longer than
``max_length`` and rows the trainer drops are counted over the whole data, or over a random
sample of :data:`SAMPLE_ROWS` rows of larger data.

:func:`render_terminal` shows it with the trained tokens in colour (or bracketed, without a
terminal or with ``NO_COLOR``), like Axolotl's ``preprocess --debug``; :func:`render_json`
writes one JSON object per example and a last ``{"summary": ...}`` object.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, TextIO

from flux_core.data.formats import column_kind
from flux_core.data.views import TrainingView, input_ids_column, trained_column
from flux_core.errors import DataError, FluxError

NUM_EXAMPLES = 3
SAMPLE_ROWS = 10_000  # lengths of larger data are counted over a random sample of this many rows
PERCENTILES = (50, 90, 99)
FIELD_CHARS = 300  # the terminal view shortens longer fields (--json has all of them)

# What a token is to the loss, in rendered segments.
TRAINED, CONTEXT, CUT = "trained", "context", "cut"
COLOURS = {TRAINED: "\x1b[32m", CONTEXT: "\x1b[2m", CUT: "\x1b[31m"}  # green, dim, red
RESET = "\x1b[0m"
BRACKETS = {TRAINED: ("[[", "]]"), CONTEXT: ("", ""), CUT: ("<<", ">>")}


@dataclass(frozen=True)
class Sequence:
    """One tokenized sequence of an example, as text segments: ``(kind, text)``, kind ``trained``,
    ``context`` (the prompt and other masked tokens) or ``cut`` (past ``max_length``)."""

    name: str
    segments: tuple[tuple[str, str], ...]
    tokens: int
    trained_tokens: int
    cut_tokens: int

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.segments)

    @property
    def trained(self) -> list[str]:
        return [text for kind, text in self.segments if kind == TRAINED]


@dataclass(frozen=True)
class Example:
    """One row: its normalised fields, its sequences, and why the trainer drops it ("" when it keeps it)."""

    row: int
    fields: dict[str, Any]
    sequences: tuple[Sequence, ...]
    dropped: str


@dataclass(frozen=True)
class Summary:
    """Token lengths over the data (or a sample of it), and what ``max_length`` does to it."""

    rows: int
    sampled_rows: int
    lengths: dict[str, dict[str, int]]  # sequence -> p50, p90, p99, max
    max_length: int | None
    cuts: bool  # whether the trainer cuts sequences at max_length (else it drops or keeps them whole)
    longer: int  # rows (of the sample) with a sequence longer than max_length
    dropped: dict[str, int]  # why -> rows (of the sample) the trainer drops


@dataclass(frozen=True)
class Preview:
    source: str
    algorithm: str
    data_format: str
    shape: str
    examples: tuple[Example, ...]
    summary: Summary
    warnings: tuple[str, ...]
    note: str


def preview_data(config: Any, source: Any, num_examples: int = NUM_EXAMPLES) -> Preview:
    """What ``config``'s algorithm will train on from ``source`` (any source ``fit`` takes): the first
    ``num_examples`` rows, and lengths over all rows. Only the tokenizer is loaded, not the model.
    The warnings loading and tokenizing raise are part of the preview (``Preview.warnings``)."""
    from flux_core.data.load import load_source
    from flux_core.data.rendering import check_template_renders
    from flux_core.modeling import load_tokenizer
    from flux_core.quiet import quiet_libraries
    from flux_core.registry import get_data_format, get_registry

    if source is None:
        raise DataError("no data to show: give --data FILE or a data: key in the config")
    algorithm = get_registry().get_algorithm(config.algorithm.name)
    fmt = get_data_format(algorithm.data_format)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # every warning of this preview, even one seen before
        dataset, shape = load_source(
            source, algorithm.data_format, num_proc=config.dataset_num_proc, seed=config.seed, return_shape=True
        )
        with quiet_libraries():
            tokenizer = load_tokenizer(config.model_path, config.chat_template)  # as the runners load it
            check_template_renders(tokenizer, dataset, config.model_path)  # one line, not a Jinja traceback
            tokenize = algorithm.load_preview()
            sample = _sample(dataset, config.seed)
            view = _checked(tokenize(config, tokenizer, sample), sample, algorithm.name)
            shown = dataset.select(range(min(num_examples, len(dataset))))
            examples_view = view
            if sample is not dataset and len(shown):  # the sample is random rows: tokenize the first ones too
                examples_view = _checked(tokenize(config, tokenizer, shown), shown, algorithm.name)
            stats = _row_stats(view, config.dataset_num_proc)
            keys = fmt.text_keys + fmt.alternative_keys + fmt.label_keys
            examples = tuple(
                _example(row, _ordered(fields, keys), examples_view, tokenizer) for row, fields in enumerate(shown)
            )
    for warning in caught:  # the library warnings a user would have seen anyway
        if not issubclass(warning.category, UserWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return Preview(
        source=_describe_source(source),
        algorithm=algorithm.name,
        data_format=algorithm.data_format,
        shape=_describe_shape(dataset, shape, fmt.text_keys + fmt.alternative_keys),
        examples=examples,
        summary=_summary(stats, view, len(dataset)),
        warnings=tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning))),
        note=view.note,
    )


def _ordered(fields: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A row's fields, the format's own keys first (prompt, chosen, rejected), then the extra columns."""
    return {**{key: fields[key] for key in keys if key in fields}, **fields}


def _sample(dataset: Any, seed: int) -> Any:
    """``dataset``, or a random ``SAMPLE_ROWS`` of its rows (in order) when it is larger."""
    if len(dataset) <= SAMPLE_ROWS:
        return dataset
    import numpy as np

    rows = np.random.default_rng(seed).choice(len(dataset), SAMPLE_ROWS, replace=False)
    return dataset.select(np.sort(rows))


def _checked(view: Any, rows: Any, algorithm: str) -> TrainingView:
    if not isinstance(view, TrainingView) or len(view.dataset) != len(rows):
        got = f"{len(view.dataset)} rows" if isinstance(view, TrainingView) else type(view).__name__
        raise FluxError(
            f"algorithm '{algorithm}': its preview returned {got}; "
            f"it must return a TrainingView with one row per row given ({len(rows)})"
        )
    return view


# ----------------------------------------------------------------- the truncation window and drops


def kept_window(length: int, max_length: int | None, truncation_mode: str | None) -> tuple[int, int]:
    """``[start, end)`` of the tokens a sequence of ``length`` tokens keeps after truncation."""
    if max_length is None or truncation_mode is None or length <= max_length:
        return 0, length
    return (0, max_length) if truncation_mode == "keep_start" else (length - max_length, length)


def drop_reason(
    sequences: list[tuple[list[int], list[int]]], max_length: int | None, truncation_mode: str | None, drops: str
) -> str:
    """Why the trainer drops a row of ``(input_ids, trained)`` sequences (the rule ``drops`` of
    :class:`~flux_core.data.views.TrainingView`), or "" when it keeps it."""
    if max_length is None or drops == "none":
        return ""
    if drops == "too_long":
        longest = max(len(ids) for ids, _ in sequences)
        return f"longer than max_length {max_length} (dropped, not truncated)" if longest > max_length else ""
    for ids, trained in sequences:
        start, end = kept_window(len(ids), max_length, truncation_mode)
        if not any(trained):
            return "no trained token in it"
        if not any(trained[start:end]):
            if truncation_mode == "keep_end":
                return f"no trained token within its last {max_length} tokens (max_length, keep_end)"
            return f"no trained token within max_length {max_length} (the prompt fills it)"
    return ""


def _row_stats(view: TrainingView, num_proc: int | None) -> Any:
    """One row per row of the view: each sequence's length and why the trainer drops the row."""
    rows = len(view.dataset)
    return view.dataset.map(
        _batch_stats,
        batched=True,
        fn_kwargs={"sequences": view.sequences, "rule": (view.max_length, view.truncation_mode, view.drops)},
        remove_columns=view.dataset.column_names,
        num_proc=min(num_proc, rows) if num_proc and rows > 1 else None,
        desc="Counting tokens",
    )


def _batch_stats(batch: dict, sequences: tuple[str, ...], rule: tuple) -> dict:
    columns = [(batch[input_ids_column(name)], batch[trained_column(name)]) for name in sequences]
    stats = {f"{name}_length": [len(ids) for ids in column[0]] for name, column in zip(sequences, columns)}
    rows = len(columns[0][0])
    stats["dropped"] = [
        drop_reason([(ids[row], trained[row]) for ids, trained in columns], *rule) for row in range(rows)
    ]
    return stats


def _summary(stats: Any, view: TrainingView, rows: int) -> Summary:
    import numpy as np

    lengths = {}
    longer = np.zeros(len(stats), dtype=bool)
    for name in view.sequences:
        values = np.asarray(stats[f"{name}_length"])
        lengths[name] = {
            **{f"p{q}": int(np.percentile(values, q, method="inverted_cdf")) for q in PERCENTILES},
            "max": int(values.max()),
        }
        if view.max_length is not None:
            longer |= values > view.max_length
    dropped = dict(Counter(reason for reason in stats["dropped"] if reason))
    cuts = view.max_length is not None and view.truncation_mode is not None
    return Summary(rows, len(stats), lengths, view.max_length, cuts, int(longer.sum()), dropped)


# ----------------------------------------------------------------- examples


def _example(row: int, fields: dict, view: TrainingView, tokenizer: Any) -> Example:
    values = view.dataset[row]
    pairs = [(values[input_ids_column(name)], values[trained_column(name)]) for name in view.sequences]
    sequences = tuple(
        _sequence(name, ids, trained, view, tokenizer) for name, (ids, trained) in zip(view.sequences, pairs)
    )
    return Example(row, fields, sequences, drop_reason(pairs, view.max_length, view.truncation_mode, view.drops))


def _sequence(name: str, ids: list[int], trained: list[int], view: TrainingView, tokenizer: Any) -> Sequence:
    start, end = kept_window(len(ids), view.max_length, view.truncation_mode)
    kinds = [CUT if not start <= i < end else TRAINED if mark else CONTEXT for i, mark in enumerate(trained)]
    return Sequence(
        name=name,
        segments=_segments(tokenizer, ids, kinds),
        tokens=len(ids),
        trained_tokens=kinds.count(TRAINED),
        cut_tokens=kinds.count(CUT),
    )


def _segments(tokenizer: Any, ids: list[int], kinds: list[str]) -> tuple[tuple[str, str], ...]:
    """Runs of tokens of one kind, decoded: each run is the text that decoding the sequence up to its end
    adds. A character whose bytes two runs share goes whole to the later run, not garbled into two."""
    segments, decoded, end = [], "", 0
    for kind, run in groupby(kinds):
        start, end = end, end + len(list(run))
        text = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if end < len(ids):
            text = text.rstrip("\ufffd")  # the start of a character the next run completes
        if text.startswith(decoded):
            piece = text[len(decoded) :]
        else:  # a tokenizer whose prefix decodes differently alone: decode the run by itself
            piece = tokenizer.decode(ids[start:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        segments.append((kind, piece))
        decoded = text
    return tuple(segments)


def _describe_source(source: Any) -> str:
    if isinstance(source, list) and source and all(hasattr(item, "path") for item in source):  # a mixture
        return " + ".join(str(item.path) for item in source)
    source = getattr(source, "path", source)  # the {path, name, split, columns} form
    return str(source) if isinstance(source, (str, Path)) else f"the given {type(source).__name__}"


def _describe_shape(dataset: Any, shape: str | None, keys: tuple[str, ...]) -> str:
    """The detected shape (or, for a format that detects its own, its columns) and what they hold."""
    present = [key for key in keys if key in dataset.column_names]
    kinds = sorted({kind for key in present if (kind := column_kind(dataset, key))})
    name = shape or " + ".join(present)
    return f"{name} ({', '.join(kinds)})" if kinds else name


# ----------------------------------------------------------------- output


def wants_colour(choice: str, stream: TextIO) -> bool:
    """``always``, ``never``, or ``auto``: colour on a terminal unless ``NO_COLOR`` is set (no-color.org)."""
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not os.environ.get("NO_COLOR")


def render_terminal(preview: Preview, colour: bool) -> str:
    """The preview for people: examples with the trained tokens marked, then lengths, drops and warnings."""
    summary = preview.summary
    lines = [
        f"data: {summary.rows} rows from {preview.source}; shape: {preview.shape}; "
        f"algorithm {preview.algorithm} (data_format {preview.data_format})",
        "marks: " + _legend(colour, summary.max_length if summary.cuts else None),
    ]
    for number, example in enumerate(preview.examples, start=1):
        lines += ["", f"=== example {number} (row {example.row}) ==="]
        lines += [f"{key}: {_shortened(value)}" for key, value in example.fields.items()]
        for sequence in example.sequences:
            cut = f", {sequence.cut_tokens} cut by max_length" if sequence.cut_tokens else ""
            lines.append(f"--- {sequence.name}: {sequence.tokens} tokens, {sequence.trained_tokens} trained{cut} ---")
            lines.append(_marked(sequence, colour))
        if example.dropped:
            lines.append(f"--- dropped by the trainer: {example.dropped}")
    lines += ["", *_summary_lines(preview)]
    return "\n".join(lines)


def _legend(colour: bool, cut_at: int | None) -> str:
    """What the marks mean; tokens past ``cut_at`` (``max_length``, when the trainer cuts there) too."""
    cut = f"tokens past max_length {cut_at} (cut)"
    if colour:
        marks = [f"{COLOURS[TRAINED]}trained tokens (the loss reads them){RESET}"]
        marks += [f"{COLOURS[CONTEXT]}prompt and masked tokens{RESET}"]
        marks += [f"{COLOURS[CUT]}{cut}{RESET}"] if cut_at is not None else []
    else:
        marks = ["[[trained tokens (the loss reads them)]]", "prompt and masked tokens as they are"]
        marks += [f"<<{cut}>>"] if cut_at is not None else []
    return ", ".join(marks)


def _marked(sequence: Sequence, colour: bool) -> str:
    if colour:
        return "".join(f"{COLOURS[kind]}{text}{RESET}" for kind, text in sequence.segments)
    return "".join(BRACKETS[kind][0] + text + BRACKETS[kind][1] for kind, text in sequence.segments)


def _shortened(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= FIELD_CHARS else f"{text[:FIELD_CHARS]}... ({len(text)} characters)"


def _summary_lines(preview: Preview) -> list[str]:
    summary = preview.summary
    scope = (
        f"all {summary.rows} rows"
        if summary.sampled_rows == summary.rows
        else f"a random sample of {summary.sampled_rows} of {summary.rows} rows"
    )
    width = max(len(name) for name in summary.lengths)
    lines = [f"token lengths over {scope}:", f"  {'':{width}}" + "".join(f"{key:>8}" for key in _length_keys())]
    for name, values in summary.lengths.items():
        lines.append(f"  {name:{width}}" + "".join(f"{values[key]:>8}" for key in _length_keys()))
    if summary.max_length is not None:
        fate = " (cut to fit)" if summary.cuts and summary.longer else ""
        lines.append(
            f"max_length {summary.max_length}: {summary.longer} of {summary.sampled_rows} rows are longer{fate}"
        )
        for reason, count in summary.dropped.items():
            lines.append(f"dropped: {count} of {summary.sampled_rows} rows: {reason}")
        if not summary.dropped:
            lines.append("dropped: none")
    lines += [f"note: {preview.note}"] if preview.note else []
    lines += [f"warning: {warning}" for warning in preview.warnings]
    return lines


def _length_keys() -> list[str]:
    return [f"p{q}" for q in PERCENTILES] + ["max"]


def render_json(preview: Preview) -> str:
    """One JSON object per example, then ``{"summary": {...}}``; one object a line."""
    lines = [
        json.dumps(_example_json(example, preview.shape), ensure_ascii=False, default=str)
        for example in preview.examples
    ]
    summary = preview.summary
    lines.append(
        json.dumps(
            {
                "summary": {
                    "source": preview.source,
                    "algorithm": preview.algorithm,
                    "data_format": preview.data_format,
                    "shape": preview.shape,
                    "rows": summary.rows,
                    "sampled_rows": summary.sampled_rows,
                    "lengths": summary.lengths,
                    "max_length": summary.max_length,
                    "cut_at_max_length": summary.cuts,
                    "longer_than_max_length": summary.longer,
                    "dropped": summary.dropped,
                    "note": preview.note,
                    "warnings": list(preview.warnings),
                }
            },
            ensure_ascii=False,
        )
    )
    return "\n".join(lines)


def _example_json(example: Example, shape: str) -> dict[str, Any]:
    """``row``, ``shape``, ``example`` (the normalised fields), ``dropped``, and per sequence its ``text``,
    ``trained`` (the trained spans' text), ``tokens``, ``trained_tokens`` and ``cut_tokens``, keys prefixed
    with the sequence's name when a row has several (``chosen_text``, ``rejected_text``)."""
    record: dict[str, Any] = {
        "row": example.row,
        "shape": shape,
        "example": example.fields,
        "dropped": example.dropped or None,
    }
    for sequence in example.sequences:
        prefix = f"{sequence.name}_" if len(example.sequences) > 1 else ""
        record[f"{prefix}text"] = sequence.text
        record[f"{prefix}trained"] = sequence.trained
        record[f"{prefix}tokens"] = sequence.tokens
        record[f"{prefix}trained_tokens"] = sequence.trained_tokens
        record[f"{prefix}cut_tokens"] = sequence.cut_tokens
    return record
