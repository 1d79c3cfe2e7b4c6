#!/usr/bin/env bash
# A separate venv with TRL 1.12 (the last release with PPOTrainer) for benchmarks/bench_ppo.py's
# side-by-side comparison. Never a Flux dependency: Flux itself runs on current TRL.
# torch is pinned FIRST (CPU wheel, same version as Flux's venv) so pip does not pull a CUDA build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TRL112_VENV:-$here/.venv-trl112}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet "trl==1.12.*"
"$venv/bin/python" -c "import torch, transformers, trl; from trl.experimental.ppo import PPOTrainer" 2>/dev/null \
    || "$venv/bin/python" -c "import torch, transformers, trl; from trl import PPOTrainer"
"$venv/bin/python" -c "import torch, transformers, trl; print('trl', trl.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
