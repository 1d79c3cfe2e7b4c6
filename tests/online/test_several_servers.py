"""GRPO generating on two `flux serve` processes (127.0.0.1, free ports), one killed with SIGKILL mid-run and
restarted on its port a step later: it rejoins at the next weight sync, holding the trained weights."""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from make_prompts import make_prompts
from test_serve import grpo_config, start_server

from flux_core.online import server_pool
from flux_core.trainer import FluxTrainer

STEPS = 6
KILLED_AFTER_STEP = 2
RESTARTED_AFTER_STEP = 3


@pytest.fixture(scope="module")
def two_server_run(tiny_model_dir, tmp_path_factory):
    """A short GRPO run on [survivor, doomed]; doomed is killed (-9) after step KILLED_AFTER_STEP and started
    again on its port (from the base model) after RESTARTED_AFTER_STEP."""
    output_dir = tmp_path_factory.mktemp("two-servers")
    flags = ("--weights-root", str(output_dir))
    with ThreadPoolExecutor(2) as pool:
        survivor, doomed = pool.map(lambda _: start_server(tiny_model_dir, *flags), range(2))
    with survivor, doomed, contextlib.ExitStack() as restarted, pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_pool, "REJOIN_PROBE_SECONDS", 0.0)  # ask at every sync (30 s in a real run)
        sglang = {"base_url": [survivor.url, doomed.url], "timeout": 30, "max_retries": 1, "max_concurrency": 2}
        config = grpo_config(tiny_model_dir, output_dir, survivor.url, num_steps=STEPS, sglang=sglang)
        trainer = FluxTrainer(config, show_progress=False)
        seen: dict = {}

        def kill_then_restart(result) -> None:
            if result.step == KILLED_AFTER_STEP:
                seen.update(doomed=doomed.health(), survivor=survivor.health())
                doomed.process.kill()
                doomed.process.wait(timeout=15)
            elif result.step == RESTARTED_AFTER_STEP:
                seen["survivor_at_restart"] = survivor.health()
                port = urlparse(doomed.url).port
                seen["back"] = restarted.enter_context(start_server(tiny_model_dir, *flags, port=port))

        trainer.add_step_callback(kill_then_restart)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = trainer.fit(prompts=make_prompts(16, seed=0))
        return {
            "result": result,
            "warnings": [str(warning.message) for warning in caught if "rollout server" in str(warning.message)],
            "at_kill": {"doomed": seen["doomed"], "survivor": seen["survivor"]},
            "survivor_at_restart": seen["survivor_at_restart"],
            "survivor_end": survivor.health(),
            "back_end": seen["back"].health(),
            "doomed_url": doomed.url,
            "output_dir": output_dir,
        }


def test_training_continues_on_the_other_server_and_completes(two_server_run):
    result = two_server_run["result"]
    assert len(result.metric("reward")) == STEPS
    assert (two_server_run["output_dir"] / "final" / "config.json").is_file()


def test_the_dead_server_is_dropped_with_one_warning_and_its_return_is_one_more(two_server_run):
    dropped, back = two_server_run["warnings"]
    assert dropped.startswith(f"rollout server at {two_server_run['doomed_url']} failed POST /")
    assert dropped.endswith("dropped it; rollouts continue on the 1 other server")
    assert back == (
        f"rollout server at {two_server_run['doomed_url']} is back: it loaded the current weights and takes rollouts "
        "again (2 servers)"
    )


def test_the_restarted_server_loaded_the_weights_and_served_rollouts(two_server_run):
    back = two_server_run["back_end"]  # a new process: its counters start at its restart
    assert back["weight_updates"] >= 1 and back["generate_requests"] > 0


def test_requests_were_shared_before_the_kill_and_went_to_the_survivor_after(two_server_run):
    at_kill, survivor_end = two_server_run["at_kill"], two_server_run["survivor_end"]
    assert at_kill["doomed"]["generate_requests"] > 0 and at_kill["survivor"]["generate_requests"] > 0
    assert survivor_end["generate_requests"] > at_kill["survivor"]["generate_requests"]
    # Both loaded every weight sync until the kill; the survivor kept loading them after it.
    assert at_kill["doomed"]["weight_updates"] == at_kill["survivor"]["weight_updates"] >= KILLED_AFTER_STEP
    assert survivor_end["weight_updates"] > at_kill["survivor"]["weight_updates"]


def test_every_step_was_sampled_by_a_server_holding_the_trained_weights(two_server_run):
    # |log pi_old - log mu| per token: a server that missed a weight sync would show a large difference.
    differences = two_server_run["result"].metric("sampling_sampling_logp_difference_max")
    assert len(differences) == STEPS and max(differences) < 1e-4
