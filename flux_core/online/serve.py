"""``flux serve MODEL_DIR``: a small rollout server speaking SGLang's native HTTP API.

Built on transformers (batched ``generate``) with Starlette + uvicorn, for machines
without SGLang (CPU, tests, debugging a run's rollout path). Endpoints, with the shapes
SGLang documents (see :mod:`flux_core.online.sglang`):

- ``GET /health``: 200 ``{"status": "ok", "model_path": ..., "weight_updates": N,
  "generate_requests": M, "queued_requests": Q}`` (the counters are Flux's own debug fields).
- ``POST /generate``: ``{"input_ids": [[...], ...] or [...], "sampling_params":
  {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids", "ignore_eos"},
  "return_logprob": bool}`` -> one ``{"text", "output_ids", "meta_info": {"output_token_logprobs":
  [[logprob, token_id, null], ...], "finish_reason": {"type": "stop", "matched": id} or
  {"type": "length", "length": n}, "prompt_tokens", "completion_tokens"}}`` per input (a
  bare object for a single, unbatched input). Log-probs are ``log_softmax(logits /
  temperature)`` of the sampled token (temperature 1 when greedy), before top-p/top-k,
  as SGLang reports them and as TRL and PPO score tokens. Bodies are validated strictly
  (:mod:`flux_core.online.serve_requests`); ``max_new_tokens`` may not run past the model's
  context (``max_position_embeddings``).
- ``POST /update_weights_from_disk``: ``{"model_path": DIR}`` loads every
  ``*.safetensors`` in DIR, which must lie under ``--weights-root``, into the model ->
  ``{"success", "message", "num_paused_requests": 0}``. Every tensor is checked (name,
  shape, dtype, finite values) before any is copied, so an update is all or nothing
  (:mod:`flux_core.online.serve_weights`); a refusal is HTTP 400 (403 outside the root)
  with ``success: false``.
- ``POST /flush_cache``: nothing to flush (no prefix cache); 200.

Requests that arrive together (within 10 ms) with the same sampling settings are
generated as one left-padded batch by a single worker thread; a lock keeps weight
updates from interleaving with generation. At most ``--max-queued-requests`` requests
wait (more: 503); one not answered within ``--request-timeout`` seconds gets 504 and its
generation is stopped. With ``--api-key`` (or ``FLUX_SERVE_API_KEY``) every endpoint but
``/health`` wants ``Authorization: Bearer KEY``, as SGLang's ``--api-key`` does. It binds
127.0.0.1 unless ``--host`` says otherwise, and refuses another address without a key
unless ``--allow-unauthenticated`` is passed.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError
from flux_core.online.serve_requests import (
    BadRequest,
    GenerateRequest,
    GenerationTimeout,
    RequestRefused,
    SamplingParams,
    ServerBusy,
    UpdateWeightsRequest,
    parse_body,
)
from flux_core.online.serve_weights import read_weight_update, resolve_update_directory

__all__ = ["API_KEY_ENV", "BadRequest", "RolloutServer", "create_app", "serve"]

API_KEY_ENV = "FLUX_SERVE_API_KEY"  # the key, when --api-key is not given (a flag is visible in `ps`)
ADDED_LATENCY_ENV = "FLUX_SERVE_ADDED_LATENCY"  # benchmarks only: seconds of sleep added to every /generate
BATCH_WINDOW_SECONDS = 0.01  # requests arriving this close together are generated as one batch
MAX_BATCH_ROWS = 256
DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default; less where the prompt leaves less room in the context
CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class _Job:
    """One /generate request waiting for the batch worker."""

    def __init__(self, rows: list[list[int]], settings: tuple, deadline: float):
        self.rows, self.settings, self.deadline = rows, settings, deadline
        self.done = threading.Event()
        self.outputs: list[dict[str, Any]] = []
        self.error: Exception | None = None


class RolloutServer:
    """The model and the endpoint logic, independent of the web framework.

    Args:
        model_path: the model directory (or hub id) to serve.
        precision: weights dtype (fp32, bf16, fp16).
        seed: seed of the sampling random stream (None: unseeded).
        weights_root: the only directory (and below) ``/update_weights_from_disk`` reads.
        request_timeout: seconds a /generate request may wait and run before it is answered 504.
        max_queued_requests: /generate requests that may wait for the worker; more are answered 503.
    """

    def __init__(
        self,
        model_path: str,
        precision: str = "fp32",
        seed: int | None = None,
        *,
        weights_root: str | Path = ".",
        request_timeout: float = 300.0,
        max_queued_requests: int = 64,
    ):
        import torch

        from flux_core.modeling import load_model, load_tokenizer

        self.model_path = model_path
        self.weights_root = Path(weights_root).resolve()
        self.request_timeout, self.max_queued_requests = request_timeout, max_queued_requests
        # For benchmarks only (benchmarks/bench_async.py --server-latency): every /generate first sleeps this
        # many seconds, as on a remote server under load. Not a flag: nobody should serve with it.
        self.added_latency = float(os.environ.get(ADDED_LATENCY_ENV) or 0)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_path, precision).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_path)
        self.context_length = next(
            (value for key in CONTEXT_LENGTH_KEYS if isinstance(value := getattr(self.model.config, key, None), int)),
            None,
        )
        declared = self.model.generation_config.eos_token_id
        self.eos_token_ids = [declared] if isinstance(declared, int) else list(declared or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in self.eos_token_ids:
            self.eos_token_ids.insert(0, self.tokenizer.eos_token_id)
        self.pad_token_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        )
        self.lock = threading.Lock()
        self.weight_updates = 0
        self.generate_requests = 0
        self.queued_requests = 0  # accepted, not yet started (guarded by _queue_lock)
        self._queue_lock = threading.Lock()
        self.queue: queue.Queue[_Job] = queue.Queue()
        threading.Thread(target=self._batch_worker, name="flux-serve-batcher", daemon=True).start()
        if seed is not None:
            torch.manual_seed(seed)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model_path": self.model_path,
            "weight_updates": self.weight_updates,
            "generate_requests": self.generate_requests,
            "queued_requests": self.queued_requests,
        }

    # ------------------------------------------------------------------ /generate

    def generate(self, request: GenerateRequest) -> Any:
        """Generate for every row of ``request`` (blocking); a list of answers, or one for a single prompt."""
        if self.added_latency:
            time.sleep(self.added_latency)
        params = request.sampling_params or SamplingParams()
        rows = request.rows
        vocab = self.model.config.vocab_size
        if any(not 0 <= token < vocab for row in rows for token in row):
            raise BadRequest(f"input_ids hold a token id outside the vocabulary (0 to {vocab - 1})")
        if params.stop_token_ids and any(not 0 <= token < vocab for token in params.stop_token_ids):
            raise BadRequest(
                f"sampling_params.stop_token_ids hold a token id outside the vocabulary (0 to {vocab - 1})"
            )
        max_new_tokens = self._max_new_tokens(rows, params.max_new_tokens)
        stop_ids = () if params.ignore_eos else tuple(params.stop_token_ids or self.eos_token_ids)
        settings = (max_new_tokens, params.temperature, params.top_p, params.top_k, stop_ids)
        job = _Job(rows, settings, deadline=time.monotonic() + self.request_timeout)
        with self._queue_lock:
            if self.queued_requests >= self.max_queued_requests:
                raise ServerBusy(
                    f"{self.queued_requests} requests are already waiting (--max-queued-requests "
                    f"{self.max_queued_requests}); retry later"
                )
            self.queued_requests += 1
        self.queue.put(job)
        if not job.done.wait(self.request_timeout):
            raise self._timed_out()
        if job.error is not None:
            raise job.error
        return job.outputs[0] if request.single else job.outputs

    def _timed_out(self) -> GenerationTimeout:
        return GenerationTimeout(
            f"no answer within --request-timeout {self.request_timeout:g} s (the server is busy or the "
            "request asks for many tokens); its generation was stopped"
        )

    def _max_new_tokens(self, rows: list[list[int]], asked: int | None) -> int:
        """``asked`` (default 128), checked against what the model's context leaves after the longest prompt."""
        if self.context_length is None:
            return DEFAULT_MAX_NEW_TOKENS if asked is None else asked
        longest = max(range(len(rows)), key=lambda index: len(rows[index]))
        room = self.context_length - len(rows[longest])
        where = "input_ids" if len(rows) == 1 else f"input_ids[{longest}]"
        if room < 1:
            raise BadRequest(
                f"{where} has {len(rows[longest])} tokens: the model's context is {self.context_length} "
                "tokens (max_position_embeddings), which leaves no room to generate; shorten the prompt"
            )
        if asked is None:
            return min(DEFAULT_MAX_NEW_TOKENS, room)
        if asked > room:
            raise BadRequest(
                f"sampling_params.max_new_tokens={asked} runs past the model's context: {where} has "
                f"{len(rows[longest])} tokens and the context is {self.context_length}; ask for at most {room}"
            )
        return asked

    def _take_batch(self, pending: list[_Job]) -> list[_Job]:
        """The next job and those arriving within BATCH_WINDOW_SECONDS with the same settings (others: ``pending``)."""
        first = pending.pop(0) if pending else self.queue.get()
        jobs, rows = [first], len(first.rows)
        while True:  # gather what arrives within BATCH_WINDOW_SECONDS of the last arrival
            try:
                job = self.queue.get(timeout=BATCH_WINDOW_SECONDS)
            except queue.Empty:
                break
            if job.settings == first.settings and rows + len(job.rows) <= MAX_BATCH_ROWS:
                jobs.append(job)
                rows += len(job.rows)
            else:
                pending.append(job)
        with self._queue_lock:
            self.queued_requests -= len(jobs)
        return jobs

    def _batch_worker(self) -> None:
        """Run queued requests, merging those that arrive together with the same sampling settings into one batch."""
        pending: list[_Job] = []
        while True:
            jobs = self._take_batch(pending)
            live = [job for job in jobs if job.deadline > time.monotonic()]
            for job in set(jobs) - set(live):  # past their deadline while waiting: answered 504
                job.error = self._timed_out()
            try:
                if live:
                    with self.lock:
                        self.generate_requests += len(live)
                        rows = [row for job in live for row in job.rows]
                        seconds = max(job.deadline for job in live) - time.monotonic()
                        outputs = self._generate(rows, *live[0].settings, max_seconds=max(seconds, 1e-3))
                    start = 0
                    for job in live:  # past its deadline, generation may have been cut short by max_time: 504
                        if job.deadline <= time.monotonic():
                            job.error = self._timed_out()
                        job.outputs, start = outputs[start : start + len(job.rows)], start + len(job.rows)
            except Exception as error:  # noqa: BLE001 - reported to each waiting request
                for job in live:
                    job.error = error
            for job in jobs:
                job.done.set()

    def _generate(
        self, batch, max_new_tokens, temperature, top_p, top_k, stop_ids, max_seconds: float
    ) -> list[dict[str, Any]]:
        import torch

        width = max(len(row) for row in batch)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(row)) + row for row in batch])
        attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch])
        settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "max_time": max_seconds,  # the requests' --request-timeout: stop generating for clients gone
            "pad_token_id": self.pad_token_id,
            "eos_token_id": list(stop_ids) or None,
            "use_cache": True,
            "output_logits": True,
            "return_dict_in_generate": True,
        }
        if temperature > 0:
            settings.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=max(top_k, 0))
        else:
            settings.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), **settings
            )
            generated = output.sequences[:, width:]
            # logits: one [batch, vocab] tensor per generated position, before any processing.
            scale = temperature if temperature > 0 else 1.0
            logits = torch.stack(output.logits, dim=1).float() / scale
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        answers = []
        for row, ids, logprobs in zip(batch, generated.tolist(), token_logprobs.tolist()):
            length, finish = len(ids), {"type": "length", "length": max_new_tokens}
            for position, token in enumerate(ids):
                if token in stop_ids:
                    length, finish = position + 1, {"type": "stop", "matched": token}
                    break
            ids, logprobs = ids[:length], logprobs[:length]
            answers.append(
                {
                    "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                    "output_ids": ids,
                    "meta_info": {
                        "prompt_tokens": len(row),
                        "completion_tokens": len(ids),
                        "finish_reason": finish,
                        "output_token_logprobs": [[lp, token, None] for lp, token in zip(logprobs, ids)],
                    },
                }
            )
        return answers

    # ------------------------------------------------------------------ /update_weights_from_disk

    def update_weights_from_disk(self, request: UpdateWeightsRequest) -> dict[str, Any]:
        """Load ``request.model_path``'s safetensors into the model: every tensor checked first, then all copied."""
        import torch

        directory = resolve_update_directory(request.model_path, self.weights_root)
        state = read_weight_update(directory, self.weights_root, self.model, self.device)
        with self.lock, torch.no_grad():
            self.model.load_state_dict(state, strict=False)  # complete and checked: nothing here can fail halfway
            self.weight_updates += 1
        return {
            "success": True,
            "message": f"loaded {len(state)} tensors from {directory}",
            "num_paused_requests": 0,
        }


