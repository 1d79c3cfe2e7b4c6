"""SGLangBackend: rollouts from a server speaking SGLang's native HTTP API.

Selected by :func:`flux_core.online.backends.create_backend` when ``sglang.base_url`` is set. The
server is SGLang itself (``python -m sglang.launch_server``) or ``flux serve`` (same
endpoints, built on transformers, for CPU machines and tests). Four endpoints are used,
with the request and response shapes SGLang documents (docs/basic_usage/native_api,
docs/basic_usage/sampling_params; python/sglang/srt/entrypoints/http_server.py):

- ``GET /health`` once at start: an unreachable server is a one-line error naming the URL.
- ``POST /generate`` with ``{"input_ids": [[...], ...], "sampling_params": {...},
  "return_logprob": true}``; the answer is one object per input with ``output_ids`` and
  ``meta_info.output_token_logprobs`` (``[logprob, token_id, text]`` per generated token)
  and ``meta_info.finish_reason.type`` (``"stop"`` or ``"length"``).
- ``POST /update_weights_from_disk`` with ``{"model_path": DIR}`` after each optimizer
  step; the answer is ``{"success": bool, "message": str, ...}``.

``sglang.base_url`` is one URL (a server, or a router such as SGLang's) or a list of
servers (:mod:`flux_core.online.server_pool`): each request goes to the server with the
fewest requests in flight, and weights are loaded by every server. A rollout batch is split
into at most ``sglang.max_concurrency`` requests per server, sent at once. A request that
cannot connect, times out or gets a 5xx is retried ``sglang.max_retries`` times with
backoff (0.5 s, 1 s, 2 s, ... capped at 8 s); then that server is dropped with one warning
naming it and the request goes to another. When no server is left the run stops with one
line naming the last server and endpoint (checkpoints already written are complete: they
are renamed into place only once written). A malformed answer or a 4xx is a one-line error
naming the server and endpoint (another server would not do better).

Weights travel through a directory both sides can read (``sglang.weights_dir``, default
``OUTPUT_DIR/sglang_weights``): the policy is written there as safetensors (LoRA runs
write the merged weights) and the server reloads it. The per-token log-probs the server
returns are the behaviour policy's; GRPO and PPO use them for off-policy correction
(docs/rollouts.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.online.rollout import Rollout, SamplingParams
from flux_core.online.server_pool import ServerClient, ServerError, ServerPool
from flux_core.online.server_pool import excerpt as _excerpt
from flux_core.online.tokens import encode_prompt, eos_token_ids
from flux_core.run.layout import SGLANG_WEIGHTS_DIR


class SGLangBackend:
    """Generates through SGLang-compatible servers and pushes weights to all of them from disk.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:30000`` (or a router's URL), or a list
            of servers: requests are balanced across them (:class:`~flux_core.online.server_pool.ServerPool`).
        tokenizer: the policy's tokenizer (prompts are tokenized here, as TRL does, so the
            server samples exactly the token ids the trainer scores).
        eos_token_ids: ids that end a completion (sent as ``stop_token_ids``).
        weights_dir: where :meth:`sync_weights` writes the policy for the servers to load.
        timeout: seconds per HTTP request.
        max_concurrency: most requests one :meth:`generate` call sends to each server at once.
        max_retries: retries of a request that failed to connect, timed out or got a 5xx.
        transport: an ``httpx2`` transport (tests pass a mock); ``None``: real HTTP.

    :meth:`generate` and :meth:`sync_weights` may be called from several threads at once
    (adaptive async keeps several batches in flight while weights load).
    """

    is_local = False
    reports_logprobs = True  # rollouts carry the server's per-token log-probs

    def __init__(
        self,
        base_url: str | Sequence[str],
        tokenizer: Any,
        eos_token_ids: list[int],
        weights_dir: str | Path,
        timeout: float = 300.0,
        max_concurrency: int = 8,
        max_retries: int = 3,
        transport: Any = None,
    ):
        self.pool = ServerPool(base_url, timeout=timeout, max_retries=max_retries, transport=transport)
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids)
        self.weights_dir = Path(weights_dir)
        self.max_concurrency = max_concurrency
        self.weight_syncs = 0
        self.last_sync_seconds: float | None = None
        # A fast tokenizer used from two threads at once can fail ("Already borrowed").
        self._tokenizer_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The live servers' URLs, comma-separated."""
        return ", ".join(self.pool.urls)

    @classmethod
    def from_config(cls, config: Any, model: Any, tokenizer: Any) -> SGLangBackend:
        """The backend a run's ``sglang:`` block describes."""
        settings = config.sglang
        weights_dir = settings.weights_dir or str(Path(config.output_dir) / SGLANG_WEIGHTS_DIR)
        return cls(
            settings.base_url,
            tokenizer,
            eos_token_ids(model, tokenizer),
            weights_dir,
            timeout=settings.timeout,
            max_concurrency=settings.max_concurrency,
            max_retries=settings.max_retries,
        )

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ RolloutBackend

    def generate(self, prompts: Sequence[Any], n: int, sampling: SamplingParams) -> list[Rollout]:
        if n < 1:
            raise FluxError(f"n (completions per prompt) must be at least 1, not {n}")
        with self._tokenizer_lock:
            encoded = [encode_prompt(self.tokenizer, prompt) for prompt in prompts]
        jobs = [(index, ids) for index, ids in enumerate(encoded) for _ in range(n)]
        if not jobs:
            return []
        parts = self.max_concurrency * len(self.pool.servers)  # at most max_concurrency requests per server
        size = -(-len(jobs) // parts)  # ceil
        chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            answers = list(pool.map(lambda chunk: self._generate_chunk(chunk, sampling), chunks))
        return [rollout for answer in answers for rollout in answer]

    def _generate_chunk(self, jobs: list[tuple[int, list[int]]], sampling: SamplingParams) -> list[Rollout]:
        request = generate_request([ids for _, ids in jobs], sampling, self.eos_token_ids)

        def on(server: ServerClient) -> tuple[str, Any]:
            return server.url, server.post("/generate", request)

        url, body = self.pool.call(on)
        if isinstance(body, dict) and len(jobs) == 1:
            body = [body]  # SGLang answers a batch of one with a bare object
        if not isinstance(body, list) or len(body) != len(jobs):
            got = f"{len(body)} items" if isinstance(body, list) else type(body).__name__
            raise ServerError(
                f"rollout server at {url}: POST /generate answered {got} for {len(jobs)} inputs "
                "(expected a list with one object per input)"
            )
        rollouts = []
        for (prompt_index, prompt_ids), item in zip(jobs, body):
            completion_ids, logprobs, truncated = parse_generate_item(item, url)
            with self._tokenizer_lock:
                text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
            rollouts.append(Rollout(prompt_index, prompt_ids, completion_ids, text, truncated, logprobs))
        return rollouts

    def sync_weights(self, model: Any) -> None:
        """Write ``model`` (merged, for LoRA) as safetensors to ``weights_dir`` and have every server load it."""
        start = time.perf_counter()
        write_weights(model, self.weights_dir)
        payload = {"model_path": str(self.weights_dir.resolve())}

        def load(server: Any) -> None:  # checked per server: a returning one that fails stays out
            check_weight_update(server.post("/update_weights_from_disk", payload), server.url, self.weights_dir)

        self.pool.call_all(load)
        self.weight_syncs += 1
        self.last_sync_seconds = time.perf_counter() - start


# ---------------------------------------------------------------------- protocol


def generate_request(input_ids: list[list[int]], sampling: SamplingParams, stop_token_ids: list[int]) -> dict:
    """The JSON body of SGLang's ``POST /generate`` for a batch of token-id prompts.

    SGLang's ``top_k`` is -1 for "off" (Flux's 0); ``temperature`` 0 is greedy on both.
    """
    return {
        "input_ids": input_ids,
        "sampling_params": {
            "max_new_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "stop_token_ids": list(stop_token_ids),
        },
        "return_logprob": True,
    }


def parse_generate_item(item: Any, base_url: str) -> tuple[list[int], list[float], bool]:
    """``(completion_ids, logprobs, truncated)`` from one object of a ``/generate`` answer.

    ``output_ids`` is used when present, else the ids in ``output_token_logprobs``; the two
    must agree, with one log-prob per generated token.
    """

    def malformed(what: str) -> ServerError:
        return ServerError(f"rollout server at {base_url}: POST /generate answered a malformed item: {what}")

    if not isinstance(item, dict) or not isinstance(item.get("meta_info"), dict):
        raise malformed(f"no meta_info in {_excerpt(str(item))}")
    meta = item["meta_info"]
    entries = meta.get("output_token_logprobs")
    if not isinstance(entries, list):
        raise malformed("meta_info.output_token_logprobs is missing (was return_logprob ignored?)")
    try:
        logprobs = [float(entry[0]) for entry in entries]
        logprob_ids = [int(entry[1]) for entry in entries]
    except (TypeError, ValueError, IndexError):
        raise malformed("meta_info.output_token_logprobs entries must be [logprob, token_id, text]") from None
    output_ids = item.get("output_ids", logprob_ids)
    if not isinstance(output_ids, list) or not all(isinstance(token, int) for token in output_ids):
        raise malformed("output_ids must be a list of token ids")
    if output_ids != logprob_ids:
        raise malformed(
            f"{len(output_ids)} output_ids but {len(logprob_ids)} output_token_logprobs (or different tokens)"
        )
    finish = meta.get("finish_reason")
    kind = finish.get("type") if isinstance(finish, dict) else None
    if kind not in ("stop", "length", "abort"):
        raise malformed(f"meta_info.finish_reason {_excerpt(str(finish))} (expected type stop or length)")
    if kind == "abort":
        raise ServerError(
            f"rollout server at {base_url} aborted a generation: {_excerpt(str(finish.get('message', finish)))}"
        )
    if not output_ids:
        raise malformed("an empty completion (no output_ids)")
    return list(output_ids), logprobs, kind == "length"


# ---------------------------------------------------------------------- weights


def write_weights(model: Any, directory: Path) -> None:
    """Write ``model``'s weights and config to ``directory`` as safetensors (merged when LoRA).

    Uses ``save_pretrained`` as checkpoints do (:func:`flux_core.run.checkpoint.save_model`),
    so tied weights, sharding and the config are handled the same way; no tokenizer.
    """
    import torch
    from peft import PeftModel

    from flux_core.run.checkpoint import merged_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if isinstance(model, PeftModel):
            state = {key: value.detach().contiguous() for key, value in merged_state_dict(model).items()}
            model.get_base_model().save_pretrained(directory, state_dict=state)
        else:
            model.save_pretrained(directory)


def check_weight_update(body: Any, url: str, weights_dir: Path) -> None:
    """Raise one line unless ``body`` is ``/update_weights_from_disk``'s ``{"success": true, ...}``."""
    if not isinstance(body, dict) or "success" not in body:
        raise ServerError(
            f"rollout server at {url}: POST /update_weights_from_disk answered {_excerpt(str(body))} "
            '(expected {"success": ..., "message": ...})'
        )
    if body["success"] is not True:
        raise ServerError(
            f"rollout server at {url} could not load the weights in {weights_dir}: {_excerpt(str(body.get('message')))}"
        )
