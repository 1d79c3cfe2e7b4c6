"""The ``flux`` command: train, generate, plugins, tiny-model.

Bad input exits non-zero with one line on stderr; ``--debug`` shows the traceback.
Nothing heavy is imported until a subcommand needs it, so ``flux --help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from flux_core.run.layout import CONFIG_FILE, EVAL_FILE, METRICS_FILE, PLOT_FILE


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other flux error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"flux: error: {message}; see '{self.prog} --help'\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None


def _temperature(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be 0 (greedy) or a positive number, not {text}")
    return value


def _top_p(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    """The sampling options ``flux generate`` and ``flux chat`` share."""
    parser.add_argument("--max-new-tokens", type=_positive_int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--temperature", type=_temperature, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=_top_p, help="nucleus sampling: keep the likeliest tokens up to this mass")
    parser.add_argument("--top-k", type=_positive_int, help="sample among the k likeliest tokens only")
    parser.add_argument(
        "--repetition-penalty", type=_positive_float, help="> 1 discourages repeating tokens (1 = off, the default)"
    )
    parser.add_argument("--system", metavar="TEXT", help="a system prompt (through the chat template)")


class _VersionAction(argparse.Action):
    """``--version``: read from package metadata when asked, so building the parser stays cheap."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from flux_core.installation import version_report

        print(version_report())
        parser.exit(0)


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    """``flux train`` and its options."""
    train = commands.add_parser("train", help="train with a YAML config", description="Train with a YAML config.")
    train.add_argument("config", help="path to the YAML config")
    train.add_argument(
        "--data",
        action="append",
        metavar="SOURCE",
        help="training data: a JSONL/JSON/Parquet/CSV file (JSON and CSV may be .gz/.bz2/.xz/.zst), a glob, a "
        "save_to_disk directory or a hub dataset id; repeat it to concatenate several (weights: a data: list in the "
        "config); defaults to the config's data: key",
    )
    train.add_argument("--eval-data", help="held-out data in the same format; best/ is then picked by eval loss")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set algorithm.beta=0.2 (repeatable)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue the run in output_dir from its newest checkpoint-N (or from CHECKPOINT), with the same "
        "config (num_steps or num_epochs and checkpoint.save_steps may change)",
    )
    train.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: go on although the training data differs from the checkpoint's (another file, the same "
        "file rewritten, other weights), which is refused otherwise",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in output_dir (its checkpoint-N/, best/, final/, metrics.jsonl)",
    )
    train.add_argument(
        "--accelerate-config",
        metavar="FILE",
        help="run under `accelerate launch --config_file FILE` (multi-GPU, DeepSpeed, FSDP; see configs/accelerate/)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flux",
        # No list of algorithms: they are plugins, and loading them made --help 4-5x slower (0.35-0.6 s, not 0.1 s).
        description="Flux: plugin-based post-training on top of Hugging Face TRL. Algorithms are plugins: "
        "`flux plugins` lists the installed ones.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action=_VersionAction, help="print the versions of Flux, its plugins and TRL")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_train_command(commands)

    generate = commands.add_parser(
        "generate",
        help="generate text from a checkpoint",
        description="Answer PROMPT with the model at CHECKPOINT. The prompt goes through the model's chat template "
        "as a user message when its tokenizer has one (--raw: the text as it is, e.g. for a model trained on "
        "raw-text prompts). Greedy unless --temperature is above 0.",
    )
    generate.add_argument("checkpoint", help="checkpoint directory (e.g. outputs/dpo/best) or model path")
    generate.add_argument("prompt", help="prompt text")
    _add_generation_options(generate)
    generate.add_argument(
        "--num-samples", type=_positive_int, default=1, help="how many samples to print (needs --temperature > 0)"
    )
    generate.add_argument("--raw", action="store_true", help="feed the prompt as it is, without the chat template")

    chat = commands.add_parser(
        "chat",
        help="talk to a checkpoint in the terminal, turn by turn",
        description="An interactive conversation with the model at CHECKPOINT through its chat template: each reply "
        "is generated from the whole conversation and printed as it comes. /reset forgets the conversation, "
        "/exit or Ctrl-D ends.",
    )
    chat.add_argument("checkpoint", help="checkpoint directory (e.g. outputs/dpo/best) or model path")
    _add_generation_options(chat)

    _add_data_command(commands)
    _add_new_plugin_command(commands)

    plot = commands.add_parser(
        "plot",
        help=f"draw a run's {METRICS_FILE} as a PNG and check it for the tutorial's warning signs",
        description=f"Draw OUTPUT_DIR/{METRICS_FILE} (loss, reward margin, chosen vs rejected, accuracy; or reward, "
        "KL, entropy, completion length for online runs) with checkpoints and best marked, then print one line "
        "per warning sign with the remedy to try.",
    )
    plot.add_argument("output_dir", help=f"a run's output_dir (holds {METRICS_FILE})")
    plot.add_argument("--out", metavar="FILE.png", help=f"where to write the picture (default OUTPUT_DIR/{PLOT_FILE})")

    evaluate = commands.add_parser(
        "eval",
        help=f"score a checkpoint on held-out data (optionally beside another) and write {EVAL_FILE}",
        description="Preference data: loss, accuracy and reward margin against the run's base model. Prompt data: "
        "mean reward of greedy and sampled completions, with a few samples.",
    )
    evaluate.add_argument("checkpoint", help="checkpoint directory (e.g. outputs/dpo/best)")
    evaluate.add_argument("--data", required=True, help="held-out data: any source flux train --data takes")
    evaluate.add_argument("--compare", metavar="OTHER", help="another checkpoint or model directory to score beside it")
    evaluate.add_argument("--config", help=f"the run's config (default: CHECKPOINT/{CONFIG_FILE})")
    evaluate.add_argument("--reward", action="append", metavar="NAME", help="reward for prompt data (repeatable)")
    evaluate.add_argument(
        "--out", metavar="FILE", help=f"where to write the JSON report (default CHECKPOINT/{EVAL_FILE})"
    )

    plugins = commands.add_parser("plugins", help="list installed plugins and every registered name")
    plugins.add_argument("--hooks", action="store_true", help="also print every hook specification")

    _add_serve_command(commands)

    tiny = commands.add_parser("tiny-model", help="build the tiny offline model + tokenizer used by tests and demos")
    tiny.add_argument("directory", help="where to write it")
    tiny.add_argument("--hidden-size", type=_positive_int, default=128, help="hidden size (default 128)")
    tiny.add_argument("--layers", type=_positive_int, default=2, help="number of layers (default 2, at least 1)")
    tiny.add_argument("--seed", type=int, default=0, help="init seed (default 0)")
    return parser


def _add_serve_command(commands: argparse._SubParsersAction) -> None:
    """``flux serve``: a rollout server speaking SGLang's HTTP API (flux_core.online.serve)."""
    serve = commands.add_parser(
        "serve",
        help="serve a model for rollouts over SGLang's HTTP API (transformers; CPU-friendly)",
        description="Serve MODEL_DIR with SGLang's native endpoints (/health, /generate, /update_weights_from_disk, "
        "/flush_cache) so GRPO/PPO runs with sglang.base_url generate through it. Use SGLang itself on GPUs.",
    )
    serve.add_argument("model_dir", help="a model directory (or hub id) to serve")
    serve.add_argument("--port", type=int, default=30000, help="port (default 30000; 0 = any free port, printed)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights dtype")
    serve.add_argument("--seed", type=int, default=None, help="seed sampling (default: unseeded)")
    serve.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every endpoint but /health (default: $FLUX_SERVE_API_KEY; "
        "the trainer sends $FLUX_SERVE_API_KEY)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a --host other machines can reach without an API key (refused otherwise)",
    )
    serve.add_argument(
        "--weights-root",
        metavar="DIR",
        help="/update_weights_from_disk reads *.safetensors only under DIR (default: the current directory)",
    )
    serve.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MiB (default 32; 413)")
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="answer 504 and stop a /generate not done in this many seconds, waiting included (default 300)",
    )
    serve.add_argument(
        "--max-queued-requests",
        type=int,
        default=64,
        metavar="N",
        help="/generate requests that may wait for the model; more are answered 503 (default 64)",
    )


