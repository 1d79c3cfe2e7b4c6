"""SGLangBackend speaks SGLang's native HTTP API: exact JSON shapes, retries, bounded concurrency, clear errors.

The shapes are SGLang's own, from its documentation and server source:
- docs/basic_usage/native_api (https://docs.sglang.io/basic_usage/native_api.html) and
  docs/basic_usage/sampling_params (GenerateReqInput in python/sglang/srt/managers/io_struct.py):
  POST /generate takes {"input_ids": [[...]], "sampling_params": {...}, "return_logprob": true} and answers
  one {"text", "output_ids", "meta_info": {"finish_reason": {"type": "stop", "matched": id} |
  {"type": "length", "length": n}, "output_token_logprobs": [[logprob, token_id, text], ...], ...}} per input;
  sampling_params.top_k is -1 when off.
- python/sglang/srt/entrypoints/http_server.py, update_weights_from_disk: POST {"model_path": DIR} answers
  {"success": bool, "message": str, "num_paused_requests": int}, HTTP 200 on success and 400 otherwise.
"""

from __future__ import annotations

import json
import threading
import time

import httpx2
import pytest

from flux_core.errors import FluxError
from flux_core.online.rollout import SamplingParams
from flux_core.online.sglang import SGLangBackend

pytestmark = pytest.mark.usefixtures("no_backoff")  # retries at once (fixture in conftest.py)

URL = "http://127.0.0.1:30000"
EOS = 2


def sglang_item(output_ids, logprobs, finish):
    """One element of SGLang's /generate answer, as its server writes it."""
    return {
        "text": "decoded",
        "output_ids": output_ids,
        "meta_info": {
            "id": "3f2a",
            "finish_reason": finish,
            "prompt_tokens": 3,
            "completion_tokens": len(output_ids),
            "cached_tokens": 0,
            "output_token_logprobs": [[lp, token, None] for lp, token in zip(logprobs, output_ids)],
            "e2e_latency": 0.01,
        },
    }


def backend_with(handler, tokenizer, tmp_path, **settings):
    def route(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/health":
            return httpx2.Response(200)
        return handler(request)

    return SGLangBackend(URL, tokenizer, [EOS], tmp_path / "weights", transport=httpx2.MockTransport(route), **settings)


def test_generate_sends_sglangs_request_and_reads_its_answer(tokenizer, tmp_path):
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, json.loads(request.content)))
        return httpx2.Response(
            200,
            json=[
                sglang_item([11, 12, EOS], [-0.5, -1.25, -0.125], {"type": "stop", "matched": EOS}),
                sglang_item([13, 14], [-2.0, -0.75], {"type": "length", "length": 2}),
            ],
        )

    backend = backend_with(handler, tokenizer, tmp_path, max_concurrency=1)
    sampling = SamplingParams(max_new_tokens=2, temperature=0.7, top_p=0.9, top_k=0)
    rollouts = backend.generate(["Explain jazz."], n=2, sampling=sampling)

    prompt_ids = tokenizer("Explain jazz.").input_ids
    assert seen == [
        (
            "POST",
            "/generate",
            {
                "input_ids": [prompt_ids, prompt_ids],
                "sampling_params": {
                    "max_new_tokens": 2,
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "top_k": -1,
                    "stop_token_ids": [EOS],
                },
                "return_logprob": True,
            },
        )
    ]
    first, second = rollouts
    assert (first.prompt_index, first.prompt_ids, first.completion_ids) == (0, prompt_ids, [11, 12, EOS])
    assert first.logprobs == [-0.5, -1.25, -0.125] and first.truncated is False
    assert first.text == tokenizer.decode([11, 12, EOS], skip_special_tokens=True)
    assert second.completion_ids == [13, 14] and second.truncated is True and second.logprobs == [-2.0, -0.75]


def test_update_weights_from_disk_sends_the_directory_the_policy_was_written_to(tiny_model_dir, tokenizer, tmp_path):
    from flux_core.modeling import load_model

    seen = []

    def handler(request):
        seen.append((request.url.path, json.loads(request.content)))
        return httpx2.Response(200, json={"success": True, "message": "Succeeded to update model weights.",
                                          "num_paused_requests": 0})  # fmt: skip

    backend = backend_with(handler, tokenizer, tmp_path)
    model = load_model(str(tiny_model_dir))
    backend.sync_weights(model)
    weights = tmp_path / "weights"
    assert seen == [("/update_weights_from_disk", {"model_path": str(weights.resolve())})]
    assert (weights / "model.safetensors").is_file() and (weights / "config.json").is_file()
    assert backend.weight_syncs == 1 and backend.last_sync_seconds > 0
    reloaded = load_model(str(weights))  # a complete model directory: what SGLang reloads
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True))


