"""TRLRunner: the shared base of runners that wrap a TRL trainer.

A subclass writes one method, ``build_trainer``; the base class wires Flux's step
callbacks, ``metrics.jsonl``, the progress bar, the non-finite guard, checkpoints
(``checkpoint-N``, ``best``, ``final``), eval at save points, main-process-only writes and
resume around it. See :class:`flux_core.runner.Runner` for the contract it implements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from flux_core.report.trackers import continue_tensorboard_run, continued_tracker_runs, mlflow_run_recorder
from flux_core.run.checkpoint import REWARD_SCORE_NAMES, CheckpointManager
from flux_core.run.reporter import StepReporter
from flux_core.run.results import FitResult, StepCallback
from flux_core.run.steps import with_resolved_steps
from flux_core.trl_based.callbacks import SavePointEvaluator, make_trl_callback, train_and_checkpoint

if TYPE_CHECKING:
    from datasets import Dataset

    from flux_core.config import FluxConfig
    from flux_core.run.context import RunContext


class TRLRunner:
    """Base of runners that wrap a TRL trainer; a subclass writes ``build_trainer`` and sets the class attributes.

    Attributes:
        metric_names: TRL log key -> Flux metric name (others keep their key with '/' -> '_').
        progress_metrics: the metrics shown on the progress bar.
        score_metric: the step metric that ranks save points for ``best/`` when there is no eval data.
        higher_is_better: ``True`` when ``score_metric`` is a reward (``best`` is then its maximum).
        eval_metric: the key of ``trainer.evaluate()`` that ranks save points with eval data.
    """

    metric_names: ClassVar[Mapping[str, str]] = {}
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    score_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    eval_metric: ClassVar[str] = "eval_loss"

    def __init__(self, config: FluxConfig, show_progress: bool = True):
        self.config = config
        self.show_progress = show_progress
        self.model: Any = None
        self.tokenizer: Any = None
        self.trainer: Any = None

    def build_trainer(self, dataset: Dataset, eval_dataset: Dataset | None, callbacks: list[Any] = ()) -> Any:
        """The TRL trainer of this run, with ``callbacks`` (``transformers.TrainerCallback``) attached.

        Set ``self.tokenizer`` (checkpoints save it), train nothing, and return
        ``self.adopt(trainer)``.
        """
        raise NotImplementedError

    def load_tokenizer_and_policy(self, dataset: Dataset, **model_settings: Any) -> tuple[str, Any]:
        """The run's resolved precision and its policy model (QLoRA's quantized base with ``lora.quantize``),
        after setting ``self.tokenizer`` and checking that its chat template renders ``dataset``.
        ``model_settings``: more keyword arguments for :func:`flux_core.modeling.load_model`."""
        from flux_core.data.rendering import check_template_renders
        from flux_core.modeling import load_model, load_tokenizer, resolve_precision

        config = self.config
        precision = resolve_precision(config.precision)
        self.tokenizer = load_tokenizer(config.model_path, config.chat_template)
        check_template_renders(self.tokenizer, dataset, config.model_path)
        return precision, load_model(config.model_path, precision, quantize=config.base_quantization, **model_settings)

    def trl_trainer(
        self, trainer_class: Any, model: Any, args: Any, dataset: Dataset, eval_dataset: Dataset | None,
        callbacks: list[Any] = (), **trainer_arguments: Any,
    ) -> Any:  # fmt: skip
        """``trainer_class`` (a TRL trainer) built as every Flux run hands it over, adopted (:meth:`adopt`):
        the run's tokenizer, LoRA through peft's config, Flux's ``callbacks``; ``trainer_arguments``: its own
        (a teacher model, a reward function). Announces the tokenizing the trainer does as it is built."""
        from flux_core.modeling import peft_config

        self.announce_tokenizing(dataset, eval_dataset)
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=self.tokenizer,
            peft_config=peft_config(self.config.lora),
            callbacks=list(callbacks),
            **trainer_arguments,
        )
        return self.adopt(trainer)

    def adopt(self, trainer: Any) -> Any:
        """Make ``trainer`` this run's (``self.trainer``, ``self.model``) and silence TRL's
        per-log printing (Flux shows its own progress); ``build_trainer`` returns ``self.adopt(trainer)``."""
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        self.trainer = trainer
        self.model = trainer.model
        return trainer

    def announce_tokenizing(self, dataset: Dataset, eval_dataset: Dataset | None = None) -> None:
        """Say on stderr that the trainer is about to tokenize (``flux: tokenizing 230 rows + 26 eval rows``);
        ``build_trainer`` calls it right before building a TRL trainer that tokenizes its datasets up front."""
        from flux_core.report.phases import announce_phase

        held_out = f" + {len(eval_dataset)} eval rows" if eval_dataset is not None else ""
        announce_phase(f"tokenizing {len(dataset)} rows{held_out}")

    def step_metric_names(self) -> Mapping[str, str]:
        """TRL log key -> Flux name for this run (override when they depend on the config)."""
        return self.metric_names

    def fit(
        self,
        dataset: Dataset,
        eval_dataset: Dataset | None,
        callbacks: list[StepCallback],
        run: RunContext | None = None,
    ) -> FitResult:
        """Train; ``run`` (from ``FluxTrainer.fit``; None: a fresh run) carries the run's
        non-finite guard and, when resuming, the checkpoint to continue from.

        With ``num_epochs`` the step count comes from the rows the TRL trainer trains on, which
        packing (SFT) or dropped over-long pairs (DPO, reward model) may make fewer than were loaded.
        """
        requested = self.config
        # Provisional until the trainer is built: building reads num_steps (TRL's max_steps, GRPO's async producer).
        config = self.config = with_resolved_steps(requested, len(dataset), announce=False)
        sign = -1.0 if self.higher_is_better else 1.0
        checkpoints: CheckpointManager | None = None

        def on_step(result, model):
            value = result.metrics.get(self.score_metric)
            checkpoints.on_step(result.step, None if value is None else sign * value, model)

        reporter = StepReporter(
            config,
            callbacks,
            self.step_metric_names(),
            progress_metrics=self.progress_metrics,
            show_progress=self.show_progress,
            on_step=on_step,
            run=run,
        )
        save_steps = config.checkpoint.save_steps
        evaluator = SavePointEvaluator(self.eval_metric, save_steps, sign=sign) if eval_dataset is not None else None
        trainer_callbacks = [evaluator.callback()] if evaluator else []
        trainer = self.build_trainer(dataset, eval_dataset, [*trainer_callbacks, make_trl_callback(reporter)])
        continue_tensorboard_run(trainer, config, reporter.run)  # one TensorBoard folder per run, resumed too
        rows = len(trainer.train_dataset)
        config = self.config = reporter.config = with_resolved_steps(requested, rows, loaded=len(dataset))
        trainer.args.max_steps = config.num_steps
        if evaluator:
            evaluator.trainer = trainer
        score_names = REWARD_SCORE_NAMES if self.higher_is_better else ("smoothed_train_loss", "eval_loss")
        checkpoints = CheckpointManager(
            config.output_dir, config, self.tokenizer, save_steps, evaluator.score if evaluator else None, score_names
        )
        with continued_tracker_runs(config, reporter.run) as tracker_ids:  # wandb/MLflow: one run across --resume
            recorder = mlflow_run_recorder(config, tracker_ids)
            if recorder is not None:
                trainer.add_callback(recorder)
            result = train_and_checkpoint(trainer, reporter, checkpoints, evaluator)
        self.model = trainer.model
        return result