def _add_new_plugin_command(commands: argparse._SubParsersAction) -> None:
    """``flux new-plugin``: a ready-to-install plugin package (flux_core.new_plugin)."""
    new = commands.add_parser(
        "new-plugin",
        help="write a new plugin package (an algorithm, a DPO loss, a reward or a reference policy) with its tests",
        description="Write a ready-to-install plugin package: pyproject.toml with the `flux` entry point, the plugin "
        "module with its hook, tests that use Flux's test kit and pass as written, and a README. Then: "
        "cd flux-NAME && pip install -e '.[test]' && pytest.",
    )
    new.add_argument("name", help="the plugin's name, a lowercase Python identifier (package flux_NAME, flux-NAME)")
    new.add_argument(
        "--kind",
        required=True,
        choices=["algorithm", "loss", "reward", "reference"],
        help="algorithm: a training algorithm (config, runner, data format); loss: a DPO loss; reward: a GRPO/PPO "
        "reward; reference: where DPO's reference log-probs come from",
    )
    new.add_argument("--directory", metavar="DIR", help="where to write it (default ./flux-NAME; must not exist)")


def _add_data_command(commands: argparse._SubParsersAction) -> None:
    """``flux data``: the first examples as the algorithm will train on them (flux_core.data.preview)."""
    data = commands.add_parser(
        "data",
        help="show the first examples as the algorithm will train on them, and token lengths",
        description="Load the data as `flux train` would (shape detection, normalising, checks), tokenize it as the "
        "algorithm's trainer does (chat template, EOS, prompt/completion split; only the tokenizer is loaded) and "
        "print the first examples with the trained tokens marked, token-length percentiles, the rows longer than "
        "max_length and the rows the trainer drops.",
    )
    data.add_argument("config", help="path to the YAML config")
    data.add_argument(
        "--data", metavar="FILE", help="the data to show (any source flux train --data takes); default: the config's"
    )
    data.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set max_length=512 (repeatable)",
    )
    data.add_argument(
        "-n", dest="num_examples", metavar="N", type=_positive_int, default=3, help="examples to show (default 3)"
    )
    data.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per example, then {"summary": ...}: no colour, nothing else on stdout',
    )
    data.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="mark trained tokens in colour (auto: on a terminal, unless NO_COLOR is set) or with [[brackets]]",
    )


