"""Weight sync through `flux serve`: seconds per SGLangBackend.sync_weights, and where they go.

For each model size: start `flux serve MODEL --port 0` (127.0.0.1), load the same model in
this process, then sync it ``--repeats`` times. Reports the median of the whole sync, of
writing the safetensors file (``write_weights``) and of the server's
``/update_weights_from_disk`` (reading the file and copying it into the live model). The
models are random-init tiny Qwen3 ones (``flux tiny-model``): tiny = hidden 128 / 2
layers; 24m = hidden 512 / 10 layers (~24M parameters, ~96 MB in fp32).

    python benchmarks/bench_weight_sync.py [--repeats 5] [--sizes tiny 24m]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"tiny": (128, 2), "24m": (512, 10)}


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    flux = str(Path(sys.executable).with_name("flux"))
    process = subprocess.Popen(
        # weights are written beside the model (WORKDIR/SIZE-weights): the server may read them there
        [flux, "serve", str(model_dir), "--port", "0", "--weights-root", str(model_dir.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 180
    for line in process.stdout:  # the URL line comes once the model is loaded
        if "http://127.0.0.1:" in line:
            return process, line[line.index("http://") :].strip()
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit(f"flux serve {model_dir} did not start")


def measure(size: str, repeats: int, workdir: Path) -> dict[str, float]:
    from flux_core.modeling import load_model, load_tokenizer
    from flux_core.online.sglang import SGLangBackend, write_weights
    from flux_core.testing import build_tiny_model

    hidden, layers = SIZES[size]
    model_dir = build_tiny_model(workdir / size, hidden_size=hidden, num_layers=layers, seed=0)
    model = load_model(str(model_dir))
    parameters = sum(p.numel() for p in model.parameters())
    process, url = start_server(model_dir)
    try:
        backend = SGLangBackend(url, load_tokenizer(str(model_dir)), [0], workdir / f"{size}-weights")
        totals, writes, loads = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            backend.sync_weights(model)
            totals.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_weights(model, backend.weights_dir)
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            backend.pool.servers[0].post("/update_weights_from_disk", {"model_path": str(backend.weights_dir)})
            loads.append(time.perf_counter() - started)
        backend.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "parameters": parameters,
        "sync": statistics.median(totals),
        "write": statistics.median(writes),
        "load": statistics.median(loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print("| model | parameters | sync (median) | write safetensors | server load |")
        print("|---|---|---|---|---|")
        for size in args.sizes:
            row = measure(size, args.repeats, Path(workdir))
            print(
                f"| {size} | {row['parameters'] / 1e6:.1f}M | {row['sync']:.3f} s | {row['write']:.3f} s "
                f"| {row['load']:.3f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