def create_app(server: RolloutServer, api_key: str | None = None, max_body_bytes: int = 32 * 2**20):
    """The Starlette application serving ``server``'s endpoints.

    ``api_key``: every endpoint but ``/health`` wants ``Authorization: Bearer KEY`` (401 otherwise).
    ``max_body_bytes``: a larger request body is answered 413 before it is parsed.
    """
    import secrets

    from starlette.applications import Starlette
    from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from flux_core.online.serve_requests import PayloadTooLarge

    class BearerKey(AuthenticationBackend):
        async def authenticate(self, conn: HTTPConnection):
            if conn.url.path == "/health":  # as SGLang: health probes need no key
                return None
            sent = conn.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                raise AuthenticationError(
                    f"missing or wrong API key: send the header Authorization: Bearer KEY (the trainer sends "
                    f"${API_KEY_ENV})"
                )
            return AuthCredentials(["authenticated"]), SimpleUser("client")

    def unauthorized(conn: HTTPConnection, error: AuthenticationError):
        return JSONResponse({"error": {"message": str(error)}}, 401, headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request, model: type) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise PayloadTooLarge(f"the body has {int(declared)} bytes; the limit is {max_body_bytes} (--max-body-mb)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise PayloadTooLarge(f"the body is over the limit of {max_body_bytes} bytes (--max-body-mb)")
        return parse_body(bytes(body), model)

    async def health(request: Request):
        return JSONResponse(server.health())

    async def generate(request: Request):
        return JSONResponse(await run_in_threadpool(server.generate, await read_body(request, GenerateRequest)))

    async def update_weights(request: Request):
        try:
            update = await read_body(request, UpdateWeightsRequest)
            return JSONResponse(await run_in_threadpool(server.update_weights_from_disk, update))
        except RequestRefused as error:
            refusal = {"success": False, "message": str(error), "num_paused_requests": 0}
            return JSONResponse(refusal, status_code=error.status)

    async def flush_cache(request: Request):
        return PlainTextResponse("Cache flushed.\n")

    async def refused(request: Request, error: RequestRefused):
        return JSONResponse({"error": {"message": str(error)}}, status_code=error.status)

    async def failed(request: Request, error: Exception):  # the traceback still goes to the server's log
        first_line = (str(error).strip().splitlines() or [""])[0]
        return JSONResponse({"error": {"message": f"internal error: {type(error).__name__}: {first_line}"}}, 500)

    middleware = [Middleware(AuthenticationMiddleware, backend=BearerKey(), on_error=unauthorized)] if api_key else []
    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/generate", generate, methods=["POST"]),
            Route("/update_weights_from_disk", update_weights, methods=["POST"]),
            Route("/flush_cache", flush_cache, methods=["GET", "POST"]),
        ],
        middleware=middleware,
        exception_handlers={RequestRefused: refused, Exception: failed},
    )


