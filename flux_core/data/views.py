"""Rows tokenized as a trainer tokenizes them, with the tokens its loss reads marked: what ``flux data`` shows.

Not a stage of the data pipeline: it reads what the pipeline made (:mod:`flux_core.data.load`).
The token ids come from TRL's own dataset preparation, run on the rows without a model
(``DPOTrainer``'s for preference pairs, ``SFTTrainer``'s for prompt + completion, messages
and text), so chat templates, the EOS TRL appends and where the completion starts are
exactly TRL's. TRL's preparation is told to cut and drop nothing; a :class:`TrainingView`
says instead which tokens ``max_length`` cuts and which rows the trainer drops, so the
preview can show both.

An algorithm names its own view function as ``Algorithm.preview``; without one,
:func:`default_view` picks a view by the columns of the normalised data.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from flux_core.compat import TRLReliance, check_trl
from flux_core.errors import FluxError

DROP_RULES = ("untrained", "too_long", "none")
PREPARING = "flux data"  # the dataset name TRL's preparation puts in its progress descriptions

# TRL's private dataset preparation, run with a stand-in for the trainer: what it reads from the trainer and its
# config must still be what the stand-ins hold (checked by flux_core.compat before it runs).
TRL_RELIES_ON = (
    TRLReliance(
        "trl:DPOTrainer._prepare_dataset",
        "flux data tokenizes preference pairs with it, without a model",
        parameters=("self", "dataset", "processing_class", "args", "dataset_name"),
        uses=("_tokenizer", "dataset_num_proc", "max_length", "truncation_mode", "prompt_ids", "chosen_ids"),
    ),
    TRLReliance(
        "trl:SFTTrainer._prepare_dataset",
        "flux data tokenizes SFT examples with it, without a model",
        parameters=("self", "dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name"),
        uses=("_tokenizer", "chat_template", "completion_only_loss", "assistant_only_loss", "labels", "input_ids"),
    ),
)


def input_ids_column(sequence: str) -> str:
    return f"{sequence}_input_ids"


def trained_column(sequence: str) -> str:
    return f"{sequence}_trained"


@dataclass(frozen=True)
class TrainingView:
    """Rows as a trainer tokenizes them for training.

    Attributes:
        dataset: a ``datasets.Dataset`` with one row per input row, in order, holding for each
            name in ``sequences`` the column ``{name}_input_ids`` (the whole sequence, before any
            truncation) and ``{name}_trained`` (1 where the loss reads the token, 0 for the prompt
            and other masked tokens).
        sequences: the sequences one row becomes (``("chosen", "rejected")`` for pairs).
        max_length: the trainer's ``max_length``; ``None`` when it has none.
        truncation_mode: ``keep_start`` (tokens past ``max_length`` are cut), ``keep_end`` (the
            first tokens are cut so the last ``max_length`` stay), or ``None`` (nothing is cut).
        drops: which rows the trainer drops when ``max_length`` is set: ``untrained`` (a row with
            no trained token left after truncation, e.g. a prompt that fills ``max_length``: TRL's
            DPO, KTO and SFT), ``too_long`` (a row with a sequence longer than ``max_length``, not
            truncated: TRL's reward model), ``none``.
        note: one line on what the marks mean, shown with the preview (e.g. that an online
            algorithm trains on its own completions, not on the dataset's).
    """

    dataset: Any
    sequences: tuple[str, ...]
    max_length: int | None
    truncation_mode: Literal["keep_start", "keep_end"] | None = "keep_start"
    drops: Literal["untrained", "too_long", "none"] = "untrained"
    note: str = ""

    def __post_init__(self) -> None:
        if self.drops not in DROP_RULES:
            raise FluxError(f"TrainingView.drops must be one of {', '.join(DROP_RULES)}, not {self.drops!r}")
        if self.truncation_mode not in ("keep_start", "keep_end", None):
            raise FluxError(
                f"TrainingView.truncation_mode must be keep_start, keep_end or None, not {self.truncation_mode!r}"
            )


def default_view(config: Any, tokenizer: Any, dataset: Any) -> TrainingView:
    """The view of an algorithm without ``Algorithm.preview``, by the normalised data's columns:
    preference pairs as TRL's DPOTrainer tokenizes them, prompt + completion (KTO's unpaired
    examples too), messages and text as TRL's SFTTrainer does, prompts as rollouts encode them."""
    columns = set(dataset.column_names)
    if {"chosen", "rejected"} <= columns:
        return pair_view(config, tokenizer, dataset)
    if {"prompt", "completion"} <= columns:
        return sequence_view(config, tokenizer, dataset)
    if "prompt" in columns:
        return prompt_view(config, tokenizer, dataset)
    if "messages" in columns or "text" in columns:
        return sequence_view(config, tokenizer, dataset)
    raise FluxError(
        f"algorithm '{config.algorithm.name}' has no preview for data with columns {', '.join(sorted(columns))}: "
        "its plugin can name one as Algorithm.preview"
    )


def pair_view(config: Any, tokenizer: Any, dataset: Any) -> TrainingView:
    """Preference pairs as TRL's ``DPOTrainer`` tokenizes them: prompt + chosen and prompt + rejected,
    the completion tokens trained (from where the tokenized prompt and prompt + completion diverge);
    text pairs get the EOS TRL appends. A pair whose prompt fills ``max_length`` is dropped."""
    from trl import DPOTrainer

    check_trl(TRL_RELIES_ON[:1], owner="flux data")
    truncation_mode = config.trl.get("truncation_mode", "keep_start")
    prepared = DPOTrainer._prepare_dataset(
        SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, _preparation_args(config, dataset), PREPARING
    )
    view = prepared.map(_join_pairs, batched=True, remove_columns=prepared.column_names, desc="Marking trained tokens")
    return TrainingView(view, ("chosen", "rejected"), config.max_length, truncation_mode)


def _join_pairs(batch: dict) -> dict:
    joined = {}
    for sequence in ("chosen", "rejected"):
        pairs = list(zip(batch["prompt_ids"], batch[f"{sequence}_ids"]))
        joined[input_ids_column(sequence)] = [prompt + completion for prompt, completion in pairs]
        joined[trained_column(sequence)] = [[0] * len(prompt) + [1] * len(completion) for prompt, completion in pairs]
    return joined


def sequence_view(
    config: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    completion_only_loss: bool = True,
    assistant_only_loss: bool = False,
) -> TrainingView:
    """prompt + completion, messages or text as TRL's ``SFTTrainer`` tokenizes them (one sequence, ``text``).

    The trained tokens are those SFTTrainer's labels keep: the completion (prompt + completion data,
    ``completion_only_loss``), the assistant turns (messages, ``assistant_only_loss``: the template's
    ``{% generation %}`` markers, or TRL's training version of the template), else every token. A row
    left without a trained token by truncation is dropped, as SFTTrainer drops it.
    """
    from trl import SFTTrainer
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    check_trl(TRL_RELIES_ON[1:], owner="flux data")
    template = None
    if assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
        template = get_training_chat_template(tokenizer)  # what SFTTrainer swaps in
    trainer = SimpleNamespace(_tokenizer=tokenizer, chat_template=template, completion_only_loss=completion_only_loss)
    args = _preparation_args(config, dataset, assistant_only_loss=assistant_only_loss)
    prepared = SFTTrainer._prepare_dataset(trainer, dataset, tokenizer, args, False, None, PREPARING)
    view = prepared.map(_labels_to_marks, batched=True, remove_columns=prepared.column_names, desc="Marking labels")
    return TrainingView(view, ("text",), config.max_length, config.trl.get("truncation_mode", "keep_start"))


def _labels_to_marks(batch: dict) -> dict:
    return {
        input_ids_column("text"): batch["input_ids"],
        trained_column("text"): [[int(label != -100) for label in labels] for labels in batch["labels"]],
    }


def prompt_view(config: Any, tokenizer: Any, dataset: Any) -> TrainingView:
    """Prompts as an online algorithm's rollouts encode them (:func:`flux_core.online.tokens.encode_prompt`):
    it trains on the completions it generates, so no token of the dataset is trained on."""
    view = dataset.map(
        _encode_prompts,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=dataset.column_names,
        num_proc=_num_proc(config, dataset),
        desc="Encoding prompts",
    )
    note = (
        f"{config.algorithm.name} trains on the completions it generates for these prompts: "
        "no token of the dataset is trained on"
    )
    return TrainingView(view, ("prompt",), None, truncation_mode=None, drops="none", note=note)


def _encode_prompts(batch: dict, tokenizer: Any) -> dict:
    from flux_core.online.tokens import encode_prompt

    encoded = [encode_prompt(tokenizer, prompt) for prompt in batch["prompt"]]
    return {input_ids_column("prompt"): encoded, trained_column("prompt"): [[0] * len(ids) for ids in encoded]}


def _preparation_args(config: Any, dataset: Any, **fields: Any) -> SimpleNamespace:
    """The TRL config fields that ``DPOTrainer``/``SFTTrainer._prepare_dataset`` read: the run's, except
    that nothing is cut, dropped or shuffled (the view says what would be)."""
    args = dict(
        dataset_num_proc=_num_proc(config, dataset),
        dataset_text_field="text",  # Flux maps text columns onto "text" (flux_sft.config owns the field)
        max_length=None,
        truncation_mode=config.trl.get("truncation_mode", "keep_start"),
        shuffle_dataset=False,
        seed=config.seed,
        assistant_only_loss=False,
    )
    return SimpleNamespace(**{**args, **fields})


def _num_proc(config: Any, dataset: Any) -> int | None:
    """``dataset_num_proc`` worker processes, but never more than rows (a few examples need none)."""
    num_proc = config.dataset_num_proc
    return min(num_proc, len(dataset)) if num_proc and len(dataset) > 1 else None
