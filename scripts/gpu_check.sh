#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: everything the CPU-only CI cannot check.
#
#     make gpu-check                              # or scripts/gpu_check.sh [STEP...]
#     FLUX_PYTHON=python3 make gpu-check          # Flux installed into another interpreter
#                                                 #   (e.g. from scripts/gpu_wheels.sh's wheels)
#
# Steps (all by default, or those named): suite, demos, accelerate, bench.
#   suite       the test suite on CUDA (`pytest -q -n 8`; the @pytest.mark.gpu tests run here; 287 s on an H200)
#   demos       make demo, demo-grpo, demo-ppo
#   accelerate  each configs/accelerate/*.yaml with num_processes: 1 on a tiny 4-step DPO run;
#               every checkpoint must load with plain from_pretrained and hold finite weights
#   bench       benchmarks/bench_dpo.py --model-size 0.5b (Flux vs raw TRL on a ~0.5B random model)
# Then ONE table of verdicts and numbers. Logs: $GPU_CHECK_OUT (default outputs/gpu-check).
# GPU_CHECK_QUICK=1 passes --quick to the bench; GPU_CHECK_WORKERS=N runs the suite on N pytest workers
# (default 8, sharing the GPU; 0: serially). Exit status: 0 when no step FAILed, 1 when one
# did, 2 when there is no CUDA GPU (nothing is run).
# shellcheck disable=SC2329  # the run_STEP functions are called by name, below
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [[ -z "${FLUX_PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then FLUX_PYTHON=.venv/bin/python; else FLUX_PYTHON=python3; fi
fi
OUT=${GPU_CHECK_OUT:-outputs/gpu-check}
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(suite demos accelerate bench)
for step in "${steps[@]}"; do
    case "$step" in
        suite | demos | accelerate | bench) ;;
        -h | --help)
            awk 'NR > 1 && /^#/ && !/shellcheck/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        *)
            echo "gpu_check: unknown step '$step' (steps: suite demos accelerate bench)" >&2
            exit 2
            ;;
    esac
done

