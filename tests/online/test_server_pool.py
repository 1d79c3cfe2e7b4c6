"""Several rollout servers behind `sglang.base_url`: balanced requests, weights loaded by all, dead servers dropped.

The servers are httpx2 mock transports answering SGLang's shapes (see test_sglang_protocol.py); the run against
two real `flux serve` processes, one killed mid-run, is in test_several_servers.py.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import Counter

import httpx2
import pytest

from flux_core.config import FluxConfig
from flux_core.errors import ConfigError, FluxError
from flux_core.online import server_pool
from flux_core.online.rollout import SamplingParams
from flux_core.online.sglang import SGLangBackend

pytestmark = pytest.mark.usefixtures("no_backoff")  # retries at once (fixture in conftest.py)

A, B, C = "http://127.0.0.1:30001", "http://127.0.0.1:30002", "http://127.0.0.1:30003"
EOS = 2
SAMPLING = SamplingParams(max_new_tokens=1)


def answer(batch_size: int, token: int = 9) -> httpx2.Response:
    item = {
        "output_ids": [token],
        "meta_info": {"finish_reason": {"type": "length", "length": 1}, "output_token_logprobs": [[-0.3, token, None]]},
    }
    return httpx2.Response(200, json=[item] * batch_size)


class Servers:
    """Mock servers by URL: each counts its requests; a dead one refuses connections."""

    def __init__(self, *urls: str, seconds: float = 0.0):
        self.requests: Counter = Counter()
        self.loads: list[tuple[str, dict]] = []
        self.dead: set[str] = set()
        self.failing_loads: set[str] = set()  # answer a weight update with success: false
        self.seconds = seconds
        self.lock = threading.Lock()
        self.urls = urls

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if url in self.dead:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        if request.url.path == "/health":
            return httpx2.Response(200)
        body = json.loads(request.content)
        with self.lock:
            self.requests[url, request.url.path] += 1
        if request.url.path == "/update_weights_from_disk":
            self.loads.append((url, body))
            ok = url not in self.failing_loads
            return httpx2.Response(200, json={"success": ok, "message": "ok" if ok else "shapes differ"})
        time.sleep(self.seconds)
        return answer(len(body["input_ids"]), token=9 if url == A else 8)

    def backend(self, tokenizer, tmp_path, **settings) -> SGLangBackend:
        transport = httpx2.MockTransport(self)
        return SGLangBackend(list(self.urls), tokenizer, [EOS], tmp_path / "weights", transport=transport, **settings)


def test_requests_are_balanced_across_the_servers(tokenizer, tmp_path):
    servers = Servers(A, B, seconds=0.1)
    backend = servers.backend(tokenizer, tmp_path, max_concurrency=2)
    rollouts = backend.generate([f"prompt {i}" for i in range(8)], n=1, sampling=SAMPLING)
    # 8 completions, at most 2 requests per server: 4 requests, 2 on each.
    assert servers.requests == {(A, "/generate"): 2, (B, "/generate"): 2}
    assert len(rollouts) == 8 and [r.prompt_index for r in rollouts] == list(range(8))
    assert sorted(r.completion_ids[0] for r in rollouts) == [8] * 4 + [9] * 4


def test_weights_are_loaded_by_every_server(tiny_model_dir, tokenizer, tmp_path):
    from flux_core.modeling import load_model

    servers = Servers(A, B, C)
    backend = servers.backend(tokenizer, tmp_path)
    backend.sync_weights(load_model(str(tiny_model_dir)))
    path = str((tmp_path / "weights").resolve())
    assert sorted(servers.loads) == [(A, {"model_path": path}), (B, {"model_path": path}), (C, {"model_path": path})]
    assert backend.weight_syncs == 1


def test_a_dead_server_is_dropped_with_one_warning_and_its_requests_go_to_the_others(tokenizer, tmp_path):
    servers = Servers(A, B)
    backend = servers.backend(tokenizer, tmp_path, max_concurrency=2, max_retries=1)
    servers.dead.add(B)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = backend.generate([f"prompt {i}" for i in range(8)], n=1, sampling=SAMPLING)
        second = backend.generate([f"prompt {i}" for i in range(8)], n=1, sampling=SAMPLING)
    messages = [str(warning.message) for warning in caught]
    assert messages == [
        f"rollout server at {B} failed POST /generate 2 times (last: ConnectError: [Errno 111] Connection refused): "
        "dropped it; rollouts continue on the 1 other server"
    ]
    assert [r.completion_ids for r in first + second] == [[9]] * 16  # every completion came from A
    assert backend.pool.urls == [A] and backend.base_url == A
    assert servers.requests[A, "/generate"] == 4 + 2  # the first call: 2 of its own, 2 retried; then 2 (1 server)


def test_a_server_that_dies_is_skipped_by_weight_syncs_too(tiny_model_dir, tokenizer, tmp_path):
    from flux_core.modeling import load_model

    servers = Servers(A, B)
    backend = servers.backend(tokenizer, tmp_path, max_retries=0)
    servers.dead.add(A)
    with pytest.warns(UserWarning, match=f"rollout server at {A} failed POST /update_weights_from_disk 1 times"):
        backend.sync_weights(load_model(str(tiny_model_dir)))
    assert [url for url, _ in servers.loads] == [B] and backend.pool.urls == [B]


def test_the_run_stops_in_one_line_only_when_no_server_is_left(tokenizer, tmp_path):
    servers = Servers(A, B)
    backend = servers.backend(tokenizer, tmp_path, max_concurrency=1, max_retries=0)
    servers.dead.update({A, B})
    with warnings.catch_warnings(record=True) as caught, pytest.raises(FluxError) as raised:
        warnings.simplefilter("always")
        backend.generate(["hi"], n=1, sampling=SAMPLING)
    [warning] = caught  # the first server to fail; the second's failure is the error
    first, second = (A, B) if A in str(warning.message) else (B, A)
    assert str(raised.value) == (
        f"rollout server at {second} failed POST /generate 1 times (last: ConnectError: [Errno 111] Connection "
        f"refused) (dropped before: {first}); the run stopped, checkpoints written so far are complete"
    )


def test_a_malformed_answer_is_not_retried_elsewhere(tokenizer, tmp_path):
    def handler(request):
        if request.url.path == "/health":
            return httpx2.Response(200)
        return httpx2.Response(400, json={"error": {"message": "input_ids too long"}})

    backend = SGLangBackend([A, B], tokenizer, [EOS], tmp_path, transport=httpx2.MockTransport(handler))
    with pytest.raises(FluxError, match="POST /generate answered HTTP 400"):
        backend.generate(["hi"], n=1, sampling=SAMPLING)
    assert backend.pool.urls == [A, B]  # a bad request is not a dead server


def test_every_server_must_be_up_at_start(tokenizer, tmp_path):
    servers = Servers(A, B)
    servers.dead.add(B)
    with pytest.raises(FluxError) as raised:
        servers.backend(tokenizer, tmp_path)
    assert str(raised.value).startswith(f"cannot reach the rollout server at sglang.base_url={B}: ConnectError")


def grpo_config(base_url) -> FluxConfig:
    rewards = [{"name": "pattern_fraction", "kwargs": {"pattern": "e"}}]
    return FluxConfig.from_dict(
        {"model_path": "m", "algorithm": {"name": "grpo", "rewards": rewards}, "sglang": {"base_url": base_url}}
    )


def test_base_url_takes_one_url_or_a_list():
    assert grpo_config(A).sglang.base_url == A
    assert grpo_config([A, B]).sglang.base_url == [A, B]


@pytest.mark.parametrize(
    "base_url, message",
    [([], "sglang.base_url: an empty list: give one server URL or several"), ([A, B, A], f"{A} is listed twice")],
)
def test_a_bad_list_of_servers_is_one_line(base_url, message):
    with pytest.raises(ConfigError, match=message) as raised:
        grpo_config(base_url)
    assert "\n" not in str(raised.value)


@pytest.fixture
def rejoin_at_once(monkeypatch):
    """Dropped servers are asked whether they are back at every weight sync (request it before a drop)."""
    monkeypatch.setattr(server_pool, "REJOIN_PROBE_SECONDS", 0.0)


@pytest.fixture
def b_dropped_at_a_sync(tiny_model_dir, tokenizer, tmp_path):
    """Servers A and B, B dropped at a weight sync (it refused the connection); the model for more syncs."""
    from flux_core.modeling import load_model

    model = load_model(str(tiny_model_dir))
    servers = Servers(A, B)
    backend = servers.backend(tokenizer, tmp_path, max_retries=0)
    servers.dead.add(B)
    with pytest.warns(UserWarning, match="dropped it"):
        backend.sync_weights(model)
    servers.dead.discard(B)  # restarted
    return servers, backend, model


def test_a_dropped_server_that_comes_back_rejoins_after_loading_the_current_weights(
    tiny_model_dir, tokenizer, tmp_path, rejoin_at_once
):
    from flux_core.modeling import load_model

    model = load_model(str(tiny_model_dir))
    servers = Servers(A, B)
    backend = servers.backend(tokenizer, tmp_path, max_concurrency=2, max_retries=0)
    servers.dead.add(B)
    with pytest.warns(UserWarning, match="dropped it"):
        backend.generate([f"prompt {i}" for i in range(4)], n=1, sampling=SAMPLING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # still down: asked, and no word about it
        backend.sync_weights(model)
    assert [url for url, _ in servers.loads] == [A] and backend.pool.urls == [A]

    servers.dead.discard(B)  # restarted
    before = servers.requests[B, "/generate"]
    assert backend.generate([f"prompt {i}" for i in range(4)], n=1, sampling=SAMPLING)  # not before a sync
    assert servers.requests[B, "/generate"] == before
    with pytest.warns(UserWarning) as caught:
        backend.sync_weights(model)
    assert [str(w.message) for w in caught] == [
        f"rollout server at {B} is back: it loaded the current weights and takes rollouts again (2 servers)"
    ]
    assert [url for url, _ in servers.loads] == [A, A, B]  # B loaded the weights before it rejoined
    rollouts = backend.generate([f"prompt {i}" for i in range(8)], n=1, sampling=SAMPLING)
    assert servers.requests[B, "/generate"] == before + 2 and {r.completion_ids[0] for r in rollouts} == {8, 9}


def test_a_dropped_server_is_asked_again_only_every_rejoin_interval(b_dropped_at_a_sync):
    servers, backend, model = b_dropped_at_a_sync
    backend.sync_weights(model)  # within REJOIN_PROBE_SECONDS of the drop: not asked yet
    assert backend.pool.urls == [A] and [url for url, _ in servers.loads] == [A, A]


def test_a_returning_server_whose_weight_update_fails_stays_out(rejoin_at_once, b_dropped_at_a_sync):
    servers, backend, model = b_dropped_at_a_sync
    servers.failing_loads.add(B)  # back, but started on another model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.sync_weights(model)  # the run goes on without it
    assert backend.pool.urls == [A] and [url for url, _ in servers.loads] == [A, A, B]
    servers.failing_loads.add(A)  # a live server failing its update still stops the run
    with pytest.raises(FluxError, match=f"{A}"):
        backend.sync_weights(model)
