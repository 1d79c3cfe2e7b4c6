"""SFTRunner: FluxConfig + checked SFT examples -> a trained, checkpointed model."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from flux_core import (
    FluxConfig,
    FluxError,
    TRLRunner,
    build_trl_config,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's SFT log keys keep their names ("loss", "entropy", "num_tokens", "mean_token_accuracy").
METRIC_NAMES: dict[str, str] = {}


def template_marks_assistant_turns(tokenizer: Any) -> bool:
    """Whether TRL can mask everything but the assistant turns with this tokenizer's chat template:
    it has ``{% generation %}`` markers, or TRL ships a training version of it."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:  # TRL 1.16: "patching is not supported for this template"
        return False
    return True


def resolve_assistant_only_loss(setting: bool | str, tokenizer: Any, dataset: Any, model_path: str) -> bool:
    """``algorithm.assistant_only_loss`` for this run: only ``messages`` data has assistant turns to single out."""
    if "messages" not in dataset.column_names or {"prompt", "completion"} <= set(dataset.column_names):
        if setting is True:
            warnings.warn(
                "assistant_only_loss applies to messages data; prompt + completion data uses completion_only_loss "
                "and text data trains on every token",
                UserWarning,
                stacklevel=2,
            )
        return False
    if setting is False:
        return False
    if template_marks_assistant_turns(tokenizer):
        return True
    if setting is True:
        raise FluxError(
            f"assistant_only_loss: the chat template of '{model_path}' does not mark assistant turns "
            "({% generation %} ... {% endgeneration %}) and TRL has no training version of it; "
            "add the markers to the template or set algorithm.assistant_only_loss: false"
        )
    warnings.warn(
        f"assistant_only_loss auto: the chat template of '{model_path}' does not mark assistant turns "
        "({% generation %}), so SFT on messages trains on every token; add the markers to the template, "
        "or set algorithm.assistant_only_loss: false to silence this",
        UserWarning,
        stacklevel=2,
    )
    return False


def build_sft_args(config: FluxConfig, precision: str, model: Any, assistant_only_loss: bool):
    """The ``trl.SFTConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import SFTConfig

    algorithm = config.algorithm
    return build_trl_config(
        SFTConfig,
        config,
        precision,
        model,
        sequences=config.batch_size,
        extra_model_copies=0,
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        dataset_text_field="text",
        completion_only_loss=algorithm.completion_only_loss,
        assistant_only_loss=assistant_only_loss,
        packing=algorithm.packing,
    )


class SFTRunner(TRLRunner):
    """Builds model, tokenizer and ``trl.SFTTrainer`` for one SFT run (see :class:`TRLRunner`).

    Loss: the mean negative log-likelihood of the trained tokens, which are the completion
    (prompt + completion data, ``completion_only_loss``), the assistant turns (messages data,
    ``assistant_only_loss``) or every token (text data).
    """

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "mean_token_accuracy")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from trl import SFTTrainer

        config = self.config
        precision, model = self.load_tokenizer_and_policy(dataset)
        assistant_only = resolve_assistant_only_loss(
            config.algorithm.assistant_only_loss, self.tokenizer, dataset, config.model_path
        )
        args = build_sft_args(config, precision, model, assistant_only)
        return self.trl_trainer(SFTTrainer, model, args, dataset, eval_dataset, callbacks)