# ------------------------------------------------------------------ is there a GPU at all?
if ! probe=$("$FLUX_PYTHON" - 2>&1 <<'EOF'
import sys
try:
    import torch
except ImportError as error:
    sys.exit(f"{sys.executable} cannot import torch ({error})")
if not torch.cuda.is_available():
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    sys.exit(f"torch {torch.__version__} ({build}) sees none (torch.cuda.is_available() is False)")
print(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF
); then
    echo "gpu_check: no CUDA GPU: ${probe##*$'\n'}; run this on a machine with one (benchmarks/README.md, GPU check)" >&2
    exit 2
fi
if ! "$FLUX_PYTHON" -c "import flux_core, trl, datasets" 2>/dev/null; then
    echo "gpu_check: $FLUX_PYTHON cannot import flux_core, trl and datasets: run make install, or install" \
        "scripts/gpu_wheels.sh's wheels, or set FLUX_PYTHON" >&2
    exit 1
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
echo "gpu_check: $probe; logs in $OUT"

# make's demos call $(VENV)/bin/python and $(VENV)/bin/flux, with VENV relative to the repository
# (`cd examples && ../$(VENV)/bin/python`): point a small relative VENV at FLUX_PYTHON. Wrappers,
# not symlinks, so a virtual environment's python still finds its pyvenv.cfg.
python_path=$(command -v "$FLUX_PYTHON")
[[ $python_path == /* ]] || python_path="$PWD/$python_path"
shim=.cache/gpu-check-env
mkdir -p "$shim/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$python_path" >"$shim/bin/python"
printf '#!/bin/sh\nexec "%s" -m flux_core.cli "$@"\n' "$python_path" >"$shim/bin/flux"
chmod +x "$shim/bin/python" "$shim/bin/flux"
PY="$PWD/$shim/bin/python"
FLUX="$PWD/$shim/bin/flux"

rows=()
failed=0
row() { # name verdict seconds numbers (printed at once too: a run cut short keeps the rows it finished)
    rows+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4")
    echo "gpu_check: $1: $2 in $3 s; $4"
    [[ $2 != FAIL ]] || failed=1
}
timed() { # log-name command...: run, log to $OUT/NAME.log, set $rc and $seconds
    local name=$1
    shift
    local start=$SECONDS
    echo "gpu_check: $name ..."
    "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    seconds=$((SECONDS - start))
}

# ------------------------------------------------------------------ steps
run_suite() {
    timed suite "$PY" -m pytest -q -p no:cacheprovider -n "${GPU_CHECK_WORKERS:-8}" --dist loadscope
    local summary
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$OUT/suite.log" | tail -1)
    summary=${summary//=/}
    row "pytest -q (CUDA)" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$seconds" "${summary# }"
}

run_demos() {
    local demo numbers
    for demo in demo demo-grpo demo-ppo; do
        timed "$demo" make --no-print-directory VENV="$shim" "$demo"
        if [[ $demo == demo ]]; then
            numbers=$(grep -E '^Final loss' "$OUT/$demo.log" | tail -1)
        else
            numbers=$(grep -E '^mean reward' "$OUT/$demo.log" | tail -1 | sed 's/^mean reward: //')
        fi
        row "make $demo" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$seconds" "$numbers"
    done
}

run_accelerate() {
    local dir="$OUT/accelerate" file name config verdict numbers
    mkdir -p "$dir"
    make --no-print-directory VENV="$shim" .cache/tiny-model/config.json >"$dir/tiny-model.log" 2>&1
    "$PY" examples/make_preferences.py "$dir/preferences.jsonl" --pairs 64 >/dev/null
    for file in configs/accelerate/*.yaml; do
        name=$(basename "$file" .yaml)
        if grep -q 'distributed_type: DEEPSPEED' "$file" && ! "$PY" -c "import deepspeed" 2>/dev/null; then
            row "accelerate $name" SKIP 0 "deepspeed not installed (scripts/gpu_wheels.sh builds it)"
            continue
        fi
        sed 's/^num_processes:.*/num_processes: 1/' "$file" >"$dir/$name.yaml"
        config="$dir/$name-dpo.yaml"
        rm -rf "$dir/$name-run"
        cat >"$config" <<EOF
model_path: $PWD/.cache/tiny-model
output_dir: $dir/$name-run
num_steps: 4
batch_size: 8
learning_rate: 5.0e-4
max_length: 128
algorithm: {name: dpo}
checkpoint: {save_steps: 2}
EOF
        timed "accelerate-$name" "$FLUX" train "$config" --data "$dir/preferences.jsonl" --no-progress \
            --accelerate-config "$dir/$name.yaml"
        verdict=FAIL
        numbers="train exit $rc (see accelerate-$name.log)"
        if [[ $rc == 0 ]]; then
            numbers=$("$PY" - "$dir/$name-run" 2>>"$OUT/accelerate-$name.log" <<'EOF'
import json, math, sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

run = Path(sys.argv[1])
names = ["checkpoint-2", "checkpoint-4", "best", "final"]
loaded = 0
for name in names:
    try:
        model = AutoModelForCausalLM.from_pretrained(run / name)
    except Exception as error:  # any failure to load is the verdict
        print(f"{name} does not load: {type(error).__name__}", file=sys.stderr)
        continue
    loaded += all(bool(torch.isfinite(p).all()) for p in model.parameters())
losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
note = "" if abs(losses[0] - math.log(2)) < 1e-3 else " (not ln 2 = 0.6931!)"
print(f"{loaded}/{len(names)} load; step-1 loss {losses[0]:.4f}{note}, step-4 {losses[-1]:.4f}")
sys.exit(0 if loaded == len(names) and not note else 1)
EOF
            )
            case $? in
                0) verdict=PASS ;;
                *) [[ $numbers == 4/4* ]] && verdict=WARN ;;
            esac
        fi
        row "accelerate $name (1 process)" "$verdict" "$seconds" "$numbers"
    done
}

run_bench() {
    local quick=()
    [[ -z ${GPU_CHECK_QUICK:-} ]] || quick=(--quick)
    timed bench "$PY" benchmarks/bench_dpo.py --model-size 0.5b "${quick[@]}"
    local overhead throughput memory
    overhead=$(grep -E 'Flux/TRL +time' "$OUT/bench.log" | sed -E 's/ +\(target[^)]*\)//g; s/^ +//')
    throughput=$(grep -E 'throughput Flux/TRL' "$OUT/bench.log" | sed -E 's/ \(target[^)]*\)//; s/^ +//')
    memory=$(grep -E 'GPU memory:' "$OUT/bench.log" | sed -E 's/^ +//')
    row "bench_dpo --model-size 0.5b" "$([[ $rc == 0 ]] && echo PASS || echo FAIL)" "$seconds" \
        "$overhead; $throughput; $memory"
}

for step in "${steps[@]}"; do
    "run_$step"
done

# ------------------------------------------------------------------ the table
echo
echo "GPU check: $probe ($(date -u '+%Y-%m-%d %H:%M UTC'))"
printf '%-36s %-7s %7s  %s\n' check verdict seconds numbers
printf '%-36s %-7s %7s  %s\n' ------------------------------------ ------- ------- -------
for line in "${rows[@]}"; do
    IFS=$'\t' read -r name verdict seconds numbers <<<"$line"
    printf '%-36s %-7s %7s  %s\n' "$name" "$verdict" "$seconds" "$numbers"
done
echo "logs: $OUT"
exit "$failed"
