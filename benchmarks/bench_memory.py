"""``gradient_checkpointing: auto`` calibration: the memory estimate against measurements.

1. The H100 measurements of issue #16 (a 0.44B Qwen3, DPO, bf16, max_length 512, no
   checkpointing) against the old and the new estimate: computed, no GPU needed.
2. CPU: training-phase resident memory growth of a DPO run without checkpointing (peak
   RSS during steps 2..N minus RSS when ``train()`` starts, i.e. after the model, the data
   and the precomputed reference log-probs are loaded) against the estimate's
   ``beyond_weights`` (gradients + Adam + activations + LM head), at two batch sizes.

Each CPU measurement is a fresh subprocess. glibc is told to serve every allocation of
64 KiB or more with its own mapping and to give freed memory back at once
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so RSS follows live tensors
instead of the allocator's cache.

    python benchmarks/bench_memory.py            # both parts (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / ".cache" / "bench-models"
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}

# Issue #16: one H100 80GB (79.2 GiB), a random Qwen3 with Qwen3-0.6B's layers and the
# tiny tokenizer's vocabulary, DPO pairs of ~120-480 tokens, max_length 512, bf16,
# precomputed reference, no checkpointing; peak torch.cuda.max_memory_allocated in GiB.
H100_CONFIG = {
    "vocab_size": 512,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": False,
}
H100_TOTAL_GIB = 79.2
H100_MEASURED_GIB = {32: 70.7, 36: 77.4}
H100_CHECKPOINTED_GIB = {48: 9.6}


def _current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """The process's resident-memory high-water mark (``VmHWM``) since the last :func:`_reset_peak_rss`."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: reset VmHWM to the current RSS


def long_pairs(count: int, words: int = 200) -> list[dict]:
    """Pairs whose chosen and rejected answers both outrun any max_length below ~``words`` tokens,
    so every sequence is truncated to exactly max_length (the estimate's bound)."""
    sys.path.insert(0, str(REPO / "examples"))
    from make_preferences import make_pairs

    filler = " ".join(["the model explains each step with one clear example"] * (words // 8))
    return [
        {**pair, "chosen": f"{pair['chosen']} {filler}", "rejected": f"{pair['rejected']} {filler} lol"}
        for pair in make_pairs(count, seed=0)
    ]


def _measure(spec: dict, batch_size: int, output_dir: str) -> dict:
    """One DPO run without checkpointing: RSS when ``train()`` starts, peak RSS up to the last
    step's end (the kernel's high-water mark, reset at that start; step 1 holds no Adam state
    yet, so the peak is a later step's), and the estimate (bytes)."""
    import ctypes

    from flux_dpo.trainer import FluxDPOTrainer

    from flux import FluxConfig, FluxTrainer
    from flux_core.trl_based import memory

    libc = ctypes.CDLL("libc.so.6")
    marks: dict[str, int] = {}
    estimate: dict = {}
    original_train = FluxDPOTrainer.train

    def train(self, *args, **kwargs):
        found = memory.estimate_for_model(self.model, 2 * batch_size, spec["max_length"])
        estimate.update(found.__dict__, total=found.total, beyond_weights=found.beyond_weights)
        gc.collect()
        libc.malloc_trim(0)
        marks["baseline"] = _current_rss()
        _reset_peak_rss()
        return original_train(self, *args, **kwargs)

    def on_step(result):
        if result.step == spec["steps"]:
            marks["peak"] = _peak_rss()

    FluxDPOTrainer.train = train
    try:
        config = FluxConfig.from_dict(
            {
                "model_path": spec["model"],
                "output_dir": output_dir,
                "num_steps": spec["steps"],
                "batch_size": batch_size,
                "learning_rate": 1e-4,
                "max_length": spec["max_length"],
                "gradient_checkpointing": False,
                "algorithm": {"name": "dpo", "beta": 0.1, "reference_policy": "precompute"},
            }
        )
        trainer = FluxTrainer(config, show_progress=False)
        trainer.add_step_callback(on_step)
        trainer.fit(prompts=long_pairs(batch_size * spec["steps"]))
    finally:
        FluxDPOTrainer.train = original_train
    return {
        "batch_size": batch_size,
        "baseline": marks["baseline"],
        "peak": marks["peak"],
        "growth": marks["peak"] - marks["baseline"],
        "estimate": estimate,
    }


def worker(spec: dict) -> list[dict]:
    """``_measure`` for each of ``spec["batch_sizes"]``, one after the other in this process."""
    import torch

    torch.set_num_threads(1)
    results = []
    for index, batch_size in enumerate(spec["batch_sizes"]):
        results.append(_measure(spec, batch_size, os.path.join(spec["output_dir"], str(index))))
        gc.collect()
    return results


def run_worker(spec: dict, timeout: float = 600) -> list[dict]:
    """``worker(spec)`` in a fresh process with glibc set to return freed memory at once."""
    with tempfile.TemporaryDirectory() as output_dir:
        # A CPU measurement on a GPU machine too: with a GPU visible the activations would live there.
        env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **MALLOC_ENV}
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps({"output_dir": output_dir, **spec})],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_dir(hidden: int, layers: int, root: Path = MODELS) -> Path:
    path = root / f"qwen3-{hidden}x{layers}"
    if not (path / "config.json").exists():
        from flux_core.testing import build_tiny_model

        build_tiny_model(path, hidden_size=hidden, num_layers=layers)
    return path


