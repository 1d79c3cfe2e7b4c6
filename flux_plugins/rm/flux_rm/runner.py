"""RewardModelRunner: FluxConfig + checked preference pairs -> a trained, checkpointed reward model.

The model is ``model_path`` loaded as ``AutoModelForSequenceClassification`` with one label
(a fresh linear ``score`` head on the last token's hidden state) and ``config.pad_token_id``
set, so every checkpoint (``checkpoint-N``, ``best``, ``final``) loads as is through
``rewards: [{model: DIR}]`` in GRPO and PPO.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from flux_core import (
    FluxConfig,
    FluxError,
    TRLRunner,
    build_trl_config,
    check_template_renders,
    load_tokenizer,
    peft_config,
    resolve_precision,
)

if TYPE_CHECKING:
    from datasets import Dataset

# TRL's RewardTrainer log keys -> Flux metric names ("loss", "accuracy", "num_tokens" keep theirs).
METRIC_NAMES = {
    "accuracy": "accuracy",
    "margin": "reward_margin",
    "mean_reward": "mean_reward",
    "min_reward": "min_reward",
    "max_reward": "max_reward",
}


def load_reward_model(model_path: str, precision: str, seed: int, pad_token_id: int):
    """``model_path`` as a one-label sequence classifier; a causal LM gets a fresh ``score`` head,
    initialised from ``seed`` (as RewardTrainer does), a reward model keeps its own."""
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from flux_core import check_finite_weights, check_weight_files, looks_local, torch_dtype

    path = model_path
    if looks_local(model_path):
        from pathlib import Path

        local = Path(model_path).expanduser()
        if not local.is_dir():
            raise FluxError(f"model_path '{model_path}': directory not found")
        check_weight_files(local)
        path = str(local)
    set_seed(seed)
    try:
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch_dtype(precision))
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FluxError(f"cannot load model from '{model_path}' as a reward model: {first}") from None
    check_finite_weights(model, path)
    # The score is read at the last non-pad token: the saved config must name the pad id.
    model.config.pad_token_id = pad_token_id
    return model


def reward_lora_config(lora: Any):
    """Flux's ``lora:`` block for a sequence classifier: the fresh ``score`` head is trained in full."""
    config = peft_config(lora)
    if config is not None:
        config.task_type = "SEQ_CLS"
        config.modules_to_save = ["score"]
    return config


def build_reward_args(config: FluxConfig, precision: str, model: Any):
    """The ``trl.RewardConfig`` for a Flux run: Flux's keys first, then the ``trl:`` block."""
    from trl import RewardConfig

    return build_trl_config(
        RewardConfig,
        config,
        precision,
        model,
        sequences=2 * config.batch_size,  # chosen and rejected of every pair
        extra_model_copies=0,
        max_length=config.max_length,
        dataset_num_proc=config.dataset_num_proc,
        center_rewards_coefficient=config.algorithm.center_rewards_coefficient,
    )


def flux_reward_trainer_class():
    """``trl.RewardTrainer`` that scores eval data at most once per step."""
    from trl import RewardTrainer

    class FluxRewardTrainer(RewardTrainer):
        """Scores eval data at most once per step: Flux's save-point evaluator and the last-step
        evaluation share the result. Its ``eval_*`` metrics join that step's row through Flux's
        step callback, as every TRL-based algorithm's do."""

        _eval_cache: tuple[int, dict[str, float]] | None = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            step = self.state.global_step
            default = eval_dataset is None and ignore_keys is None and metric_key_prefix == "eval"
            if default and self._eval_cache is not None and self._eval_cache[0] == step:
                return dict(self._eval_cache[1])
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if default:
                self._eval_cache = (step, dict(metrics))
            return metrics

    return FluxRewardTrainer


def evaluate_at_last_step(trainer: Any):
    """A callback scoring eval data before the last step is logged, so its metrics carry eval_accuracy."""
    from transformers import TrainerCallback

    class EvaluateAtLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step != state.max_steps:
                return
            should_log = control.should_log  # as Flux's save-point evaluator: evaluate() logs and
            trainer.evaluate()  # leaves the model in eval mode; restore both
            control.should_log = should_log
            trainer.model.train()

    return EvaluateAtLastStep()


class RewardModelRunner(TRLRunner):
    """Builds model, tokenizer and ``trl.RewardTrainer`` for one reward-model run (see :class:`TRLRunner`).

    Loss: ``-log sigmoid(r(chosen) - r(rejected))``; ``accuracy`` is the share of pairs
    scored higher for ``chosen``. With eval data, ``eval_accuracy`` (and ``eval_loss``,
    ``eval_reward_margin``, ``eval_mean_reward``) join the metrics of every save point and of
    the last step; ``best/`` is the save point with the lowest eval loss.
    """

    metric_names: ClassVar[Mapping[str, str]] = METRIC_NAMES
    progress_metrics = ("loss", "accuracy")

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()):
        config = self.config
        precision = resolve_precision(config.precision)
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        check_template_renders(self.tokenizer, dataset, config.model_path)
        if config.base_quantization is not None:
            raise FluxError("lora.quantize: reward-model training cannot load a quantized base yet; drop it")
        model = load_reward_model(config.model_path, precision, config.seed, self.tokenizer.pad_token_id)
        args = build_reward_args(config, precision, model)
        if config.lora is not None:
            # The adapter is made here, right after the seeded head, as RewardTrainer does for a model it
            # loads itself; given a model, it would re-seed first and draw other LoRA weights.
            from peft import get_peft_model

            model = get_peft_model(model, reward_lora_config(config.lora))
        self.announce_tokenizing(dataset, eval_dataset)
        trainer = flux_reward_trainer_class()(
            model=model,
            args=args,
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            callbacks=list(callbacks),
        )
        if eval_dataset is not None:
            trainer.add_callback(evaluate_at_last_step(trainer))
        _check_kept(len(dataset), len(trainer.train_dataset), config.max_length, "data")
        if eval_dataset is not None:
            _check_kept(len(eval_dataset), len(trainer.eval_dataset), config.max_length, "eval_data")
        return self.adopt(trainer)


def _check_kept(given: int, kept: int, max_length: int | None, what: str) -> None:
    """RewardTrainer drops pairs longer than max_length (it does not truncate them): say so."""
    if kept == 0:
        raise FluxError(
            f"{what}: all {given} pairs are longer than max_length {max_length} tokens (prompt + completion), "
            "and reward-model training drops such pairs; raise max_length"
        )
    if kept < given:
        warnings.warn(
            f"{what}: {given - kept} of {given} pairs are longer than max_length {max_length} tokens and were dropped",
            UserWarning,
            stacklevel=2,
        )
