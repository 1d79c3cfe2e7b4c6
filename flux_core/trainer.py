"""FluxTrainer: the user API (fit, add_step_callback, load_checkpoint, generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flux_core.config import FluxConfig
from flux_core.data.load import load_training_data, training_data_identity
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
        allow_data_change: bool = False,
    ) -> FitResult:
        """Train on ``prompts``; return the steps' metrics and where the checkpoints are.

        ``prompts`` is any data source Flux reads (see the README's Data section): a
        JSONL/JSON/Parquet/CSV file (JSON and CSV also compressed) or a glob of shards, a
        ``save_to_disk`` directory, a hub dataset id, a ``{path, name, split, columns}``
        dict, a list of such sources (a mixture, each with an optional ``weight`` or
        ``rows``), a ``datasets.Dataset``/``DatasetDict`` or a list of dicts (rows);
        default ``config.data``. A ``model_path`` or data path that looks local (``./x``,
        ``a/b/c``, ``x.jsonl``) and does not exist fails at once, before any hub lookup.
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
        every step, callbacks see the new ones (see :mod:`flux_core.run.resume`). Training
        data other than the checkpoint's (another file, the same file rewritten, other
        weights) is refused unless ``allow_data_change=True``.

        Unless ``show_progress`` is off, each phase before the first step is one line on
        stderr (``flux: loading model: ...``; :mod:`flux_core.report.phases`).
        """
        from flux_core.report.phases import phase_lines

        with phase_lines(self.show_progress):
            return self._fit(
                prompts, data_format, eval_data, resume=resume, overwrite=overwrite, allow_data_change=allow_data_change
            )

    def _fit(
        self,
        prompts: Any,
        data_format: str | None,
        eval_data: Any,
        *,
        resume: Any,
        overwrite: bool,
        allow_data_change: bool = False,
    ) -> FitResult:
        from flux_core.report.phases import announce_phase, describe_source

        data_format = data_format or self.algorithm.data_format
        if data_format != self.algorithm.data_format:
            raise FluxError(
                f"algorithm '{self.algorithm.name}' trains on data_format='{self.algorithm.data_format}', "
                f"not '{data_format}'"
            )
        from flux_core.run.finished import finish_resumed_run

        finished = finish_resumed_run(self.config, resume)  # a finished run stays finished: nothing to load
        if finished is not None:
            return finished
        from flux_core.modeling import check_model_path

        check_model_path(self.config.model_path)  # a mistyped local path fails now, not after the data loads
        train_dataset, eval_dataset = load_training_data(self.config, data_format, prompts, eval_data)
        # said once loaded, with the rows counted (bad data stays a one-line error)
        held_out = f" + {len(eval_dataset)} eval rows" if eval_dataset is not None else ""
        source = describe_source(prompts if prompts is not None else self.config.data)
        announce_phase(f"loading data: {source} ({len(train_dataset)} rows{held_out})")
        data = training_data_identity(train_dataset, prompts if prompts is not None else self.config.data)
        if _is_paths(prompts):  # recorded, so checkpoints' config and model cards name the data
            self.config = self.config.model_copy()
            self.config.data = [str(path) for path in prompts] if isinstance(prompts, list) else str(prompts)
        self._check_chat_template(train_dataset, eval_dataset)
        from flux_core.modeling import check_lora_targets

        # peft ignores a misspelled name beside a right one
        check_lora_targets(self.config.model_path, self.config.lora)

        import inspect

        from flux_core.quiet import quiet_libraries
        from flux_core.run.context import RunContext
        from flux_core.run.directory import open_run_dir

        announce_phase(f"loading model: {self.config.model_path}")  # importing the runner imports torch and TRL
        runner = self.algorithm.load_runner()(self.config, show_progress=self.show_progress)
        from flux_core.run.distributed import leave_process_group_at_exit

        leave_process_group_at_exit()  # under torchrun, TRL's arguments start the group during runner.fit
        takes_run = "run" in inspect.signature(runner.fit).parameters
        if resume and not takes_run:
            raise FluxError(f"algorithm '{self.algorithm.name}' cannot resume: its runner takes no run context")
        with open_run_dir(self.config.output_dir, resume=bool(resume), overwrite=overwrite) as directory:
            run = RunContext.start(
                self.config,
                resume,
                len(train_dataset),
                is_main=directory.is_main,
                data=data,
                allow_data_change=allow_data_change,
            )
            extra = {"run": run} if takes_run else {}
            with run.preemption.installed(), quiet_libraries():
                callbacks, trackers = self._callbacks_for_run(run)
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

    def _check_chat_template(self, train_dataset: Any, eval_dataset: Any) -> None:
        """Chat-message data needs a chat template: say so before the model loads (the tokenizer loads fast)."""
        from flux_core.chat_templates import check_has_chat_template, first_chat_column
        from flux_core.modeling import load_tokenizer

        found = first_chat_column({"data": train_dataset, "eval_data": eval_dataset})
        if found is not None:
            tokenizer = load_tokenizer(self.config.model_path, self.config.chat_template)
            check_has_chat_template(tokenizer, self.config.model_path, found)

    def _callbacks_for_run(self, run: Any) -> tuple[list[StepCallback], Any]:
        """The user's step callbacks, plus a redraw of ``metrics.png`` at save points with ``plot: true``,
        plus ``report_to``'s trackers for algorithms without a transformers Trainer (returned too, to finish)."""
        callbacks = list(self._step_callbacks)
        save_steps = self.config.checkpoint.save_steps
        if self.config.plot and save_steps:
            from flux_core.report.plot import plot_run

            output_dir, algorithm = self.config.output_dir, self.algorithm.name

            def redraw_plot(result) -> None:
                if result.step % save_steps == 0:
                    plot_run(output_dir, algorithm=algorithm)

            callbacks.append(redraw_plot)
        trackers = None
        if self.algorithm.load_trl_config() is None and set(self.config.report_to) - {"none"}:
            from flux_core.report.trackers import StepTrackers

            trackers = StepTrackers(self.config, run)
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

    def generate(
        self,
        prompt: str | list[dict[str, str]],
        *,
        max_new_tokens: int = 64,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        num_samples: int = 1,
        system: str | None = None,
        raw: bool = False,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """Generate a completion of ``prompt``, with the options of ``flux generate``.

        A text prompt goes through the chat template as a user message when the tokenizer
        has one; ``raw=True`` feeds the text as it is (for a model trained on raw-text
        prompts, as TRL trains string prompts). Chat messages always use the template;
        ``system`` is a system prompt. Greedy unless ``temperature`` > 0 (or
        ``do_sample=True``); ``top_p``, ``top_k`` and ``num_samples`` need sampling.
        Returns a string, or a list of ``num_samples`` strings when it is above 1. Other
        keyword arguments go to transformers' ``generate``.

        Uses the trained model after ``fit``, the loaded one after ``load_checkpoint``,
        else the base model at ``config.model_path``.
        """
        from flux_core.generation import generate_samples, generation_settings
        from flux_core.modeling import load_model, load_tokenizer, resolve_precision
        from flux_core.quiet import quiet_libraries

        options = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            num_samples=num_samples,
            **generate_kwargs,
        )
        generation_settings(**options)  # a contradiction fails before the model loads
        if self.model is None:
            with quiet_libraries():
                self.tokenizer = load_tokenizer(self.config.model_path, self.config.chat_template)
                self.model = load_model(self.config.model_path, resolve_precision(self.config.precision))
        samples = generate_samples(self.model, self.tokenizer, prompt, raw=raw, system=system, **options)
        return samples if num_samples > 1 else samples[0]


def _is_paths(source: Any) -> bool:
    """Whether ``fit``'s data is a path (or hub id), or a list of them, rather than rows in memory."""
    if isinstance(source, list):
        return bool(source) and all(isinstance(item, (str, Path)) for item in source)
    return isinstance(source, (str, Path))
