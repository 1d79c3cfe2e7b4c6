"""Data loading at scale: Flux's load + normalise + check vs ``datasets.load_dataset`` alone.

Writes synthetic preference files (100k and 1M pairs by default), then runs each job in
a fresh process with a fresh ``datasets`` cache and reports wall time and peak RSS:

- ``load_dataset``: ``datasets.load_dataset("json", data_files=FILE, split="train")``, the floor;
- ``flux``: ``flux_core.data.load.load_data(FILE, "preferences")`` (the same load, plus Flux's checks);
- ``flux, cached``: the same call again on a warm cache (what a second run pays);
- ``flux, hh shape``: HH-RLHF-shaped pairs, whose implicit prompts need a normalising map.

Targets (issue #9): Flux's peak RSS within 1.2x of ``load_dataset`` alone, time within 1.5x.

    python benchmarks/bench_data.py            # 100k and 1M pairs (a few minutes, ~0.5 GB of files)
    python benchmarks/bench_data.py --quick    # 20k pairs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

JOB = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
import datasets
from flux_core.data.load import load_data
datasets.disable_progress_bars()
start = time.perf_counter()
if kind == "load_dataset":
    rows = len(datasets.load_dataset("json", data_files=path, split="train"))
else:
    rows = len(load_data(path, "preferences"))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_pairs(path: Path, count: int, shape: str) -> None:
    from make_preferences import SHAPES, make_pairs

    base = make_pairs(1000, seed=0)
    with path.open("w") as handle:
        for index in range(count):
            pair = dict(base[index % len(base)])
            pair["prompt"] = f"{pair['prompt']} (#{index})"  # distinct rows, as in real data
            handle.write(json.dumps(SHAPES[shape](pair, index)) + "\n")


def run_job(kind: str, path: Path, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", JOB, kind, str(path)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(count: int, workdir: Path, repeats: int) -> list[tuple[str, dict]]:
    explicit, hh = workdir / f"pairs-{count}.jsonl", workdir / f"hh-{count}.jsonl"
    write_pairs(explicit, count, "explicit")
    write_pairs(hh, count, "hh")
    size_mb = explicit.stat().st_size / 2**20
    print(
        f"{count:,} pairs: {size_mb:.0f} MB of JSON lines; median of {repeats} runs, each in a fresh process",
        flush=True,
    )
    jobs = [
        ("load_dataset alone", "load_dataset", explicit, "a"),
        ("flux load_data", "flux", explicit, "b"),
        ("flux load_data, cached", "flux", explicit, "b"),
        ("flux load_data, hh shape", "flux", hh, "c"),
    ]
    runs: dict[str, list[dict]] = {label: [] for label, *_ in jobs}
    for repeat in range(repeats):  # interleaved, so load on the machine hits every job alike
        for label, kind, path, cache in jobs:
            runs[label].append(run_job(kind, path, workdir / f"cache-{count}-{repeat}-{cache}"))
    results = []
    for label, measured in runs.items():
        result = {key: statistics.median(run[key] for run in measured) for key in ("seconds", "peak_rss_mb")}
        results.append((label, result))
        print(f"  {label:28s} {result['seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB", flush=True)
    for path in (explicit, hh):
        path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k pairs only")
    parser.add_argument("--pairs", type=int, nargs="*", help="pair counts (default 100000 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each job; medians are reported (default 3)")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    counts = args.pairs or ([20_000] if args.quick else [100_000, 1_000_000])
    with tempfile.TemporaryDirectory(prefix="flux-bench-data-") as directory:
        for count in counts:
            results = dict(measure(count, Path(directory), args.repeats))
            floor, flux = results["load_dataset alone"], results["flux load_data"]
            time_ratio = flux["seconds"] / floor["seconds"]
            rss_ratio = flux["peak_rss_mb"] / floor["peak_rss_mb"]
            print(
                f"  flux / load_dataset: time {time_ratio:.2f}x (target <= 1.5), "
                f"peak RSS {rss_ratio:.2f}x (target <= 1.2)",
                flush=True,
            )


if __name__ == "__main__":
    main()