def resolve_api_key(flag: str | None) -> str | None:
    """The key from ``--api-key``, else from ``$FLUX_SERVE_API_KEY``; None when neither is set."""
    if flag is not None and not flag.strip():
        raise FluxError("flux serve: --api-key is empty: pass a key, or leave the flag out")
    return flag or os.environ.get(API_KEY_ENV, "").strip() or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, or a name resolving only there)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to serve an address other machines can reach without a key, unless told to (then warn)."""
    if api_key or is_loopback(host):
        return
    if not allow_unauthenticated:
        raise FluxError(
            f"flux serve: --host {host} can be reached from other machines and no API key is set: pass "
            f"--api-key KEY (or set {API_KEY_ENV}), or --allow-unauthenticated on a network you trust"
        )
    warnings.warn(
        f"flux serve on {host} WITHOUT AN API KEY (--allow-unauthenticated): anyone who can reach this port can "
        "generate and replace the model's weights",
        UserWarning,
        stacklevel=2,
    )


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 30000,
    precision: str = "fp32",
    seed=None,
    *,
    api_key: str | None = None,
    allow_unauthenticated: bool = False,
    weights_root: str | None = None,
    max_body_mb: float = 32.0,
    request_timeout: float = 300.0,
    max_queued_requests: int = 64,
) -> None:
    """Load the model, bind ``host:port`` (0 = any free port), print the URL, serve until interrupted.

    ``weights_root`` defaults to the current directory. Settings are checked before the model loads.
    """
    import socket

    check_exposure(host, api_key, allow_unauthenticated)
    root = Path(weights_root if weights_root is not None else os.getcwd()).resolve()
    if not root.is_dir():
        raise FluxError(f"flux serve: --weights-root {weights_root} is not a directory")
    for flag, value in (
        ("--max-body-mb", max_body_mb),
        ("--request-timeout", request_timeout),
        ("--max-queued-requests", max_queued_requests),
    ):
        if not value > 0 or value == float("inf"):
            raise FluxError(f"flux serve: {flag} must be a positive number, not {value}")

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise FluxError(f"flux serve: cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound_port = sock.getsockname()[1]
    server = RolloutServer(
        model_path,
        precision,
        seed,
        weights_root=root,
        request_timeout=request_timeout,
        max_queued_requests=max_queued_requests,
    )
    app = create_app(server, api_key=api_key, max_body_bytes=int(max_body_mb * 2**20))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    print(f"flux serve: {model_path} on http://{host}:{bound_port}", flush=True)
    print(
        f"flux serve: API key {'required' if api_key else 'not required'}; weight updates read *.safetensors "
        f"under {root} only",
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])