def test_a_refused_weight_update_is_one_line_with_the_servers_message(tiny_model_dir, tokenizer, tmp_path):
    from flux_core.modeling import load_model

    def handler(request):
        body = {"success": False, "message": "Failed to get weights iterator: shape mismatch", "num_paused_requests": 0}
        return httpx2.Response(400, json=body)

    backend = backend_with(handler, tokenizer, tmp_path)
    with pytest.raises(FluxError, match="/update_weights_from_disk answered HTTP 400: Failed to get weights") as e:
        backend.sync_weights(load_model(str(tiny_model_dir)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "answer, message",
    [
        ("not json", "POST /generate answered something that is not JSON"),
        ({"error": "x"}, "POST /generate answered dict for 2 inputs"),
        ([{"text": "a"}, {"text": "b"}], "POST /generate answered a malformed item: no meta_info"),
        (
            [{"output_ids": [1], "meta_info": {"finish_reason": {"type": "length"}}}] * 2,
            "output_token_logprobs is missing",
        ),
        (
            [sglang_item([5, 6], [-1.0], {"type": "length"})] * 2,
            "2 output_ids but 1 output_token_logprobs",
        ),
        ([sglang_item([5], [-1.0], {"type": "weird"})] * 2, "meta_info.finish_reason"),
        ([sglang_item([5], [-1.0], {"type": "length"})], "answered 1 items for 2 inputs"),
    ],
)
def test_a_malformed_generate_answer_is_one_line_naming_the_endpoint(tokenizer, tmp_path, answer, message):
    def handler(request):
        if isinstance(answer, str):
            return httpx2.Response(200, text=answer)
        return httpx2.Response(200, json=answer)

    backend = backend_with(handler, tokenizer, tmp_path, max_concurrency=1)
    with pytest.raises(FluxError) as raised:
        backend.generate(["Explain jazz."], n=2, sampling=SamplingParams(max_new_tokens=2))
    assert message in str(raised.value) and URL in str(raised.value)
    assert "\n" not in str(raised.value)


def test_5xx_and_connection_errors_are_retried_then_succeed(tokenizer, tmp_path):
    calls = []

    def handler(request):
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx2.ConnectError("Connection refused")
        if len(calls) == 2:
            return httpx2.Response(503, text="overloaded")
        return httpx2.Response(200, json=[sglang_item([7], [-0.1], {"type": "length", "length": 1})])

    backend = backend_with(handler, tokenizer, tmp_path, max_retries=2)
    [rollout] = backend.generate(["hi"], n=1, sampling=SamplingParams(max_new_tokens=1))
    assert calls == ["/generate"] * 3 and rollout.completion_ids == [7]


def test_a_dead_server_fails_after_the_retries_with_one_line(tokenizer, tmp_path):
    calls = []

    def handler(request):
        calls.append(request.url.path)
        raise httpx2.ReadTimeout("timed out")

    backend = backend_with(handler, tokenizer, tmp_path, max_retries=3)
    with pytest.raises(FluxError) as raised:
        backend.generate(["hi"], n=1, sampling=SamplingParams(max_new_tokens=1))
    assert len(calls) == 4
    assert str(raised.value) == (
        f"rollout server at {URL} failed POST /generate 4 times (last: ReadTimeout: timed out); "
        "the run stopped, checkpoints written so far are complete"
    )


def test_a_4xx_is_not_retried(tokenizer, tmp_path):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx2.Response(400, json={"error": {"message": "input_ids too long"}})

    backend = backend_with(handler, tokenizer, tmp_path)
    with pytest.raises(FluxError, match="POST /generate answered HTTP 400"):
        backend.generate(["hi"], n=1, sampling=SamplingParams(max_new_tokens=1))
    assert len(calls) == 1


def test_requests_go_out_concurrently_but_never_more_than_max_concurrency(tokenizer, tmp_path):
    lock, in_flight, peak, sizes = threading.Lock(), [0], [0], []

    def handler(request):
        batch = json.loads(request.content)["input_ids"]
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            sizes.append(len(batch))
        time.sleep(0.2)
        with lock:
            in_flight[0] -= 1
        return httpx2.Response(200, json=[sglang_item([9], [-0.3], {"type": "length", "length": 1})] * len(batch))

    backend = backend_with(handler, tokenizer, tmp_path, max_concurrency=3)
    rollouts = backend.generate([f"prompt {i}" for i in range(10)], n=2, sampling=SamplingParams(max_new_tokens=1))
    assert len(rollouts) == 20 and [r.prompt_index for r in rollouts] == [i // 2 for i in range(20)]
    assert sorted(sizes) == [6, 7, 7] and peak[0] == 3


def test_an_unreachable_server_is_named_at_start(tokenizer, tmp_path):
    def refuse(request):
        raise httpx2.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(FluxError) as raised:
        SGLangBackend(URL, tokenizer, [EOS], tmp_path, transport=httpx2.MockTransport(refuse))
    assert str(raised.value).startswith(f"cannot reach the rollout server at sglang.base_url={URL}: ConnectError")
