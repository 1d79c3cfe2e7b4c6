"""DPO benchmarks: Flux vs raw TRL DPOTrainer, measured side by side in one run.

Every measurement is a fresh subprocess (so peak RSS is its own) on the same model,
data and seed, with TRL's defaults on both sides unless a row says otherwise:

1. overhead: same settings, median step time and peak memory (targets <= 1.02, <= 1.05), and
   the whole process: ``flux train`` against the raw TRL program for the same 120-step run,
   interleaved, wall time (target <= 1.02);
2. ``reference_policy: auto`` vs TRL's default, 3 epochs over 256 pairs: throughput
   (target >= 1.3x);
3. LoRA vs full fine-tuning peak memory above the import baseline on a ~50M model
   (target <= 0.6x);
4. packed vs padded collation on variable-length pairs: tokens/s;
5. precompute cache: time of the reference pass on a first and a second run;
6. ``compile: true`` vs off: step time after warm-up and the whole run.

    python benchmarks/bench_dpo.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_dpo.py --quick    # fewer repeats and steps
    python benchmarks/bench_dpo.py --model-size 0.5b   # 1, 2 and 4 only, on a ~0.5B random model (for a GPU)

Both sides run on the same device in the same precision: a CUDA GPU in bf16 (bf16 weights,
as Flux's ``precision: auto`` loads them) when there is one, else the CPU in fp32. On a GPU
the tables add the peak of ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / ".cache" / "bench-models"
MODEL_SIZES = {"tiny": (128, 2), "small": (256, 4), "50m": (640, 10), "0.5b": (1536, 24)}  # hidden size, layers


def _rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler(threading.Thread):
    """Samples resident memory every 5 ms: the training-phase peak, without load-time transients."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), _current_rss_mb()))
            time.sleep(0.005)

    def peak_between(self, start: float, end: float) -> float:
        return max((rss for at, rss in self.samples if start <= at <= end), default=float("nan"))


# ---------------------------------------------------------------------------- worker