def _relaunch_under_accelerate(config_file: str, argv: list[str]) -> int:
    """Re-run this same command, minus --accelerate-config, under ``accelerate launch``."""
    import os
    import subprocess
    from pathlib import Path

    from flux_core.errors import FluxError

    if not Path(config_file).is_file():
        raise FluxError(f"--accelerate-config {config_file}: file not found")
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--config_file", config_file, "-m", "flux_core.cli", *argv]
    return subprocess.run(command, env=os.environ.copy()).returncode


def _without_option(argv: list[str], option: str) -> list[str]:
    cleaned, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            cleaned.append(item)
    return cleaned


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0  # set by torchrun / accelerate launch


def _resume_command(args: argparse.Namespace) -> str:
    """The ``flux train`` command that continues this run."""
    import shlex

    command = ["flux", "train", args.config]
    for source in args.data or ():
        command += ["--data", source]
    if args.eval_data:
        command += ["--eval-data", args.eval_data]
    for override in args.overrides:
        command += ["--set", override]
    if args.no_progress:
        command.append("--no-progress")
    return shlex.join([*command, "--resume"])


def _train(args: argparse.Namespace) -> int:
    from flux_core.config import FluxConfig
    from flux_core.trainer import FluxTrainer

    config = FluxConfig.from_yaml(args.config, overrides=args.overrides)
    if args.accelerate_config:
        return _relaunch_under_accelerate(args.accelerate_config, _without_option(args.argv, "--accelerate-config"))
    from flux_core.report.background import PlotHelper
    from flux_core.run.preemption import EXIT_STATUS, Preempted

    plot_helper = PlotHelper() if _is_main_process() else None  # imports matplotlib while the run starts
    trainer = FluxTrainer(config, show_progress=not args.no_progress)
    try:
        result = trainer.fit(
            prompts=(args.data[0] if len(args.data) == 1 else args.data) if args.data else config.data,
            eval_data=args.eval_data,
            resume=args.resume,
            overwrite=args.overwrite,
            allow_data_change=args.allow_data_change,
        )
    except Preempted as preempted:  # SIGTERM: checkpoint-N is written; say how to go on
        if _is_main_process():
            print(f"flux: preempted at step {preempted.step}; resume with: {_resume_command(args)}", file=sys.stderr)
        return EXIT_STATUS
    if not _is_main_process() or result.already_finished:  # a finished run said so in one line
        return 0
    print(
        f"flux: trained {result.steps} steps, final loss {result.final_loss:.4f}; "
        f"best: {result.best_path}; final: {result.final_path}"
    )
    _report_run(config.output_dir, plot_helper=plot_helper, algorithm=config.algorithm.name)
    return 0


