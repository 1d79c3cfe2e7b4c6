"""FluxTrainer: the user API (fit, add_step_callback, load_checkpoint, generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flux_core.config import FluxConfig
from flux_core.data.load import load_training_data
from flux_core.errors import FluxError
from flux_core.registry import get_registry
from flux_core.run.results import FitResult, StepCallback


class FluxTrainer:
    """Train, checkpoint and generate with the algorithm that ``config`` selects.

    Example::

        trainer = FluxTrainer(FluxConfig.from_yaml("dpo-config.yaml"))

        @trainer.add_step_callback
        def log(result):
            print(result.step, result.metrics["loss"])

        result = trainer.fit(prompts="preferences.jsonl", data_format="preferences")
    """

    def __init__(self, config: FluxConfig, show_progress: bool = True):
        if not isinstance(config, FluxConfig):
            raise FluxError(f"FluxTrainer needs a FluxConfig, got {type(config).__name__}")
        self.config = config
        self.algorithm = get_registry().get_algorithm(config.algorithm.name)
        self.show_progress = show_progress
        self.model: Any = None
        self.tokenizer: Any = None
        self._step_callbacks: list[StepCallback] = []

    def add_step_callback(self, callback: StepCallback) -> StepCallback:
        """Call ``callback(result)`` after every optimizer step; usable as a decorator."""
        if not callable(callback):
            raise FluxError("add_step_callback needs a function taking one StepResult")
        self._step_callbacks.append(callback)
        return callback

    def fit(
        self,
        prompts: Any = None,
        data_format: str | None = None,
        eval_data: Any = None,
        *,
        resume: bool | str | Path | None = None,
        overwrite: bool = False,
    ) -> FitResult:
        """Train on ``prompts``; return the steps' metrics and where the checkpoints are.

        ``prompts`` is any data source Flux reads (see the README's Data section): a
        JSONL/JSON/Parquet/CSV file or a glob of shards, a ``save_to_disk`` directory,
        a hub dataset id, a ``{path, name, split, columns}`` dict, a
        ``datasets.Dataset``/``DatasetDict`` or a list of dicts; default ``config.data``.
        ``data_format`` defaults to the algorithm's own ("preferences" for DPO,
        "prompts" for GRPO/PPO). ``eval_data`` (or ``config.eval_data``, or
        ``config.eval_fraction``) is an optional held-out set in the same format; with
        it, ``best/`` is chosen by eval loss. All data is read and checked before any
        model is loaded.

        One run at a time uses ``config.output_dir`` (a second one fails naming the
        first's PID), and a directory holding a previous run's checkpoints or
        ``metrics.jsonl`` is refused unless ``resume`` or ``overwrite=True`` (which
        removes them first; see :mod:`flux_core.run.directory`).

        ``resume=True`` continues from the newest ``checkpoint-N`` in ``output_dir`` (or
        starts at step 1 when there is none yet); ``resume="path/checkpoint-N"`` from that
        one. Optimizer, scheduler, RNG states and the data position are restored, so the
        steps after N are those of an uninterrupted run; the result's ``history`` holds
        every step, callbacks see the new ones (see :mod:`flux_core.run.resume`).
        """
        data_format = data_format or self.algorithm.data_format
        if data_format != self.algorithm.data_format:
            raise FluxError(
                f"algorithm '{self.algorithm.name}' trains on data_format='{self.algorithm.data_format}', "
                f"not '{data_format}'"
            )
        train_dataset, eval_dataset = load_training_data(self.config, data_format, prompts, eval_data)

        import inspect

        from flux_core.quiet import quiet_libraries
        from flux_core.run.context import RunContext
        from flux_core.run.directory import open_run_dir

        runner = self.algorithm.load_runner()(self.config, show_progress=self.show_progress)
        takes_run = "run" in inspect.signature(runner.fit).parameters
        if resume and not takes_run:
            raise FluxError(f"algorithm '{self.algorithm.name}' cannot resume: its runner takes no run context")
        with open_run_dir(self.config.output_dir, resume=bool(resume), overwrite=overwrite) as directory:
            run = RunContext.start(self.config, resume, len(train_dataset), is_main=directory.is_main)
            extra = {"run": run} if takes_run else {}
            with run.preemption.installed(), quiet_libraries():
                callbacks, trackers = self._callbacks_for_run()
                try:
                    result = runner.fit(train_dataset, eval_dataset, callbacks, **extra)
                finally:
                    if trackers is not None:
                        trackers.finish()
        self.model, self.tokenizer = runner.model, runner.tokenizer
        if self.config.push_to_hub and directory.is_main:
            from flux_core.report.model_card import push_to_hub

            push_to_hub(Path(result.best_path), self.config.push_to_hub)  # best/ always exists after a run
        return result

    def _callbacks_for_run(self) -> tuple[list[StepCallback], Any]:
        """The user's step callbacks, plus a redraw of ``metrics.png`` at save points with ``plot: true``,
        plus ``report_to``'s trackers for algorithms without a transformers Trainer (returned too, to finish)."""
        callbacks = list(self._step_callbacks)
        save_steps = self.config.checkpoint.save_steps
        if self.config.plot and save_steps:
            from flux_core.report.plot import plot_run

            output_dir = self.config.output_dir

            def redraw_plot(result) -> None:
                if result.step % save_steps == 0:
                    plot_run(output_dir)

            callbacks.append(redraw_plot)
        trackers = None
        if self.algorithm.load_trl_config() is None and set(self.config.report_to) - {"none"}:
            from flux_core.report.trackers import StepTrackers

            trackers = StepTrackers(self.config)
            callbacks.append(trackers)
        return callbacks, trackers

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint directory (``output_dir/best``, ``final`` or ``checkpoint-N``)."""
        from flux_core.modeling import load_model, load_tokenizer, resolve_precision
        from flux_core.quiet import quiet_libraries
        from flux_core.run.checkpoint import resolve_checkpoint

        directory = str(resolve_checkpoint(path))
        with quiet_libraries():
            self.tokenizer = load_tokenizer(directory)
            self.model = load_model(directory, resolve_precision(self.config.precision))

    def generate(self, prompt: str | list[dict[str, str]], **generate_kwargs: Any) -> str:
        """Generate a completion (greedy by default; pass e.g. ``do_sample=True``).

        Uses the trained model after ``fit``, the loaded one after ``load_checkpoint``,
        else the base model at ``config.model_path``.
        """
        from flux_core.modeling import generate_text, load_model, load_tokenizer, resolve_precision
        from flux_core.quiet import quiet_libraries

        if self.model is None:
            with quiet_libraries():
                self.tokenizer = load_tokenizer(self.config.model_path)
                self.model = load_model(self.config.model_path, resolve_precision(self.config.precision))
        return generate_text(self.model, self.tokenizer, prompt, **generate_kwargs)
