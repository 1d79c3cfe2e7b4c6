#!/usr/bin/env bash
# Wheels for a CUDA machine without package access (as the H100/H200 images Flux was measured on: torch,
# transformers, accelerate, peft, pluggy, pyyaml, safetensors and tqdm installed, no `pip` script).
#
# Run on a machine WITH PyPI access, from the repository, after `make install`:
#
#     scripts/gpu_wheels.sh                    # -> dist/gpu-wheels/
#     scripts/gpu_wheels.sh --with-arrow       # also pyarrow + xxhash (when the GPU image lacks them;
#                                              #   pyarrow's wheels need glibc >= 2.28 there)
#     scripts/gpu_wheels.sh transformers peft  # also these packages, at the versions installed here
#     scripts/gpu_wheels.sh --dry-run          # print the versions and commands, download nothing
#
# It downloads wheels, at the exact versions installed in this checkout's environment, of the
# packages a stock CUDA image lacked (trl, datasets, pydantic, pydantic-core, annotated-types,
# typing-inspection, dill, multiprocess), builds deepspeed's wheel without compiled ops
# (DS_BUILD_OPS=0; it is an sdist), builds Flux's own wheels (flux-train and every
# flux_plugins/* package), and prints the command that installs them all on the offline machine.
#
# Environment: PYTHON (default .venv/bin/python), OUT (default dist/gpu-wheels), TARGET_PYTHON
# (default 3.12), TARGET_PLATFORM (default manylinux_2_17_x86_64), DEEPSPEED_VERSION (default:
# the version installed here, else 0.19.8, the one measured on an H100).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-dist/gpu-wheels}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
TARGET_PLATFORM=${TARGET_PLATFORM:-manylinux_2_17_x86_64}

dry_run=0
with_arrow=0
packages=(trl datasets pydantic pydantic-core annotated-types typing-inspection dill multiprocess)
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        --with-arrow)
            with_arrow=1
            packages+=(pyarrow xxhash)
            ;;
        -h | --help)
            awk 'NR > 1 && /^#/ && !/shellcheck/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        -*)
            echo "gpu_wheels: unknown option $arg (see --help)" >&2
            exit 2
            ;;
        *) packages+=("$arg") ;;
    esac
done

if [[ ! -x "$PYTHON" ]]; then
    echo "gpu_wheels: $PYTHON not found: run \`make install\` first, or set PYTHON" >&2
    exit 1
fi

installed_version() { # prints the installed version of $1, or nothing
    "$PYTHON" - "$1" <<'EOF'
import importlib.metadata, sys
try:
    print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
    pass
EOF
}

pins=()
for package in "${packages[@]}"; do
    version=$(installed_version "$package")
    if [[ -z "$version" ]]; then
        echo "gpu_wheels: $package is not installed in $PYTHON's environment: cannot pin its version" >&2
        exit 1
    fi
    pins+=("$package==$version")
done
deepspeed_version=${DEEPSPEED_VERSION:-$(installed_version deepspeed)}
deepspeed_version=${deepspeed_version:-0.19.8}
plugins=(flux_plugins/*/)

run() { # print a command; run it unless --dry-run
    echo "+ $*"
    if [[ $dry_run == 0 ]]; then "$@"; fi
}

echo "gpu_wheels: for Python $TARGET_PYTHON on $TARGET_PLATFORM into $OUT"
echo "gpu_wheels: pinned: ${pins[*]} deepspeed==$deepspeed_version"
[[ $dry_run == 1 ]] || mkdir -p "$OUT"

# 1. Released wheels, no dependencies: the versions above are the whole set that works here.
platforms=(--platform "$TARGET_PLATFORM")
if [[ $with_arrow == 1 ]]; then # pyarrow >= 21 ships manylinux_2_28 wheels only: glibc >= 2.28 there
    platforms+=(--platform manylinux_2_28_x86_64)
fi
run "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$TARGET_PYTHON" "${platforms[@]}" --dest "$OUT" "${pins[@]}"

# 2. deepspeed is an sdist: a pure-Python wheel without compiled ops (they are built at first use,
#    if ever). No build isolation: its setup.py imports torch, which isolation would download (GBs).
run env DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$OUT" \
    "deepspeed==$deepspeed_version"

# 3. Flux's own packages, built from copies: setuptools would leave build/ in the checkout, and a
#    stale build/lib would put modules deleted since into the next wheel.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
sources=("$stage/flux-train")
for plugin in "${plugins[@]}"; do
    sources+=("$stage/$(basename "$plugin")")
done
if [[ $dry_run == 0 ]]; then
    mkdir "$stage/flux-train"
    cp -r pyproject.toml README.md LICENSE MANIFEST.in flux flux_core "$stage/flux-train/"
    for plugin in "${plugins[@]}"; do
        name=$(basename "$plugin")
        cp -r "$plugin" "$stage/$name"
        rm -rf "$stage/$name/build" "$stage/$name"/*.egg-info
    done
fi
[[ $dry_run == 1 ]] || rm -f "$OUT"/flux_*.whl # a previous build's, e.g. of a plugin since removed
run "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$OUT" "${sources[@]}"

if [[ $dry_run == 0 ]]; then
    echo "gpu_wheels: $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT:"
    find "$OUT" -name '*.whl' -printf '  %f\n' | sort
fi
cat <<EOF

Copy this checkout, $OUT included, to the CUDA machine (it has torch, transformers, accelerate,
peft, pluggy, pyyaml, safetensors, tqdm); there, in the checkout:

    python3 -m pip install --no-index --no-deps $OUT/*.whl
    make gpu-check FLUX_PYTHON=python3

EOF
