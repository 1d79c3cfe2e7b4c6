"""Data loading at scale: Flux's load + normalise + check vs ``datasets.load_dataset`` alone.

Writes synthetic preference files (100k and 1M pairs by default), then runs each job in
a fresh process with a fresh ``datasets`` cache and reports wall time and peak RSS:

- ``load_dataset``: ``datasets.load_dataset("json", data_files=FILE, split="train")``, the floor;
- ``flux``: ``flux_core.data.load.load_data(FILE, "preferences")`` (the same load, plus Flux's checks);
- ``flux, cached``: the same call again on a warm cache (what a second run pays);
- ``flux, hh shape``: HH-RLHF-shaped pairs, whose implicit prompts need a normalising map;
- a mixture of the same number of pairs in 3 files (50/30/20%): ``load_dataset`` of the 3
  files at once (the floor), against Flux's ``data: [{path, weight}, ...]`` (each file read,
  checked, then interleaved by weight) and the plain list (concatenated).

Targets (issues #9, #23): Flux's peak RSS within 1.2x of ``load_dataset`` alone, time within
1.5x (single files); the mixture's peak RSS within 1.2x, its time reported.

    python benchmarks/bench_data.py            # 100k and 1M pairs (a few minutes, ~1 GB of files)
    python benchmarks/bench_data.py --quick    # 20k pairs
    python benchmarks/bench_data.py --pairs 1000000 --only mixture
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
import json, resource, sys, time, warnings
kind, paths = sys.argv[1], json.loads(sys.argv[2])
import datasets
from flux_core.config import FluxConfig
from flux_core.data.load import load_data, load_training_data
datasets.disable_progress_bars()
warnings.simplefilter("ignore")
start = time.perf_counter()
if kind == "load_dataset":
    rows = len(datasets.load_dataset("json", data_files=paths, split="train"))
elif kind == "flux":
    rows = len(load_data(paths[0], "preferences"))
else:  # a mixture: weighted (interleaved) or concatenated
    weights = [0.5, 0.3, 0.2] if kind == "flux_weighted" else [None] * len(paths)
    data = [{"path": path, "weight": weight} for path, weight in zip(paths, weights)]
    config = FluxConfig.from_dict({"model_path": "m", "algorithm": {"name": "dpo"}, "data": data, "seed": 0})
    rows = len(load_training_data(config, "preferences")[0])
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


def run_job(kind: str, paths: Path | list[Path], cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    files = json.dumps([str(path) for path in (paths if isinstance(paths, list) else [paths])])
    done = subprocess.run([sys.executable, "-c", JOB, kind, files], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_interleaved(jobs: list[tuple], count: int, workdir: Path, repeats: int) -> list[tuple[str, dict]]:
    """Each job ``(label, kind, paths, cache)`` ``repeats`` times, interleaved so that load on the machine hits
    every job alike; the medians of time and peak RSS, printed and returned."""
    runs: dict[str, list[dict]] = {label: [] for label, *_ in jobs}
    for repeat in range(repeats):
        for label, kind, paths, cache in jobs:
            runs[label].append(run_job(kind, paths, workdir / f"cache-{count}-{repeat}-{cache}"))
    results = []
    for label, measured in runs.items():
        result = {key: statistics.median(run[key] for run in measured) for key in ("seconds", "peak_rss_mb")}
        result["rows"] = measured[0]["rows"]
        results.append((label, result))
        print(
            f"  {label:34s} {result['seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB  "
            f"({result['rows']:,} rows)",
            flush=True,
        )
    return results


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
    results = run_interleaved(jobs, count, workdir, repeats)
    for path in (explicit, hh):
        path.unlink()
    return results


def measure_mixture(count: int, workdir: Path, repeats: int) -> list[tuple[str, dict]]:
    """``count`` pairs in 3 files (50/30/20%): load_dataset of all 3 vs Flux's weighted and concatenated mixtures."""
    shares = (0.5, 0.3, 0.2)
    paths = [workdir / f"mix-{count}-{index}.jsonl" for index in range(len(shares))]
    for path, share in zip(paths, shares):
        write_pairs(path, round(count * share), "explicit")
    size_mb = sum(path.stat().st_size for path in paths) / 2**20
    print(f"{count:,} pairs in 3 files (50/30/20%, {size_mb:.0f} MB): median of {repeats} runs", flush=True)
    jobs = [
        ("load_dataset, 3 files", "load_dataset", paths, "mix-a"),
        ("flux mixture, weights .5/.3/.2", "flux_weighted", paths, "mix-b"),
        ("flux mixture, concatenated", "flux_concatenated", paths, "mix-c"),
    ]
    results = run_interleaved(jobs, count, workdir, repeats)
    for path in paths:
        path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k pairs only")
    parser.add_argument("--pairs", type=int, nargs="*", help="pair counts (default 100000 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each job; medians are reported (default 3)")
    parser.add_argument(
        "--only", choices=["single", "mixture"], help="only the single-file jobs, or only the 3-source mixture"
    )
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    counts = args.pairs or ([20_000] if args.quick else [100_000, 1_000_000])
    with tempfile.TemporaryDirectory(prefix="flux-bench-data-") as directory:
        for count in counts:
            if args.only != "mixture":
                results = dict(measure(count, Path(directory), args.repeats))
                report_ratios(results["load_dataset alone"], results["flux load_data"], "flux / load_dataset", 1.5)
            if args.only != "single":
                results = dict(measure_mixture(count, Path(directory), args.repeats))
                floor = results["load_dataset, 3 files"]
                report_ratios(floor, results["flux mixture, weights .5/.3/.2"], "weighted mixture / load_dataset")
                report_ratios(floor, results["flux mixture, concatenated"], "concatenated mixture / load_dataset")


def report_ratios(floor: dict, flux: dict, what: str, time_target: float | None = None) -> None:
    time_ratio = flux["seconds"] / floor["seconds"]
    rss_ratio = flux["peak_rss_mb"] / floor["peak_rss_mb"]
    target = f" (target <= {time_target})" if time_target else ""
    print(f"  {what}: time {time_ratio:.2f}x{target}, peak RSS {rss_ratio:.2f}x (target <= 1.2)", flush=True)


if __name__ == "__main__":
    main()