def _report_run(output_dir: str, out: str | None = None, plot_helper: Any = None, algorithm: str | None = None) -> None:
    """Draw ``metrics.jsonl`` (in ``plot_helper``'s process when given), say where the picture is, and print
    the tutorial's warning signs."""
    from flux_core.report.diagnostics import diagnose, read_metrics
    from flux_core.report.plot import plot_run

    picture = plot_helper.draw(output_dir, out, algorithm) if plot_helper else plot_run(output_dir, out, algorithm)
    print(f"flux: plot: {picture}")
    for warning in diagnose(read_metrics(Path(output_dir) / METRICS_FILE, warn=False)):  # plotting warned
        print(f"flux: warning: {warning}", file=sys.stderr)


def _eval(args: argparse.Namespace) -> int:
    from flux_core.evaluate import check_checkpoint, checkpoint_config, evaluate, table, write_report

    config = checkpoint_config(args.checkpoint, args.config)
    if args.compare:
        check_checkpoint(args.compare)  # before the first checkpoint's evaluation
    results = {args.checkpoint: evaluate(config, args.checkpoint, args.data, args.reward)}
    if args.compare:
        results[args.compare] = evaluate(config, args.compare, args.data, args.reward)
    print(table(results))
    for sample in results[args.checkpoint].get("samples", []):
        print(f"  {sample['prompt']!r} -> {sample['completion']!r} (reward {sample['reward']})")
    report = Path(args.out) if args.out else Path(args.checkpoint) / EVAL_FILE
    write_report(report, results)
    print(f"flux: eval: {report}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from flux_core.config import FluxConfig
    from flux_core.data.preview import preview_data, render_json, render_terminal, wants_colour

    config = FluxConfig.from_yaml(args.config, overrides=args.overrides)
    preview = preview_data(config, args.data or config.data, args.num_examples)
    print(render_json(preview) if args.json else render_terminal(preview, wants_colour(args.color, sys.stdout)))
    return 0


def _plot(args: argparse.Namespace) -> int:
    _report_run(args.output_dir, args.out)
    return 0


def _load_for_generation(checkpoint: str):
    """The tokenizer and model at ``checkpoint`` (a run's checkpoint directory, a model directory or a hub id)."""
    from flux_core.modeling import check_model_directory, load_model, load_tokenizer, looks_local, resolve_precision
    from flux_core.run.checkpoint import resolve_checkpoint

    path = checkpoint
    if looks_local(path):
        path = str(resolve_checkpoint(path))
        check_model_directory(Path(path))  # before the seconds spent importing transformers
    from flux_core.quiet import quiet_libraries

    with quiet_libraries():
        return load_tokenizer(path), load_model(path, resolve_precision("auto"))


def _sampling_options(args: argparse.Namespace) -> dict:
    """The options of ``_add_generation_options`` that ``flux_core.generation.generation_settings`` takes."""
    names = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")
    return {name: getattr(args, name) for name in names}


def _generate(args: argparse.Namespace) -> int:
    from flux_core.generation import check_prompt, generate_samples, generation_settings

    options = {**_sampling_options(args), "num_samples": args.num_samples}
    check_prompt(args.prompt)  # these fail before the seconds spent loading the model
    generation_settings(**options)
    tokenizer, model = _load_for_generation(args.checkpoint)
    samples = generate_samples(model, tokenizer, args.prompt, raw=args.raw, system=args.system, **options)
    for number, sample in enumerate(samples, start=1):
        if len(samples) > 1:
            print(f"--- sample {number} of {len(samples)} ---")
        print(sample)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from flux_core.chat import chat
    from flux_core.generation import generation_settings

    options = _sampling_options(args)
    generation_settings(**options)  # before the seconds spent loading the model
    tokenizer, model = _load_for_generation(args.checkpoint)
    chat(model, tokenizer, system=args.system, **options)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from flux_core import hookspecs
    from flux_core.plugins import failed_plugins, list_plugins
    from flux_core.registry import get_registry

    print("Plugins:")
    for info in list_plugins():
        origin = f"{info.distribution} {info.version}" if info.distribution else "built-in"
        print(f"  {info.name} ({origin}): {', '.join(info.hooks)}")
    for failure in failed_plugins:
        print(f"  {failure.name} ({failure.distribution}): FAILED TO LOAD: {failure.error}")
    registry = get_registry()
    print("Algorithms:")
    for name, algorithm in sorted(registry.algorithms.items()):
        print(f"  {name}: {algorithm.description} [data_format={algorithm.data_format}]")
    print("Losses:")
    by_algorithm: dict[str, list[str]] = {}
    for (algorithm_name, loss_name), loss in sorted(registry.losses.items()):
        suffix = "" if loss.plugin == registry.owner("algorithm", algorithm_name) else f" ({loss.plugin})"
        by_algorithm.setdefault(algorithm_name, []).append(loss_name + suffix)
    for algorithm_name, names in by_algorithm.items():
        print(f"  {algorithm_name}: {', '.join(names)}")
    print("Rewards:")
    print("  " + (", ".join(f"{name} ({r.plugin})" for name, r in sorted(registry.rewards.items())) or "none"))
    if args.hooks:
        import inspect

        print("Hooks:")
        for name in sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "flux_spec")):
            function = getattr(hookspecs, name)
            print(f"  {name}{inspect.signature(function)}")
            print("      " + (inspect.getdoc(function) or "").replace("\n", "\n      "))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flux_core.online.serve import resolve_api_key, serve

    serve(
        args.model_dir,
        host=args.host,
        port=args.port,
        precision=args.precision,
        seed=args.seed,
        api_key=resolve_api_key(args.api_key),
        allow_unauthenticated=args.allow_unauthenticated,
        weights_root=args.weights_root,
        max_body_mb=args.max_body_mb,
        request_timeout=args.request_timeout,
        max_queued_requests=args.max_queued_requests,
    )
    return 0


