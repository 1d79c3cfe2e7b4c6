"""DistillRunner: FluxConfig + validated prompt dataset -> a student trained to match its teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux_core import (
    ConfigError,
    FluxConfig,
    TRLRunner,
    announce_phase,
    build_trl_config,
    load_model,
    peft_config,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's distillation log keys -> the metric names Flux users see (GRPO's names for the same quantities).
METRIC_NAMES = {
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_fraction",
}


def build_distill_args(config: FluxConfig, precision: str, model: Any):
    """The ``trl.DistillationConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import DistillationConfig

    algorithm = config.algorithm
    return build_trl_config(
        DistillationConfig,
        config,
        precision,
        model,
        sequences=config.batch_size,
        extra_model_copies=1,  # the teacher (an estimate: it may be larger than the student)
        beta=algorithm.beta,
        temperature=algorithm.temperature,
        top_p=algorithm.top_p,
        max_completion_length=algorithm.max_completion_length,
    )


def check_vocabularies(student: Any, teacher: Any, config: FluxConfig) -> None:
    """The loss compares full next-token distributions: student and teacher must share a vocabulary."""
    sizes = [model.config.get_text_config().vocab_size for model in (student, teacher)]
    if sizes[0] != sizes[1]:
        raise ConfigError(
            f"algorithm.teacher: {config.algorithm.teacher} has a vocabulary of {sizes[1]} tokens, the student "
            f"{config.model_path} {sizes[0]}; distillation compares next-token distributions, so pick a teacher "
            "of the student's model family (same tokenizer)"
        )


class DistillRunner(TRLRunner):
    """Builds student, teacher and ``trl.DistillationTrainer`` for one run (see :class:`TRLRunner`).

    The student samples a completion of each prompt; the loss is the per-token divergence (``beta``)
    between the student's and the teacher's next-token distributions on it. With ``lora:`` only the
    student's adapter trains; the teacher is frozen and never saved.
    """

    metric_names = METRIC_NAMES
    progress_metrics = ("loss", "completion_length")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        from trl import DistillationTrainer

        config = self.config
        precision, model = self.load_tokenizer_and_policy(dataset)
        announce_phase(f"loading teacher: {config.algorithm.teacher}")
        teacher = load_model(config.algorithm.teacher, precision)
        check_vocabularies(model, teacher, config)
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=build_distill_args(config, precision, model),
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            peft_config=peft_config(config.lora),
            callbacks=list(callbacks),
        )
        return self.adopt(trainer)
