"""Checkpoints of an FSDP-sharded model load with plain from_pretrained.

On a GPU, ``flux train --accelerate-config configs/accelerate/fsdp.yaml`` failed writing its
first checkpoint: ``save_pretrained`` on FSDP2's shards raises "Attempted to access the data
pointer on an invalid python storage". accelerate 1.15 runs no FSDP on CPU: it keeps a CPU
launch ``MULTI_CPU`` and wraps the model in DDP (accelerate/state.py promotes only GPU-like
types to FSDP). torch's FSDP2 itself runs on CPU over gloo, so these tests use it directly
(the 2-process test) or let accelerate's FSDP2 path through with a one-line patch to that
promotion (the end-to-end test), in processes that see no GPU.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

BIN = Path(sys.executable).parent

HARNESS = """
import json, sys
from pathlib import Path

import torch
import torch.distributed as dist
from peft import LoraConfig, PeftModel, get_peft_model
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer

from flux_core.errors import FluxError
from flux_core.run.checkpoint import save_model
from flux_core.run.fsdp import full_state_dict, is_sharded

model_dir, out, lora = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "lora"
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir)
initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
if lora:
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
for layer in model.get_base_model().model.layers if lora else model.model.layers:
    fully_shard(layer)
fully_shard(model)
ids = torch.arange(1, 17).reshape(2, 8)  # the same batch on every rank
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
model(input_ids=ids, labels=ids).loss.backward()
optimizer.step()
with torch.no_grad():
    logits = model(input_ids=ids).logits  # a collective: every rank runs it
report = {"sharded": is_sharded(model), "world": world}
if rank == 0:  # saving from one process without gathering on every rank must refuse, not hang
    try:
        save_model(model, AutoTokenizer.from_pretrained(model_dir), out / "alone")
    except FluxError as error:
        report["refused"] = str(error)
gathered = full_state_dict(model)  # every rank takes part; the main one gets the weights
if rank == 0:
    save_model(model, AutoTokenizer.from_pretrained(model_dir), out, weights=gathered)
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        report["max_logit_diff"] = (loaded(input_ids=ids).logits - logits).abs().max().item()
        if lora:
            adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter")
            report["adapter_logit_diff"] = (adapter.eval()(input_ids=ids).logits - logits).abs().max().item()
    report["changed"] = sum(not torch.equal(initial[k], v) for k, v in loaded.state_dict().items())
    report["keys_match"] = sorted(loaded.state_dict()) == sorted(initial)
else:
    report["other_ranks_get"] = len(gathered)
print("REPORT " + json.dumps(report), flush=True)
"""


def run_sharded(tmp_path: Path, model_dir: Path, processes: int, lora: bool = False) -> list[dict]:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    out = tmp_path / "checkpoint"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU, GPU box or not
    result = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            str(processes),
            str(script),
            str(model_dir),
            out,
            "lora" if lora else "full",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == processes, result.stdout
    return reports


# Lets accelerate's FSDP through on CPU: the state it would build on a GPU, FSDP instead of MULTI_CPU.
FORCE_FSDP_ON_CPU = """
import accelerate.state
from accelerate.utils import DistributedType

_init = accelerate.state.AcceleratorState.__init__


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin


