# Flux: `make install` then `make test`. Everything runs on CPU.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard flux_plugins/*)
TINY_MODEL := .cache/tiny-model

.PHONY: install test test-fast demo demo-grpo demo-ppo demo-rlhf bench gpu-check gpu-wheels dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Idempotent. torch is pinned first so no multi-GB CUDA build is pulled in.
install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,qlora]" $(foreach plugin,$(PLUGINS),-e $(plugin))
	@# The core was the distribution `flux-core` before 0.1.0 was published as flux-train; PyPI's flux-core is
	@# another project whose `flux` package would shadow Flux's. Either way it has to go (then flux-train's
	@# `flux` command, which the uninstall removed too, is put back).
	@if $(BIN)/pip show --quiet flux-core 2>/dev/null; then \
		$(BIN)/pip uninstall --quiet --yes flux-core && $(BIN)/pip install --quiet --no-deps --force-reinstall -e .; fi
	@$(BIN)/flux plugins

# One worker per core (-n auto; 2 on a 2-core machine: 14-20 min for the ~1180 tests of a fresh clone, as the
# machine's speed moved on 2026-12-07; the project's CI measured 15 min); loadscope keeps each test
# module, and its module-scoped fixtures (GRPO's 120-step run), on one worker. WORKERS=0: serial.
WORKERS ?= auto
test:
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadscope

# Unit tests only (no model loads, no training runs): about a minute. Tests that load a
# model are marked `slow` by tests/conftest.py, end-to-end subprocess tests by hand.
test-fast:
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not slow"

$(TINY_MODEL)/config.json:
	$(BIN)/flux tiny-model $(TINY_MODEL)

# Each demo starts fresh: Flux refuses to train over a previous run's checkpoints.
demo: $(TINY_MODEL)/config.json
	$(BIN)/python examples/make_preferences.py examples/preferences.jsonl --pairs 256
	sed 's|^model_path: |model_path: ../|' configs/dpo-demo.yaml > examples/dpo-config.yaml  # the tutorial runs in examples/
	rm -rf examples/outputs/dpo
	cd examples && ../$(BIN)/python dpo_tutorial.py

demo-grpo: $(TINY_MODEL)/config.json
	$(BIN)/python examples/make_prompts.py examples/prompts.jsonl --prompts 256
	rm -rf outputs/grpo-demo
	$(BIN)/python examples/online_demo.py configs/grpo-demo.yaml

# Same prompts and reward as demo-grpo; online_demo.py runs any online algorithm.
demo-ppo: $(TINY_MODEL)/config.json
	$(BIN)/python examples/make_prompts.py examples/prompts.jsonl --prompts 256
	rm -rf outputs/ppo-demo
	$(BIN)/python examples/online_demo.py configs/ppo-demo.yaml

# The RLHF pipeline: SFT on the demo pairs' chosen replies, a reward model on the pairs, then PPO from the
# SFT model against that reward model; prints SFT loss, reward-model accuracy and PPO's reward rising.
demo-rlhf: $(TINY_MODEL)/config.json
	$(BIN)/python examples/make_preferences.py examples/preferences.jsonl --pairs 256
	rm -rf outputs/sft-demo outputs/rm-demo outputs/rlhf-ppo-demo
	$(BIN)/python examples/rlhf_demo.py

bench: $(TINY_MODEL)/config.json
	$(BIN)/python benchmarks/run.py

# On a machine with a CUDA GPU: the suite, the demos, every configs/accelerate/*.yaml (1 process)
# and the 0.5B DPO bench, then one table (scripts/gpu_check.sh; FLUX_PYTHON=python3 for a non-venv install).
gpu-check:
	scripts/gpu_check.sh

# On a machine with PyPI access: wheels for a CUDA machine without it, into dist/gpu-wheels.
gpu-wheels:
	PYTHON=$(BIN)/python scripts/gpu_wheels.sh

# An sdist and a wheel of flux-train and of every flux_plugins/* into dist/ (python -m build builds each
# wheel from its sdist, in an isolated environment), then twine's check of what PyPI will show.
# BUILD_FLAGS=--no-isolation builds with this venv's setuptools instead of downloading one.
BUILD_FLAGS ?=
dist:
	rm -f dist/*.whl dist/*.tar.gz
	$(foreach source,. $(PLUGINS),$(BIN)/python -m build --quiet $(BUILD_FLAGS) --outdir dist $(source) &&) true
	$(BIN)/twine check --strict dist/*.whl dist/*.tar.gz

clean:
	rm -rf outputs examples/outputs .cache
