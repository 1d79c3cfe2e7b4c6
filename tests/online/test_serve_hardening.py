"""`flux serve` facing a hostile client: one live server (127.0.0.1, free port) with an API key, a weights root,
a small body limit, a short request timeout and a one-request queue; every refusal is one line naming the field,
file or flag, and the server keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest
from test_serve import FLUX, start_server

from flux_core.errors import FluxError
from flux_core.online.serve import API_KEY_ENV, check_exposure, is_loopback, resolve_api_key

KEY = "test-key-0123"
CONTEXT = 32768  # the served copy's max_position_embeddings: long enough that a generation outlasts the timeout
REQUEST_TIMEOUT = 3
PROMPT = [5, 6, 7]


def greedy(client, prompt=PROMPT, tokens=6) -> list[int]:
    answer = client.post(
        "/generate", json={"input_ids": prompt, "sampling_params": {"max_new_tokens": tokens, "temperature": 0}}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["output_ids"]


def write_update(directory: Path, state: dict) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """The server, its weights root, and the update directories the cases send it."""
    import httpx2
    import torch
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("weights-root")
    model_dir = Path(shutil.copytree(tiny_model_dir, root / "served"))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": CONTEXT}))
    original = load_file(str(model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(1)
    other = {name: torch.randn(t.shape, generator=generator) * 0.5 for name, t in original.items()}
    names = sorted(original)
    updates = {
        "original": write_update(root / "original", original),
        "other": write_update(root / "other", other),
        "half": write_update(root / "half", {name: other[name] for name in names[: len(names) // 2]}),
        "other-shape": write_update(root / "other-shape", {n: t[..., : t.shape[-1] // 2] for n, t in other.items()}),
        "nan": write_update(root / "nan", {**other, names[-1]: torch.full_like(other[names[-1]], float("nan"))}),
        "int": write_update(root / "int", {**other, names[0]: other[names[0]].to(torch.int32)}),
    }
    truncated = root / "truncated"
    truncated.mkdir()
    data = (updates["other"] / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    updates["truncated"] = truncated
    (root / "escape").symlink_to(tiny_model_dir, target_is_directory=True)
    flags = ("--weights-root", str(root), "--request-timeout", str(REQUEST_TIMEOUT), "--max-queued-requests", "1")
    with start_server(model_dir, *flags, "--max-body-mb", "1", env={API_KEY_ENV: KEY}) as server:
        client = httpx2.Client(
            base_url=server.url, timeout=120, trust_env=False, headers={"Authorization": f"Bearer {KEY}"}
        )
        with client:
            yield server, client, root, updates


def test_without_the_key_every_endpoint_but_health_is_401(served):
    import httpx2

    server, _, root, updates = served
    with httpx2.Client(base_url=server.url, timeout=60, trust_env=False) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            generate = anonymous.post("/generate", json={"input_ids": PROMPT}, headers=headers)
            update = anonymous.post(
                "/update_weights_from_disk", json={"model_path": str(updates["other"])}, headers=headers
            )
            flush = anonymous.post("/flush_cache", headers=headers)
            assert [generate.status_code, update.status_code, flush.status_code] == [401, 401, 401]
            assert "Authorization: Bearer" in generate.json()["error"]["message"]
            assert generate.headers["www-authenticate"] == "Bearer"
    assert server.health()["weight_updates"] == 0  # the anonymous update was not applied


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"input_ids": PROMPT, "sampling_params": {"stop_token_ids": 5}}, "sampling_params.stop_token_ids"),
        ({"input_ids": [True, False]}, "input_ids[0] is true"),
        ({"input_ids": [[5, 6], [7, True]]}, "input_ids[1][1] is true"),
        ({"input_ids": []}, "input_ids must be a non-empty list"),
        (DEEP, "not valid JSON: recursion limit"),
        ('{"input_ids": [5], "sampling_params": {"temperature": NaN}}', "sampling_params.temperature"),
        ('{"input_ids": [5], "sampling_params": {"temperature": Infinity}}', "sampling_params.temperature"),
        ({"input_ids": PROMPT, "sampling_params": {"top_p": "0.9"}}, "sampling_params.top_p"),
        ({"input_ids": PROMPT, "sampling_params": {"n": 2}}, "sampling_params.n: flux serve does not support"),
        ({"input_ids": PROMPT, "stream": True}, "stream: flux serve does not support"),
        ({"input_ids": [10**9]}, "outside the vocabulary"),
        ({"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 10**8}}, f"ask for at most {CONTEXT - 3}"),
        ({"input_ids": [5] * CONTEXT}, f"has {CONTEXT} tokens: the model's context is {CONTEXT}"),
        ({"text": "hello"}, "send input_ids"),
        ([1, 2], "must be a JSON object"),
    ],
    ids=[
        "stop_token_ids-int",
        "input_ids-bools",
        "input_ids-bool-in-batch",
        "input_ids-empty",
        "100k-deep-json",
        "temperature-nan",
        "temperature-inf",
        "top_p-string",
        "unsupported-sampling-field",
        "unsupported-field",
        "token-outside-vocab",
        "max_new_tokens-past-context",
        "prompt-fills-context",
        "text-prompt",
        "not-an-object",
    ],
)
def test_a_malformed_generate_is_400_naming_the_field_and_the_server_keeps_serving(served, body, named):
    _, client, _, _ = served
    baseline = greedy(client)
    raw = body if isinstance(body, str) else json.dumps(body)
    answer = client.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert named in message and "\n" not in message, message
    assert greedy(client) == baseline


def test_a_body_over_max_body_mb_is_413(served):
    _, client, _, _ = served
    answer = client.post("/generate", json={"input_ids": [5] * 600_000})  # over 1.2 MB, the limit is 1 MiB
    assert answer.status_code == 413 and "--max-body-mb" in answer.json()["error"]["message"]


def update(client, path) -> tuple[int, str]:
    answer = client.post("/update_weights_from_disk", json={"model_path": str(path)})
    body = answer.json()
    assert body["success"] is (answer.status_code == 200), body
    return answer.status_code, body["message"]


@pytest.mark.parametrize(
    ("case", "status", "named"),
    [
        ("half", 400, "lacks"),
        ("other-shape", 400, "has shape"),
        ("truncated", 400, "is not a readable safetensors file"),
        ("nan", 400, "NaN or infinite"),
        ("int", 400, "is I32"),
        ("escape", 403, "outside --weights-root"),
        ("outside", 403, "outside --weights-root"),
        ("missing", 400, "is not a directory"),
    ],
)
def test_a_bad_weight_update_changes_nothing_and_names_the_file(served, tiny_model_dir, case, status, named):
    """Every tensor is checked before any is copied: the greedy answer is the same before and after."""
    server, client, root, updates = served
    path = {"outside": tiny_model_dir, "escape": root / "escape", "missing": root / "nope"}.get(case, updates.get(case))
    before, updates_before = greedy(client), server.health()["weight_updates"]
    code, message = update(client, path)
    assert code == status and named in message and "\n" not in message, (code, message)
    if case not in ("outside", "escape", "missing"):
        assert str(path) in message  # the file or directory at fault
    assert greedy(client) == before and server.health()["weight_updates"] == updates_before


def test_a_complete_update_changes_the_answer_and_the_original_restores_it(served):
    """The counterpart of the refusals above: the same server does load a complete, valid update."""
    server, client, _, updates = served
    before = greedy(client)
    assert update(client, updates["other"])[0] == 200
    assert greedy(client) != before
    assert update(client, updates["original"])[0] == 200
    assert greedy(client) == before
    relative = client.post("/update_weights_from_disk", json={"model_path": "original"})  # under --weights-root
    assert relative.status_code == 200, relative.text


def test_a_full_queue_is_503_and_a_slow_request_is_504_and_stopped(served):
    server, client, _, _ = served
    started = server.health()["generate_requests"]
    answers: dict[str, object] = {}

    def send(name, body):
        answers[name] = client.post("/generate", json=body)

    slow = {"input_ids": [PROMPT] * 4, "sampling_params": {"max_new_tokens": CONTEXT - 8, "ignore_eos": True}}
    threads = [threading.Thread(target=send, args=("slow", slow))]
    threads[0].start()
    wait_for(lambda: server.health()["generate_requests"] > started, "the slow request to start")
    time.sleep(1)  # the queued request's own timeout then ends a second after the slow one's
    threads.append(
        threading.Thread(target=send, args=("queued", {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 3}}))
    )
    threads[1].start()
    wait_for(lambda: server.health()["queued_requests"] == 1, "the second request to queue")
    refused = client.post("/generate", json={"input_ids": PROMPT})
    assert refused.status_code == 503 and "--max-queued-requests 1" in refused.json()["error"]["message"]
    for thread in threads:
        thread.join(timeout=120)
    assert answers["slow"].status_code == 504, answers["slow"].text
    assert f"--request-timeout {REQUEST_TIMEOUT} s" in answers["slow"].json()["error"]["message"]
    # The slow generation was stopped at its deadline: the queued request was generated in time.
    assert answers["queued"].status_code == 200, answers["queued"].text
    assert len(greedy(client)) == 6


def wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_trainers_client_sends_the_key_from_the_environment(served, monkeypatch):
    from flux_core.modeling import load_model, load_tokenizer
    from flux_core.online.rollout import SamplingParams
    from flux_core.online.sglang import ServerError, SGLangBackend

    server, client, root, _ = served
    model_dir = root / "served"
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir))
    sampling = SamplingParams(max_new_tokens=4, temperature=0.0)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    anonymous = SGLangBackend(server.url, tokenizer, [0], root / "sync", timeout=60, max_retries=0)
    with pytest.raises(ServerError, match="401"):
        anonymous.generate(["hello"], 1, sampling)
    anonymous.close()
    monkeypatch.setenv(API_KEY_ENV, KEY)
    # one request at a time: the server's queue holds one
    backend = SGLangBackend(server.url, tokenizer, [0], root / "sync", timeout=60, max_concurrency=1, max_retries=0)
    try:
        assert len(backend.generate(["hello"], 2, sampling)) == 2
        before = server.health()["weight_updates"]
        backend.sync_weights(model)  # written under --weights-root, so the server loads it
        assert server.health()["weight_updates"] == before + 1
    finally:
        backend.close()


def test_a_reachable_host_without_a_key_is_refused_before_the_model_loads(tiny_model_dir, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    done = subprocess.run(
        [FLUX, "serve", str(tiny_model_dir), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("flux: error:")]
    assert "--host 0.0.0.0" in line and "--api-key" in line and "--allow-unauthenticated" in line


def test_exposure_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    check_exposure("127.0.0.1", None, allow_unauthenticated=False)  # this machine only: no key needed
    check_exposure("0.0.0.0", "a-key", allow_unauthenticated=False)
    with pytest.raises(FluxError, match="--api-key"):
        check_exposure("0.0.0.0", None, allow_unauthenticated=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_exposure("0.0.0.0", None, allow_unauthenticated=True)
    [warning] = caught
    assert "WITHOUT AN API KEY" in str(warning.message) and "\n" not in str(warning.message)


def test_the_api_key_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key("from-flag") == "from-flag"
    assert resolve_api_key(None) == "from-env"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert resolve_api_key(None) is None
    with pytest.raises(FluxError, match="--api-key is empty"):
        resolve_api_key(" ")


def test_flux_serve_help_lists_the_hardening_flags():
    done = subprocess.run([FLUX, "serve", "--help"], capture_output=True, text=True, timeout=60, check=True)
    for flag in ("--api-key", "--allow-unauthenticated", "--weights-root", "--max-body-mb", "--request-timeout"):
        assert flag in done.stdout, flag
    assert "--max-queued-requests" in done.stdout and API_KEY_ENV in done.stdout