def h100_table() -> None:
    from transformers import Qwen3Config

    from flux_core.trl_based.memory import SAFETY_MARGIN, count_parameters, estimate_training_memory

    config = Qwen3Config(**H100_CONFIG)
    parameters = count_parameters(config)
    print(f"\n1. H100 80GB ({H100_TOTAL_GIB} GiB), Qwen3 {parameters / 1e9:.2f}B, DPO, bf16, max_length 512 (GiB)")
    print(
        f"   {'batch':>5} {'old estimate':>13} {'new estimate':>13} {'x1.25':>7} {'measured':>9} {'new/measured':>13}"
    )
    for batch in (28, 32, 36, 38, 48):
        old = (parameters * 12 + 2 * batch * 512 * 28 * 1024 * 17 * 2) / 2**30  # the pre-#16 formula
        new = estimate_training_memory(
            config, parameters=parameters, dtype_bytes=2, sequences=2 * batch, tokens_per_sequence=512
        )
        measured = H100_MEASURED_GIB.get(batch)
        ratio = f"{new.total / 2**30 / measured:.3f}" if measured else ""
        print(
            f"   {batch:>5} {old:>13.1f} {new.total / 2**30:>13.1f} {new.total * SAFETY_MARGIN / 2**30:>7.1f} "
            f"{measured or '':>9} {ratio:>13}"
        )
    per_layer = new.per_layer_token
    print(f"   per token per layer: {per_layer} = {sum(per_layer.values())} bytes (old: 17 x 2 x 1024 = 34816)")
    for batch, measured in H100_CHECKPOINTED_GIB.items():
        new = estimate_training_memory(
            config, parameters=parameters, dtype_bytes=2, sequences=2 * batch, tokens_per_sequence=512
        )
        print(
            f"   with checkpointing, batch {batch}: estimate {new.checkpointed_total / 2**30:.1f}, measured {measured}"
        )


def cpu_table(hidden: int = 256, layers: int = 4, max_length: int = 128, batches=(4, 16)) -> list[dict]:
    model = model_dir(hidden, layers)
    print(f"\n2. CPU: Qwen3 hidden {hidden} x {layers} layers, fp32, DPO, max_length {max_length}, 3 steps (MiB)")
    print(f"   {'batch':>5} {'RSS growth':>11} {'estimate':>9} {'estimate/measured':>18}")
    results = run_worker({"model": str(model), "batch_sizes": list(batches), "max_length": max_length, "steps": 3})
    for result in results:
        estimate = result["estimate"]["beyond_weights"]
        print(
            f"   {result['batch_size']:>5} {result['growth'] / 2**20:>11.0f} {estimate / 2**20:>9.0f} "
            f"{estimate / result['growth']:>18.3f}"
        )
    return results


def main() -> None:
    h100_table()
    cpu_table()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
    else:
        main()
