"""One run per output_dir: the lock, refusing a previous run, --overwrite, leftover cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeConfig

from flux_core.run import checkpoint
from flux_core.run.directory import OutputDirBusy, PreviousRunError, RunDirectory, open_run_dir
from flux_core.trainer import FluxTrainer

BIN = Path(sys.executable).parent
HOLD_LOCK = (
    "import sys, time\n"
    "from flux_core.run.directory import RunDirectory\n"
    "RunDirectory(sys.argv[1]).lock()\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding the run lock of tmp_path/'outputs' (the way a running `flux train` does)."""
    output = tmp_path / "outputs"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    holder.kill()
    holder.wait()


def dead_pid() -> int:
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(finished.stdout)


def no_model_loads(monkeypatch):
    import flux_dpo.runner

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(flux_dpo.runner, "load_model", refuse)


def config_file(tmp_path, tiny_model_dir, **extra) -> Path:
    path = tmp_path / "dpo.yaml"
    lines = [
        f"model_path: {tiny_model_dir}",
        f"output_dir: {tmp_path / 'outputs'}",
        "num_steps: 2",
        "batch_size: 4",
        "learning_rate: 5.0e-4",
        "max_length: 96",
        "algorithm: {name: dpo}",
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def flux_train(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "flux"), "train", *args, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


# ---------------------------------------------------------------------- the lock


def test_a_second_run_on_a_locked_output_dir_fails_at_once_naming_the_pid(
    lock_holder, tmp_path, tiny_model_dir, preferences_file
):
    result = flux_train(str(config_file(tmp_path, tiny_model_dir)), "--data", str(preferences_file))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"another flux run (pid {lock_holder.pid}) is using this output_dir" in result.stderr
    assert not (tmp_path / "outputs" / "metrics.jsonl").exists()


def test_fit_fails_before_loading_a_model_while_another_run_holds_the_lock(
    lock_holder, dpo_config, preference_records, monkeypatch
):
    no_model_loads(monkeypatch)
    with pytest.raises(OutputDirBusy, match=f"pid {lock_holder.pid}"):
        FluxTrainer(dpo_config(num_steps=1), show_progress=False).fit(prompts=preference_records)


def test_the_lock_is_released_when_the_run_ends_even_by_an_error(tmp_path):
    with pytest.raises(RuntimeError), open_run_dir(tmp_path / "out"):
        raise RuntimeError("run failed")
    with open_run_dir(tmp_path / "out"), pytest.raises(OutputDirBusy, match=f"pid {os.getpid()}"):  # free again
        RunDirectory(tmp_path / "out").lock()


# ---------------------------------------------------------------------- a previous run


def test_a_previous_run_is_refused_and_overwrite_replaces_it(dpo_config, preference_records, monkeypatch):
    config = dpo_config(num_steps=2)
    output = Path(config.output_dir)
    (output / "checkpoint-4").mkdir(parents=True)
    (output / "checkpoint-4" / "config.json").write_text("{}")
    (output / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (output / ".flux-cache").mkdir()
    (output / ".flux-cache" / "ref-logps-x.pt").write_text("cache")

    with monkeypatch.context() as patch:
        no_model_loads(patch)
        with pytest.raises(PreviousRunError) as error:
            FluxTrainer(config, show_progress=False).fit(prompts=preference_records)
    message = str(error.value)
    assert "holds a previous run (checkpoint-4, metrics.jsonl)" in message
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    assert (output / "checkpoint-4" / "config.json").exists()  # refusing touches nothing

    result = FluxTrainer(config, show_progress=False).fit(prompts=preference_records, overwrite=True)
    assert result.steps == 2
    assert sorted(p.name for p in output.iterdir()) == [".flux-cache", ".flux.lock", "best", "final", "metrics.jsonl"]
    assert [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (output / ".flux-cache" / "ref-logps-x.pt").read_text() == "cache"  # not a checkpoint: kept


def test_the_cli_refuses_a_previous_run_in_one_line_and_overwrite_replaces_it(
    tmp_path, tiny_model_dir, preferences_file
):
    config = config_file(tmp_path, tiny_model_dir)
    output = tmp_path / "outputs"
    (output / "best").mkdir(parents=True)
    (output / "best" / "config.json").write_text('{"old": true}')

    refused = flux_train(str(config), "--data", str(preferences_file))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert f"flux: error: {output} holds a previous run (best)" in refused.stderr

    replaced = flux_train(str(config), "--data", str(preferences_file), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert "old" not in json.loads((output / "best" / "config.json").read_text())


# ---------------------------------------------------------------------- leftovers of killed runs


def test_startup_removes_temp_dirs_of_dead_runs_and_restores_an_orphaned_best(tmp_path):
    output = tmp_path / "outputs"
    pid = dead_pid()
    staged = output / f".checkpoint-3.tmp-{pid}"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    (output / f".metrics.jsonl.tmp-{pid}").write_text("partial")
    aside = output / f".best.old-{pid}"  # killed between the two renames of a best swap
    aside.mkdir()
    (aside / "config.json").write_text('{"best": 1}')
    (output / f".final.old-{pid}").mkdir()  # final/ itself is in place: the aside is just garbage
    (output / "final").mkdir()
    (output / ".flux-cache").mkdir()
    (output / ".flux-cache" / f".ref-logps-x.pt.tmp-{pid}").write_text("partial")

    with open_run_dir(output, resume=True):
        left = sorted(p.name for p in output.iterdir())
        assert left == [".flux-cache", ".flux.lock", "best", "final"]
        assert json.loads((output / "best" / "config.json").read_text()) == {"best": 1}
        assert list((output / ".flux-cache").iterdir()) == []


def test_overwrite_never_leaves_a_half_deleted_checkpoint_under_its_name(tmp_path, monkeypatch):
    output = tmp_path / "outputs"
    for name in ("checkpoint-2", "best"):
        (output / name).mkdir(parents=True)
        (output / name / "config.json").write_text("{}")
    from flux_core.run import directory as run_dir

    real_remove = run_dir._remove
    removed = []

    def killed_on_second_delete(entry):
        if entry.exists():
            removed.append(entry.name)
            if len(removed) == 2:
                raise KeyboardInterrupt
        real_remove(entry)

    monkeypatch.setattr(run_dir, "_remove", killed_on_second_delete)
    with pytest.raises(KeyboardInterrupt), open_run_dir(output, overwrite=True):
        pass
    assert removed[0].startswith(".checkpoint-2.tmp-")  # renamed away before it was deleted
    for name in ("checkpoint-2", "best"):
        assert not (output / name).exists() or (output / name / "config.json").exists()
    monkeypatch.undo()
    with open_run_dir(output, overwrite=True):
        assert sorted(p.name for p in output.iterdir()) == [".flux.lock"]


def fake_save(tag):
    def save(model, tokenizer, directory, weights=None):
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_text(tag)

    return save


def test_replacing_best_never_leaves_a_moment_without_best(tmp_path, monkeypatch):
    best = tmp_path / "best"
    monkeypatch.setattr(checkpoint, "save_model", fake_save("one"))
    checkpoint.write_checkpoint(best, None, None, FakeConfig(), {"step": 1})
    seen = []
    real_replace, real_rmtree = os.replace, checkpoint.shutil.rmtree

    def watched(function):
        def call(*args, **kwargs):
            seen.append((best / "model.safetensors").exists())
            result = function(*args, **kwargs)
            seen.append((best / "model.safetensors").exists())
            return result

        return call

    monkeypatch.setattr(checkpoint.os, "replace", watched(real_replace))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", watched(real_rmtree))
    monkeypatch.setattr(checkpoint, "save_model", fake_save("two"))
    checkpoint.write_checkpoint(best, None, None, FakeConfig(), {"step": 2})
    assert seen and all(seen)
    assert (best / "model.safetensors").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