def _worker(spec: dict) -> dict:
    """One run described by ``spec``; returns its measurements."""
    import torch  # (imported before the baseline so both sides pay it equally)
    import trl  # noqa: F401

    baseline_mb = _current_rss_mb()
    sampler = _RssSampler()
    sampler.start()
    records = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    stamps: list[float] = []
    started = time.perf_counter()
    if spec["kind"] == "flux":
        from flux_dpo.trainer import FluxDPOTrainer

        from flux import FluxConfig, FluxTrainer

        pass_seconds = []
        original = FluxDPOTrainer._precompute_ref_logps

        def timed(self, *args, **kwargs):
            begin = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                pass_seconds.append(time.perf_counter() - begin)

        FluxDPOTrainer._precompute_ref_logps = timed
        config = FluxConfig.from_dict(
            {
                "model_path": spec["model"],
                "output_dir": spec["output_dir"],
                "num_steps": spec["steps"],
                "batch_size": 8,
                "learning_rate": 5e-4,
                "max_length": 128,
                "algorithm": {"name": "dpo", "beta": 0.1, **spec.get("algorithm", {})},
                **spec.get("config", {}),
            }
        )
        trainer = FluxTrainer(config, show_progress=False)
        trainer.add_step_callback(lambda result: stamps.append(time.perf_counter()))
        result = trainer.fit(prompts=records, overwrite=spec.get("overwrite", False))
        tokens_per_second = statistics.median(result.metric("tokens_per_second")[5:] or [0.0])
        extra = {"reference_pass_s": sum(pass_seconds), "tokens_per_second": tokens_per_second}
    else:
        from datasets import Dataset
        from transformers import TrainerCallback

        class Stamp(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    stamps.append(time.perf_counter())

        _raw_trl_dpo_trainer(spec, Dataset.from_list(records), callbacks=[Stamp()]).train()
        extra = {}
    sampler.running = False
    intervals = [b - a for a, b in zip(stamps[5:], stamps[6:])]
    return {
        # from the end of step 1 (optimizer state exists) to the last step: no loading or saving
        "train_peak_rss_mb": sampler.peak_between(stamps[0], stamps[-1]) if stamps else float("nan"),
        "step_s": statistics.median(intervals) if intervals else float("nan"),
        "total_s": time.perf_counter() - started,
        "peak_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline_mb,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        **extra,
    }


# ---------------------------------------------------------------------------- driver


def _model(size: str) -> Path:
    path = MODELS / size
    if not (path / "config.json").exists():
        from flux_core.testing import build_tiny_model

        hidden, layers = MODEL_SIZES[size]
        build_tiny_model(path, hidden_size=hidden, num_layers=layers)
    return path


def _run(spec: dict, env_extra: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        spec = {"output_dir": spec.pop("output_dir", output_dir), **spec}
        env = {**os.environ, "TQDM_DISABLE": "1", **(env_extra or {})}
        env.setdefault("OMP_NUM_THREADS", "2")
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec, default=str)],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            raise RuntimeError(f"benchmark worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pairs(count: int, variable: bool = False) -> list[dict]:
    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_pairs

    pairs = make_pairs(count, seed=0)
    if variable:  # completions from a few tokens to ~100: padding then costs real compute
        pairs = [
            {
                **p,
                "chosen": p["chosen"] + " More detail follows." * (i % 7),
                "rejected": p["rejected"] + " lol" * (i % 5),
            }
            for i, p in enumerate(pairs)
        ]
    return pairs


def _write(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _gpu_mib(runs: list[dict]) -> str:
    """Median peak GPU memory of ``runs`` ("" on CPU)."""
    if runs[0]["peak_gpu_mib"] is None:
        return ""
    return f", peak GPU {_median(runs, 'peak_gpu_mib'):.0f} MiB"


def bench_overhead(data: Path, steps: int, repeats: int, size: str = "tiny") -> None:
    model = _model(size)
    runs: dict[str, list[dict]] = {"flux": [], "trl": []}
    for _ in range(repeats):
        for kind in ("trl", "flux"):  # alternate, so drift on a shared machine hits both
            spec = {"kind": kind, "model": model, "data": data, "steps": steps}
            # TRL's defaults on the Flux side too: a frozen reference copy, gradient checkpointing on
            spec.update(algorithm={"reference_policy": "copy"}, config={"gradient_checkpointing": True})
            runs[kind].append(_run(spec))
    flux_step, trl_step = _median(runs["flux"], "step_s"), _median(runs["trl"], "step_s")
    flux_mem, trl_mem = _median(runs["flux"], "peak_rss_mb"), _median(runs["trl"], "peak_rss_mb")
    print(f"\n1. Same settings ({size} model, batch 8, {steps} steps, median of {repeats} runs each)")
    print(f"   {'':10}{'step (ms)':>12}{'peak RSS (MB)':>16}")
    print(f"   {'raw TRL':10}{trl_step * 1e3:>12.2f}{trl_mem:>16.0f}")
    print(f"   {'Flux':10}{flux_step * 1e3:>12.2f}{flux_mem:>16.0f}")
    print(
        f"   Flux/TRL  time {flux_step / trl_step:.3f} (target <= 1.02)   memory {flux_mem / trl_mem:.3f} (target <= 1.05)"
    )
    if runs["flux"][0]["peak_gpu_mib"] is not None:
        print(f"   GPU memory: raw TRL{_gpu_mib(runs['trl'])[1:]}; Flux{_gpu_mib(runs['flux'])[1:]}")


def _raw_trl_dpo_trainer(spec: dict, train_dataset, callbacks=(), **settings):
    """An unmodified ``trl.DPOTrainer`` for ``spec``'s run: the benchmark's settings, ``settings`` on top, on
    Flux's device and precision rule (precision: auto), so both sides run on the same hardware."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = DPOConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=8,
        learning_rate=5e-4,
        max_length=128,
        beta=0.1,
        seed=42,
        bf16=bf16,
        use_cpu=not cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **settings,
    )
    return DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.bfloat16 if bf16 else torch.float32),
        args=args,
        train_dataset=train_dataset,
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        callbacks=list(callbacks),
    )


def _raw_trl_dpo(spec: dict) -> None:
    """The raw TRL program for the run ``flux train`` makes in :func:`bench_whole_process`: what a TRL
    user writes for it (load the JSON lines with datasets, train, save the model)."""
    from datasets import load_dataset

    data = load_dataset("json", data_files=spec["data"], split="train")
    trainer = _raw_trl_dpo_trainer(spec, data, gradient_checkpointing=False)
    trainer.train()
    trainer.save_model(str(Path(spec["output_dir"]) / "final"))


def _timed_process(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, its children included) of one process, start to exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{out.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_whole_process(data: Path, steps: int, repeats: int, size: str = "tiny") -> None:
    """``flux train`` vs the raw TRL program for the same run, each a whole process timed from start to
    exit (imports, data, model, training, saving; Flux also writes best/, model cards and metrics.png),
    in alternating order (ABBA), after one untimed 2-step run of each (warm caches)."""
    model = _model(size)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.setdefault("OMP_NUM_THREADS", "2")
    flux = str(Path(sys.executable).with_name("flux"))
    times: dict[str, list[tuple[float, float]]] = {"trl": [], "flux": []}
    with tempfile.TemporaryDirectory() as tmp:

        def command(kind: str, run_steps: int, name: str) -> list[str]:
            output_dir = Path(tmp) / name
            if kind == "trl":
                spec = {"model": str(model), "data": str(data), "steps": run_steps, "output_dir": str(output_dir)}
                return [sys.executable, __file__, "--raw-trl", json.dumps(spec)]
            config = Path(tmp) / f"{name}.yaml"
            config.write_text(
                f"model_path: {model}\noutput_dir: {output_dir}\nnum_steps: {run_steps}\nbatch_size: 8\n"
                "learning_rate: 5.0e-4\nmax_length: 128\ngradient_checkpointing: false\n"
                "algorithm: {name: dpo, beta: 0.1, reference_policy: copy}\n"
            )
            return [flux, "train", str(config), "--data", str(data), "--no-progress"]

        for kind in ("trl", "flux"):
            _timed_process(command(kind, 2, f"warm-{kind}"), env)
        for repeat in range(repeats):
            order = ("trl", "flux") if repeat % 2 == 0 else ("flux", "trl")
            for kind in order:
                times[kind].append(_timed_process(command(kind, steps, f"{kind}-{repeat}"), env))
    walls = {kind: [wall for wall, _ in runs] for kind, runs in times.items()}
    cpus = {kind: [cpu for _, cpu in runs] for kind, runs in times.items()}
    print(f"\n1b. Whole process, same settings ({size} model, batch 8, {steps} steps, copy reference, checkpointing")
    print(f"    off; `flux train` vs the raw TRL program, alternating, median of {repeats} each)")
    for kind, label in (("trl", "raw TRL"), ("flux", "flux train")):
        runs = ", ".join(f"{wall:.1f}" for wall in walls[kind])
        wall, cpu = statistics.median(walls[kind]), statistics.median(cpus[kind])
        print(f"    {label:11} wall {wall:6.1f} s ({runs})   CPU {cpu:6.1f} s")
    wall_ratio = statistics.median(walls["flux"]) / statistics.median(walls["trl"])
    cpu_ratio = statistics.median(cpus["flux"]) / statistics.median(cpus["trl"])
    print(f"    flux/TRL  wall {wall_ratio:.3f} (target <= 1.02)   CPU {cpu_ratio:.3f}")


def bench_auto_reference(data: Path, repeats: int, size: str = "small") -> None:
    model = _model(size)
    steps = 3 * 256 // 8  # three epochs over 256 pairs
    trl_runs, flux_runs = [], []
    for _ in range(repeats):
        trl_runs.append(_run({"kind": "trl", "model": model, "data": data, "steps": steps}))
        flux_runs.append(_run({"kind": "flux", "model": model, "data": data, "steps": steps}))
    trl_s, flux_s = _median(trl_runs, "total_s"), _median(flux_runs, "total_s")
    print("\n2. Flux defaults (reference_policy and gradient_checkpointing auto) vs TRL defaults")
    print(f"   ({size} model, 3 epochs = {steps} steps over 256 pairs; model load + tokenization + training)")
    print(
        f"   raw TRL (frozen copy + reference forward every step, checkpointing on): {trl_s:.1f} s, {steps * 8 / trl_s:.1f} pairs/s"
        f"{_gpu_mib(trl_runs)}"
    )
    print(
        f"   Flux auto (precompute once, checkpointing off when memory allows):     {flux_s:.1f} s, "
        f"{steps * 8 / flux_s:.1f} pairs/s (reference pass {_median(flux_runs, 'reference_pass_s'):.1f} s)"
        f"{_gpu_mib(flux_runs)}"
    )
    print(f"   throughput Flux/TRL {trl_s / flux_s:.2f}x (target >= 1.3x)")


def bench_lora_memory(data: Path) -> None:
    model = _model("50m")
    # Memory-minded settings on both sides: gradient checkpointing on (activations would
    # otherwise dominate both runs alike).
    # glibc keeps freed blocks mapped, so RSS would count the allocator's cache as live
    # memory; returning freed memory at once makes RSS track what the run really holds.
    malloc = {"MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "1"}
    spec = {"kind": "flux", "model": model, "data": data, "steps": 6}
    full = _run({**spec, "algorithm": {"reference_policy": "copy"}, "config": {"gradient_checkpointing": True}}, malloc)
    lora = _run({**spec, "config": {"gradient_checkpointing": True, "lora": {"r": 8, "alpha": 16}}}, malloc)
    hidden, layers = MODEL_SIZES["50m"]
    print(f"\n3. LoRA vs full fine-tune memory (hidden {hidden}, {layers} layers, ~50M parameters; batch 8,")
    print("   gradient checkpointing on in both; glibc told to return freed memory, so RSS is live memory)")
    print("   resident memory above the process's import baseline:")
    for name, key in (
        ("training steps 2..N peak", "train_peak_rss_mb"),
        ("whole-run peak incl. loading", "peak_rss_mb"),
    ):
        full_mb, lora_mb = full[key] - full["baseline_rss_mb"], lora[key] - lora["baseline_rss_mb"]
        print(f"   {name:32} full {full_mb:6.0f} MB   LoRA r=8 {lora_mb:6.0f} MB   LoRA/full {lora_mb / full_mb:.2f}")
    print("   (target <= 0.6; full = policy + frozen copy + grads + Adam state, LoRA = policy + adapters)")


def bench_packing(data: Path, steps: int, size: str = "small") -> None:
    model = _model(size)
    # both named: on CUDA the default (collation: auto) already packs
    spec = {"kind": "flux", "model": model, "data": data, "steps": steps}
    padded = _run({**spec, "algorithm": {"collation": "padded"}})
    packed = _run({**spec, "algorithm": {"collation": "packed"}})
    print(f"\n4. Packed vs padded collation ({size} model, variable-length pairs, {steps} steps)")
    print(f"   {'':8}{'tokens/s':>10}{'step (ms)':>11}{'reference pass (s)':>20}{'whole run (s)':>15}")
    for name, run in (("padded", padded), ("packed", packed)):
        print(
            f"   {name:8}{run['tokens_per_second']:>10.0f}{run['step_s'] * 1e3:>11.1f}"
            f"{run['reference_pass_s']:>20.1f}{run['total_s']:>15.1f}"
        )
    # tokens/s and step time skip the first 5 steps (compilation, for FlexAttention); the whole run counts them
    print(
        f"   packed/padded: tokens/s {packed['tokens_per_second'] / padded['tokens_per_second']:.2f}x, "
        f"whole run {packed['total_s'] / padded['total_s']:.2f}x"
    )


def bench_compile(data: Path, steps: int, size: str = "small") -> None:
    """``compile: true`` vs off: median step time after warm-up, and the whole run (compile included)."""
    model = _model(size)
    eager = _run({"kind": "flux", "model": model, "data": data, "steps": steps})
    compiled = _run({"kind": "flux", "model": model, "data": data, "steps": steps, "config": {"compile": True}})
    print(f"\n6. compile: true vs false ({size} model, batch 8, {steps} steps, Flux defaults otherwise)")
    print(f"   {'':10}{'median step (ms)':>18}{'whole run (s)':>16}")
    for name, run in (("eager", eager), ("compiled", compiled)):
        print(f"   {name:10}{run['step_s'] * 1e3:>18.1f}{run['total_s']:>16.1f}")
    print(
        f"   compiled/eager: step {compiled['step_s'] / eager['step_s']:.2f}x, "
        f"whole run {compiled['total_s'] / eager['total_s']:.2f}x (a default only if both are < 1)"
    )


def bench_precompute_cache(data: Path) -> None:
    model = _model("small")
    with tempfile.TemporaryDirectory() as output_dir:
        spec = {
            "kind": "flux",
            "model": model,
            "data": data,
            "steps": 2,
            "algorithm": {"reference_policy": "precompute"},
        }
        first = _run({**spec, "output_dir": output_dir})
        second = _run({**spec, "output_dir": output_dir, "overwrite": True})  # same cache, fresh checkpoints
    print("\n5. Precompute cache (small model, 256 pairs)")
    print(
        f"   reference pass: first run {first['reference_pass_s']:.2f} s, second run {second['reference_pass_s']:.3f} s"
    )


def main(quick: bool = False, model_size: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pairs = _write(Path(tmp) / "pairs.jsonl", _pairs(256))
        variable = _write(Path(tmp) / "variable.jsonl", _pairs(256, variable=True))
        if model_size is not None:  # the two Flux-vs-TRL comparisons at one size (e.g. 0.5b on a GPU)
            bench_overhead(pairs, steps=20 if quick else 40, repeats=1 if quick else 3, size=model_size)
            bench_auto_reference(pairs, repeats=1, size=model_size)
            bench_packing(variable, steps=10 if quick else 20, size=model_size)
            return
        bench_overhead(pairs, steps=20 if quick else 40, repeats=1 if quick else 3)
        bench_whole_process(pairs, steps=40 if quick else 120, repeats=1 if quick else 3)
        bench_auto_reference(pairs, repeats=1)
        bench_lora_memory(pairs)
        bench_packing(variable, steps=10 if quick else 20)
        bench_precompute_cache(pairs)
        bench_compile(pairs, steps=20 if quick else 40)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--raw-trl", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument(
        "--model-size",
        choices=sorted(MODEL_SIZES),
        help="run only 1 (same settings), 2 (defaults) and 4 (packing) on this random-init model; 0.5b: ~0.51B parameters "
        "(hidden 1536, 24 layers), meant for a GPU",
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
    elif args.raw_trl:
        _raw_trl_dpo(json.loads(args.raw_trl))
    else:
        main(quick=args.quick, model_size=args.model_size)