def _new_plugin(args: argparse.Namespace) -> int:
    from flux_core.new_plugin import new_plugin

    target = new_plugin(args.name, args.kind, args.directory)
    print(f"flux: wrote the {args.kind} plugin {args.name} to {target}")
    print(f"  next: cd {target} && pip install -e '.[test]' && pytest   (then `flux plugins` lists it)")
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from flux_core.testing import build_tiny_model

    path = build_tiny_model(args.directory, hidden_size=args.hidden_size, num_layers=args.layers, seed=args.seed)
    print(f"flux: wrote tiny model and tokenizer to {path}")
    return 0


COMMANDS = {
    "data": _data,
    "eval": _eval,
    "plot": _plot,
    "train": _train,
    "generate": _generate,
    "chat": _chat,
    "plugins": _plugins,
    "serve": _serve,
    "tiny-model": _tiny_model,
    "new-plugin": _new_plugin,
}


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"flux: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from flux_core.installation import flux_package_problem

    if shadowed := flux_package_problem():  # PyPI's unrelated flux-core also installs a `flux` package
        print(f"flux: warning: {shadowed}", file=sys.stderr)
    args = _parser().parse_args(argv)
    args.argv = argv
    if args.command is None:
        _parser().print_help()
        return 0
    if not args.debug:
        warnings.showwarning = _one_line_warning
    from flux_core.errors import FluxError

    try:
        return COMMANDS[args.command](args)
    except FluxError as error:
        if args.debug:
            raise
        print(f"flux: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flux: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except Exception as error:  # unexpected: still one line, traceback on --debug
        if args.debug:
            raise
        print(f"flux: error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
