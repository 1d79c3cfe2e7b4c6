"""PPO under a 2-process launch (torchrun, gloo on CPU) matches one process with the same
global batch: per-step metrics, eval at save points (a collective) and the final weights.

``batch_size`` is per process, so 2 processes x 4 prompts are one process x 8. Sampling is
made comparable with ``seed_per_prompt: true``: each prompt's completions are drawn under a
seed derived from (seed, step, the prompt's index in the global batch), so a prompt gets the
same completions whichever process samples it. (Greedy decoding is no option: PPO's
``temperature`` must be > 0, its log-probs divide by it.) The processes see no GPU even on a
GPU machine, and both runs pin fp32; what remains between them is the order of float sums
(other matmul batch shapes, gloo's all-reduce of the gradients), far below the tolerances.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from paths import REPO
from safetensors.torch import load_file

BIN = Path(sys.executable).parent
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
STEPS = 3
COMPARED = ("loss", "policy_loss", "value_loss", "reward", "kl", "entropy", "approx_kl", "value_explained_variance")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "examples"))
    from make_prompts import make_prompts

    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in make_prompts(32, seed=0)))
    return path


@pytest.fixture
def early_stopping_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with 40 more end-of-sequence ids (~8% of its near-uniform samples): its
    completions end at varied lengths, so the processes' shares of a minibatch hold different
    token counts, which the loss scaling under DDP must account for."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    generation = json.loads((model / "generation_config.json").read_text())
    generation["eos_token_id"] = [0, 2, *range(3, 43)]
    (model / "generation_config.json").write_text(json.dumps(generation))
    return model


def train(
    tmp_path: Path,
    name: str,
    model: Path,
    data: Path,
    launcher: list[str],
    batch_size: int,
    seed_per_prompt: bool = True,
    extra: tuple[str, ...] = (),
):
    config = tmp_path / f"{name}.yaml"
    output = tmp_path / name
    config.write_text(
        f"model_path: {model}\noutput_dir: {output}\nnum_steps: {STEPS}\nbatch_size: {batch_size}\n"
        "learning_rate: 1.0e-3\nprecision: fp32\nseed: 0\ncheckpoint: {save_steps: 2}\n"
        f"algorithm:\n  name: ppo\n  seed_per_prompt: {str(seed_per_prompt).lower()}\n  num_generations: 2\n"
        "  max_completion_length: 8\n  ppo_epochs: 2\n  num_minibatches: 2\n"
        "  rewards: [{name: pattern_fraction, kwargs: {pattern: '[eE]'}}]\n"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [*launcher, str(BIN / "flux"), "train", str(config), "--data", str(data), "--eval-data", str(data)]
        + ["--no-progress", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **CPU_ONLY},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return result.stdout, lines, output, time.perf_counter() - started


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, early_stopping_model, prompts_file):
    model = early_stopping_model
    _, single, single_dir, _ = train(tmp_path, "single", model, prompts_file, [], batch_size=8)
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]  # binds a free port itself
    stdout, double, output, _ = train(tmp_path, "double", model, prompts_file, torchrun, batch_size=4)

    # one metrics line per step, written by one process
    assert [line["step"] for line in double] == [line["step"] for line in single] == list(range(1, STEPS + 1))
    for one, two in zip(single, double):
        for name in COMPARED:
            assert two[name] == pytest.approx(one[name], abs=1e-4), (one["step"], name)
        # the whole global rollout: 8 prompts x 2 completions, seen by both runs alike
        assert two["completion_length"] == pytest.approx(one["completion_length"], abs=1e-6)
    assert single[-1]["reward"] != single[0]["reward"]  # the steps differ: the comparison is not of constants
    assert all(0 < line["truncated_fraction"] < 1 for line in single)  # completions of varied lengths

    # the final weights agree, and they moved away from the start (the updates were applied)
    start = load_file(model / "model.safetensors")
    one = load_file(single_dir / "final" / "model.safetensors")
    two = load_file(output / "final" / "model.safetensors")
    assert one.keys() == two.keys()
    assert max((one[name] - two[name]).abs().max().item() for name in one) < 1e-4
    assert max((one[name] - start[name]).abs().max().item() for name in one if name in start) > 1e-3

    # best/ was picked by the same eval reward (gathered over both processes' shares)
    meta = [json.loads((run / "best" / "flux_checkpoint.json").read_text()) for run in (single_dir, output)]
    assert meta[1]["step"] == meta[0]["step"]
    assert meta[1]["score"] == pytest.approx(meta[0]["score"], abs=1e-4)

    assert stdout.count("flux: trained 3 steps") == 1  # only the main process prints
    assert sorted(p.name for p in output.iterdir()) == [
        ".flux.lock",
        "best",
        "checkpoint-2",
        "final",
        "metrics.jsonl",
        "metrics.png",
    ]
    assert torch.load(output / "checkpoint-2" / "ppo_state" / "ppo.pt", weights_only=True)["kl_coef"] > 0


def test_a_two_process_run_resumes_with_each_rank_s_own_random_state(tmp_path, early_stopping_model, prompts_file):
    """Without ``seed_per_prompt`` each rank samples from its own random stream, so checkpoint-N holds one RNG
    state per rank (random_states_0.pkl, random_states_1.pkl) and a resumed rank continues its own: step 3
    trained again from checkpoint-2 is step 3 of the uninterrupted run."""
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _, whole, output, _ = train(tmp_path, "run", early_stopping_model, prompts_file, torchrun, 4, seed_per_prompt=False)
    state = sorted(p.name for p in (output / "checkpoint-2" / "ppo_state").iterdir())
    assert "random_states_0.pkl" in state and "random_states_1.pkl" in state
    resume = ("--resume", str(output / "checkpoint-2"))
    _, again, _, _ = train(
        tmp_path, "run", early_stopping_model, prompts_file, torchrun, 4, seed_per_prompt=False, extra=resume
    )
    assert [line["step"] for line in again] == [1, 2, 3]
    for name in COMPARED:
        assert again[2][name] == pytest.approx(whole[2][name], abs=1e-6), name
    assert whole[2]["reward"] != whole[1]["reward"]  # the steps differ: the comparison is not of constants
