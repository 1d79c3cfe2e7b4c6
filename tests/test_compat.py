"""The TRL canary (flux_core.compat): what each algorithm relies on in TRL is checked when a run starts.
A TRL outside the tested range runs with one warning naming the range; a relied-on piece that is missing
or changed stops the run in one line, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import trl
from trl import DPOTrainer, GRPOTrainer

from flux_core import FluxError, compat
from flux_core.compat import TESTED_TRL, check_trl, find_problem, is_tested_trl
from flux_core.registry import KNOWN_ALGORITHM_PACKAGES, get_registry, import_attribute

UNTESTED = "1.17.0"


def relied_on(algorithm: str) -> tuple:
    return import_attribute(get_registry().get_algorithm(algorithm).trl_relies_on)


@pytest.fixture
def untested_trl(monkeypatch):
    """The installed TRL, calling itself 1.17.0, in a process that has not warned about it yet."""
    monkeypatch.setattr(trl, "__version__", UNTESTED)
    monkeypatch.setattr(compat, "_warned_versions", set())


@pytest.mark.parametrize("algorithm", sorted(KNOWN_ALGORITHM_PACKAGES))
def test_every_algorithm_declares_what_it_relies_on_and_the_installed_trl_has_it(algorithm, monkeypatch):
    monkeypatch.setattr(compat, "_warned_versions", set())
    reliances = relied_on(algorithm)
    assert reliances, f"{algorithm} declares nothing it relies on in TRL"
    assert [find_problem(reliance) for reliance in reliances] == [None] * len(reliances)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_trl(reliances, owner=KNOWN_ALGORITHM_PACKAGES[algorithm])
    assert len(caught) == (0 if is_tested_trl(trl.__version__) else 1)


def test_the_tested_range_is_the_one_the_plugins_were_pinned_to():
    assert TESTED_TRL == ">=1.16,<1.17"
    assert is_tested_trl("1.16.0") and is_tested_trl("1.16.3")
    assert not is_tested_trl("1.17.0") and not is_tested_trl("1.15.2") and not is_tested_trl("unknown")


def test_an_untested_trl_with_every_piece_there_runs_with_one_warning(untested_trl):
    with pytest.warns(UserWarning) as caught:
        check_trl(relied_on("dpo"), owner="flux-dpo")
        check_trl(relied_on("dpo"), owner="flux-dpo")  # a second run in the same process: no second warning
    assert [str(warning.message) for warning in caught] == [
        f"TRL {UNTESTED} is outside the versions Flux was tested with (trl>=1.16,<1.17): what flux-dpo relies on "
        f"in TRL is all there, but results may differ from the tested versions': pip install 'trl>=1.16,<1.17' "
        "to be sure"
    ]


def test_a_missing_private_method_stops_in_one_line_naming_it(untested_trl, monkeypatch):
    monkeypatch.delattr(DPOTrainer, "_precompute_ref_logps")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(FluxError) as stop:
        warnings.simplefilter("always")
        check_trl(relied_on("dpo"), owner="flux-dpo")
    assert str(stop.value) == (
        f"flux-dpo cannot run on TRL {UNTESTED}: trl.DPOTrainer._precompute_ref_logps is missing (flux-dpo "
        "overrides it for its reference cache, reference-free DPO and plugin reference log-probs); install a "
        "tested TRL: pip install 'trl>=1.16,<1.17'"
    )
    assert caught == []  # the stop says it all


def test_a_changed_signature_stops_naming_both_signatures(untested_trl, monkeypatch):
    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", lambda self, dataset, split, batch_size: dataset)
    with pytest.raises(FluxError, match=r"^flux-dpo cannot run on TRL 1\.17\.0: ") as stop:
        check_trl(relied_on("dpo"), owner="flux-dpo")
    assert (
        "trl.DPOTrainer._precompute_ref_logps takes (self, dataset, split, batch_size), "
        "not (self, dataset, name, batch_size, ...)" in str(stop.value)
    )
    assert "\n" not in str(stop.value)


def test_a_private_method_trl_no_longer_calls_stops_rather_than_silently_skipping_the_override(
    untested_trl, monkeypatch
):
    # As if TRL renamed the call sites (its __init__ and evaluate are where it calls the reference pass):
    # flux-dpo's override would never run, and reference-free DPO would silently get a real reference.
    monkeypatch.setattr(DPOTrainer, "__init__", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(DPOTrainer, "evaluate", lambda self, *args, **kwargs: {})
    (reliance,) = [r for r in relied_on("dpo") if "_precompute_ref_logps" in r.uses]
    with pytest.raises(FluxError) as stop:
        check_trl([reliance], owner="flux-dpo")
    assert "TRL's code of trl.DPOTrainer no longer uses '_precompute_ref_logps'" in str(stop.value)


def test_a_keyword_the_trainer_no_longer_takes_stops(untested_trl, monkeypatch):
    def init_without_rollout_func(self, model, reward_funcs, args=None, train_dataset=None, eval_dataset=None,
                                  processing_class=None, callbacks=None, peft_config=None):  # fmt: skip
        pass

    monkeypatch.setattr(GRPOTrainer, "__init__", init_without_rollout_func)
    with pytest.raises(FluxError, match="trl.GRPOTrainer takes no keyword argument 'rollout_func' "):
        check_trl(relied_on("grpo"), owner="flux-grpo")


def test_flux_train_stops_in_one_line_before_the_run_starts(tmp_path, tiny_model_dir):
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n' * 4)
    (tmp_path / "config.yaml").write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'out'}\nnum_steps: 1\nbatch_size: 2\n"
        "algorithm: {name: dpo}\n"
    )
    code = textwrap.dedent(
        """
        import sys, trl
        trl.__version__ = "1.17.0"
        del trl.DPOTrainer._precompute_ref_logps
        from flux_core.cli import main
        sys.exit(main(["train", "config.yaml", "--data", "prefs.jsonl"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "flux: error: flux-dpo cannot run on TRL 1.17.0: trl.DPOTrainer._precompute_ref_logps is missing (flux-dpo "
        "overrides it for its reference cache, reference-free DPO and plugin reference log-probs); install a "
        "tested TRL: pip install 'trl>=1.16,<1.17'"
    ]
    assert not (tmp_path / "out").exists()  # stopped before the run opened its output_dir or loaded a model


def test_an_untested_trl_trains_with_one_warning_line(tmp_path, tiny_model_dir, preferences_file):
    (tmp_path / "config.yaml").write_text(
        f"model_path: {tiny_model_dir}\noutput_dir: {tmp_path / 'out'}\nnum_steps: 2\nbatch_size: 2\n"
        "max_length: 64\nalgorithm: {name: dpo}\n"
    )
    code = textwrap.dedent(
        f"""
        import sys, trl
        trl.__version__ = "1.17.0"
        from flux_core.cli import main
        sys.exit(main(["train", "config.yaml", "--data", {str(preferences_file)!r}, "--no-progress"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "TRL 1.17.0" in line]
    assert warned == [
        "flux: warning: TRL 1.17.0 is outside the versions Flux was tested with (trl>=1.16,<1.17): what flux-dpo "
        "relies on in TRL is all there, but results may differ from the tested versions': pip install "
        "'trl>=1.16,<1.17' to be sure"
    ]
    assert "trained 2 steps" in result.stdout


def test_a_trl_experimental_import_is_silent_and_one_line_when_trl_moved_it(monkeypatch):
    from flux_core import import_trl_experimental

    monkeypatch.delenv("TRL_EXPERIMENTAL_SILENCE", raising=False)
    for name in [name for name in sys.modules if name.startswith("trl.experimental")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh: TRL's notice would fire again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (trainer,) = import_trl_experimental("trl.experimental.cpo", "CPOTrainer", owner="flux-cpo")
    assert trainer.__name__ == "CPOTrainer"
    assert [str(warning.message) for warning in caught] == []  # TRL's "experimental" notice is not for Flux users

    monkeypatch.setattr(trl, "__version__", UNTESTED)
    with pytest.raises(FluxError) as stop:
        import_trl_experimental("trl.experimental.cpo", "SimPOTrainer", owner="flux-cpo")
    assert str(stop.value) == (
        f"flux-cpo cannot run on TRL {UNTESTED}: it needs SimPOTrainer from trl.experimental.cpo, which this TRL "
        "does not have (module 'trl.experimental.cpo' has no attribute 'SimPOTrainer'); install a tested TRL: "
        "pip install 'trl>=1.16,<1.17'"
    )