accelerate.state.AcceleratorState.__init__ = _init_fsdp_on_cpu
"""


def shipped_fsdp_config(tmp_path: Path, mixed_precision: str) -> Path:
    """configs/accelerate/fsdp.yaml (FSDP2) at one process, with ``mixed_precision`` set."""
    shipped = (REPO / "configs" / "accelerate" / "fsdp.yaml").read_text()
    assert "num_processes: 8" in shipped and "mixed_precision: bf16" in shipped
    path = tmp_path / f"accelerate-fsdp-{mixed_precision}.yaml"
    path.write_text(
        shipped.replace("num_processes: 8", "num_processes: 1").replace(
            "mixed_precision: bf16", f"mixed_precision: '{mixed_precision}'"
        )
    )
    return path


def ran_under_fsdp(output: Path) -> bool:
    """Whether the run's checkpoint-2 holds accelerate's FSDP resume files (its model, full or sharded)."""
    return any(path.name.startswith("pytorch_model_fsdp") for path in (output / "checkpoint-2").iterdir())


def flux_train(tmp_path, tiny_model_dir, preferences_file, name: str, *extra: str, steps: int = 4):
    """``flux train`` a small fp32 DPO run (copy reference) on CPU; its output dir, per-step metrics and stderr."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(FORCE_FSDP_ON_CPU)
    output = tmp_path / name
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {output}\nnum_steps: {steps}\nbatch_size: 4\n"
        "learning_rate: 5.0e-4\nmax_length: 96\nprecision: fp32\nalgorithm: {name: dpo, reference_policy: copy}\n"
        "checkpoint: {save_steps: 2}\n"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    command = [str(BIN / "flux"), "train", str(config), "--data", str(preferences_file), "--no-progress", *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return output, metrics, result.stderr


def test_flux_train_under_fsdp2_writes_checkpoints_that_equal_a_plain_run(tmp_path, tiny_model_dir, preferences_file):
    import torch
    from transformers import AutoModelForCausalLM

    accelerate_config = shipped_fsdp_config(tmp_path, "no")  # fp32 on both sides: exact comparison

    def train(name: str, *extra: str) -> tuple[Path, list[float], str]:
        output, metrics, stderr = flux_train(tmp_path, tiny_model_dir, preferences_file, name, *extra)
        return output, [m["loss"] for m in metrics], stderr

    sharded, sharded_losses, _ = train("fsdp", "--accelerate-config", str(accelerate_config))
    assert ran_under_fsdp(sharded)
    plain, plain_losses, _ = train("plain")

    assert sharded_losses == pytest.approx(plain_losses, abs=1e-6)
    assert sharded_losses[-1] < sharded_losses[0]  # it trained
    for name in ("checkpoint-2", "best", "final"):
        got = AutoModelForCausalLM.from_pretrained(sharded / name).state_dict()
        expected = AutoModelForCausalLM.from_pretrained(plain / name).state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.allclose(got[key], expected[key], atol=1e-6) for key in got), name


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_process_fsdp_checkpoint_gathers_on_every_rank_and_loads_with_from_pretrained(
    tmp_path, tiny_model_dir, lora
):
    reports = run_sharded(tmp_path, tiny_model_dir, processes=2, lora=lora)
    main = next(report for report in reports if "max_logit_diff" in report)
    other = next(report for report in reports if report is not main)
    assert main["sharded"] and main["world"] == 2
    assert main["refused"].startswith("saving an FSDP model with 2 processes from one of them: ")
    assert other["other_ranks_get"] == 0  # the full weights go to the main process only
    assert main["keys_match"]  # every weight, under its usual name (LoRA: merged into them)
    assert main["changed"] > 0  # the trained weights, not the initial ones
    assert main["max_logit_diff"] < 1e-5  # the reloaded model computes what the sharded one did
    if lora:
        assert main["adapter_logit_diff"] < 1e-5  # adapter/ on the base model too


def test_fsdp2_with_bf16_mixed_precision_starts_at_ln2(tmp_path, tiny_model_dir, preferences_file):
    # The shipped config's mixed_precision: bf16. accelerate runs an FSDP2 policy without autocast;
    # the reference must run the same way, or step 1 (policy == reference) is not ln 2.
    accelerate_config = shipped_fsdp_config(tmp_path, "bf16")
    output, metrics, _ = flux_train(
        tmp_path, tiny_model_dir, preferences_file, "fsdp-bf16", "--accelerate-config", str(accelerate_config), steps=2
    )
    assert ran_under_fsdp(output)
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[1]["loss"] < metrics[0]["loss"]
