"""``flux serve MODEL_DIR``: a small rollout server speaking SGLang's native HTTP API.

Built on transformers (batched ``generate``) with Starlette + uvicorn, for machines
without SGLang (CPU, tests, debugging a run's rollout path). Endpoints, with the shapes
SGLang documents (see :mod:`flux_core.online.sglang`):

- ``GET /health``: 200 ``{"status": "ok", "model_path": ..., "weight_updates": N,
  "generate_requests": M}`` (the counters are Flux's own debug fields).
- ``POST /generate``: ``{"input_ids": [[...], ...] or [...], "sampling_params":
  {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids"}, "return_logprob":
  bool}`` -> one ``{"text", "output_ids", "meta_info": {"output_token_logprobs":
  [[logprob, token_id, null], ...], "finish_reason": {"type": "stop", "matched": id} or
  {"type": "length", "length": n}, "prompt_tokens", "completion_tokens"}}`` per input (a
  bare object for a single, unbatched input). Log-probs are ``log_softmax(logits /
  temperature)`` of the sampled token (temperature 1 when greedy), before top-p/top-k,
  as SGLang reports them and as TRL and PPO score tokens.
- ``POST /update_weights_from_disk``: ``{"model_path": DIR}`` loads every
  ``*.safetensors`` in DIR into the model -> ``{"success", "message",
  "num_paused_requests": 0}`` (HTTP 400 with ``success: false`` when it cannot).
- ``POST /flush_cache``: nothing to flush (no prefix cache); 200.

Requests that arrive together (within 10 ms) with the same sampling settings are
generated as one left-padded batch by a single worker thread; a lock keeps weight
updates from interleaving with generation. It binds 127.0.0.1 unless ``--host``
says otherwise.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

from flux_core.errors import FluxError

BATCH_WINDOW_SECONDS = 0.01  # requests arriving this close together are generated as one batch
MAX_BATCH_ROWS = 256


class BadRequest(ValueError):
    """A request the server answers with HTTP 400 and this message."""


class _Job:
    """One /generate request waiting for the batch worker."""

    def __init__(self, rows: list[list[int]], settings: tuple):
        self.rows, self.settings = rows, settings
        self.done = threading.Event()
        self.outputs: list[dict[str, Any]] = []
        self.error: Exception | None = None


class RolloutServer:
    """The model and the endpoint logic, independent of the web framework."""

    def __init__(self, model_path: str, precision: str = "fp32", seed: int | None = None):
        import torch

        from flux_core.modeling import load_model, load_tokenizer

        self.model_path = model_path
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_path, precision).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_path)
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
        }

    # ------------------------------------------------------------------ /generate

    def generate(self, request: Any) -> Any:
        if not isinstance(request, dict):
            raise BadRequest("the body must be a JSON object")
        input_ids = request.get("input_ids")
        if input_ids is None:
            raise BadRequest("flux serve takes token ids: send input_ids (text prompts are not supported)")
        single = isinstance(input_ids, list) and bool(input_ids) and all(isinstance(t, int) for t in input_ids)
        batch = [input_ids] if single else input_ids
        if (
            not isinstance(batch, list)
            or not batch
            or not all(isinstance(row, list) and row and all(isinstance(t, int) for t in row) for row in batch)
        ):
            raise BadRequest("input_ids must be a non-empty list of token ids or a list of such lists")
        params = request.get("sampling_params") or {}
        if not isinstance(params, dict):
            raise BadRequest("sampling_params must be an object")
        try:
            max_new_tokens = int(params.get("max_new_tokens", 128))
            temperature = float(params.get("temperature", 1.0))
            top_p = float(params.get("top_p", 1.0))
            top_k = int(params.get("top_k", -1))
        except (TypeError, ValueError):
            raise BadRequest("sampling_params: max_new_tokens, temperature, top_p, top_k must be numbers") from None
        if max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
            raise BadRequest("sampling_params: need max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1")
        stop_ids = params.get("stop_token_ids") or self.eos_token_ids
        if not all(isinstance(t, int) for t in stop_ids):
            raise BadRequest("sampling_params.stop_token_ids must be token ids")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for row in batch for t in row):
            raise BadRequest(f"input_ids hold a token id outside the vocabulary (size {vocab})")
        job = _Job(batch, (max_new_tokens, temperature, top_p, top_k, tuple(stop_ids)))
        self.queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outputs[0] if single else job.outputs

    def _batch_worker(self) -> None:
        """Run queued requests, merging those that arrive together with the same sampling settings into one batch."""
        pending: list[_Job] = []
        while True:
            first = pending.pop(0) if pending else self.queue.get()
            jobs, rows = [first], list(first.rows)
            while True:  # gather what arrives within BATCH_WINDOW_SECONDS of the last arrival
                try:
                    job = self.queue.get(timeout=BATCH_WINDOW_SECONDS)
                except queue.Empty:
                    break
                if job.settings == first.settings and len(rows) + len(job.rows) <= MAX_BATCH_ROWS:
                    jobs.append(job)
                    rows.extend(job.rows)
                else:
                    pending.append(job)
            try:
                with self.lock:
                    self.generate_requests += len(jobs)
                    max_new_tokens, temperature, top_p, top_k, stop_ids = first.settings
                    outputs = self._generate(rows, max_new_tokens, temperature, top_p, top_k, list(stop_ids))
                start = 0
                for job in jobs:
                    job.outputs, start = outputs[start : start + len(job.rows)], start + len(job.rows)
            except Exception as error:  # noqa: BLE001 - reported to each waiting request
                for job in jobs:
                    job.error = error
            for job in jobs:
                job.done.set()

    def _generate(self, batch, max_new_tokens, temperature, top_p, top_k, stop_ids) -> list[dict[str, Any]]:
        import torch

        width = max(len(row) for row in batch)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(row)) + row for row in batch])
        attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch])
        settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": stop_ids,
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

    def update_weights_from_disk(self, request: Any) -> dict[str, Any]:
        import torch
        from safetensors.torch import load_file

        if not isinstance(request, dict) or not isinstance(request.get("model_path"), str):
            raise BadRequest('send {"model_path": DIRECTORY}')
        directory = Path(request["model_path"])
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise BadRequest(f"no *.safetensors file in {directory}")
        state: dict[str, Any] = {}
        for file in files:
            state.update(load_file(str(file), device=str(self.device)))
        names = {name for name, _ in self.model.named_parameters()} | {n for n, _ in self.model.named_buffers()}
        # Tied parameters (lm_head = embeddings) appear once in the file; accept either name.
        every_name = {name for name, _ in self.model.named_parameters(remove_duplicate=False)}
        unexpected = sorted(set(state) - every_name - names)
        if unexpected:
            raise BadRequest(f"{directory} holds weights this model does not have: {', '.join(unexpected[:5])}")
        with self.lock, torch.no_grad():
            result = self.model.load_state_dict(state, strict=False)
            tied = every_name - {name for name, _ in self.model.named_parameters()}
            missing = sorted(set(result.missing_keys) - tied - {n for n, _ in self.model.named_buffers()})
            if missing:
                raise BadRequest(f"{directory} lacks weights: {', '.join(missing[:5])}")
            self.weight_updates += 1
        return {
            "success": True,
            "message": f"loaded {len(state)} tensors from {directory}",
            "num_paused_requests": 0,
        }


def create_app(server: RolloutServer):
    """The Starlette application serving ``server``'s endpoints."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None

    async def health(request: Request):
        return JSONResponse(server.health())

    async def generate(request: Request):
        try:
            return JSONResponse(await run_in_threadpool(server.generate, await body_of(request)))
        except BadRequest as error:
            return JSONResponse({"error": {"message": str(error)}}, status_code=400)

    async def update_weights(request: Request):
        try:
            return JSONResponse(await run_in_threadpool(server.update_weights_from_disk, await body_of(request)))
        except BadRequest as error:
            return JSONResponse({"success": False, "message": str(error), "num_paused_requests": 0}, status_code=400)

    async def flush_cache(request: Request):
        return PlainTextResponse("Cache flushed.\n")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/generate", generate, methods=["POST"]),
            Route("/update_weights_from_disk", update_weights, methods=["POST"]),
            Route("/flush_cache", flush_cache, methods=["GET", "POST"]),
        ]
    )


def serve(model_path: str, host: str = "127.0.0.1", port: int = 30000, precision: str = "fp32", seed=None) -> None:
    """Load the model, bind ``host:port`` (0 = any free port), print the URL, serve until interrupted."""
    import socket

    import uvicorn

    server = RolloutServer(model_path, precision, seed)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise FluxError(f"flux serve: cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(server), log_level="warning", access_log=False)
    print(f"flux serve: {model_path} on http://{host}:{bound_port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
