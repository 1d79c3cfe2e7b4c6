"""Several rollout servers behind one backend: HTTP with retries, least-outstanding balancing, dropping dead servers.

:class:`ServerClient` is one server (one ``httpx2`` client): ``GET /health`` once at start,
and ``POST`` with retries of connection errors, timeouts and 5xx, with backoff (0.5 s, 1 s,
2 s, ... capped at 8 s). A server still failing after ``max_retries`` retries raises
:class:`ServerUnavailable`; an answer that is not usable (a 4xx, not JSON) raises
:class:`ServerError`: retrying it elsewhere would not help.

:class:`ServerPool` holds every server of ``sglang.base_url`` (one URL, a router's, or a
list). :meth:`ServerPool.call` runs a request on the live server with the fewest requests
in flight (ties in turn); a server that raises :class:`ServerUnavailable` is dropped with
one warning naming it and the request runs again on another. When no server is left the
run stops with one line: the last server's failure.

A dropped server can come back (restarted, or its network healed): at each weight sync
(:meth:`ServerPool.call_all`), dropped servers are asked ``GET /health`` (at most every
:data:`REJOIN_PROBE_SECONDS`, :data:`PROBE_TIMEOUT_SECONDS` each); one that answers loads the
weights with the others and, once it has, takes rollouts again (one warning says so). It never
serves rollouts from weights other than the current ones.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flux_core.errors import FluxError

BACKOFF_SECONDS = 0.5  # first retry delay; doubles per retry
MAX_BACKOFF_SECONDS = 8.0
STOPPED = "the run stopped, checkpoints written so far are complete"
REJOIN_PROBE_SECONDS = 30.0  # how often a weight sync asks a dropped server whether it is back
PROBE_TIMEOUT_SECONDS = 2.0  # a dropped server that does not answer /health this fast stays dropped

T = TypeVar("T")


class ServerError(FluxError):
    """The rollout server is unreachable, failing, or answered something unusable."""


class ServerUnavailable(ServerError):
    """A server kept failing to connect, timing out or answering 5xx through every retry."""


class ServerClient:
    """One rollout server: health check and JSON ``POST`` with retries.

    Args:
        url: the server, e.g. ``http://127.0.0.1:30000``.
        timeout: seconds per HTTP request.
        max_retries: retries of a request that failed to connect, timed out or got a 5xx.
        transport: an ``httpx2`` transport (tests pass a mock); ``None``: real HTTP.

    A server started with an API key (``flux serve --api-key``, SGLang's ``--api-key``) gets
    ``Authorization: Bearer $FLUX_SERVE_API_KEY`` (an environment variable: the config is saved with the run).
    """

    def __init__(self, url: str, timeout: float = 300.0, max_retries: int = 3, transport: Any = None):
        import httpx2

        from flux_core.online.serve import API_KEY_ENV

        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.outstanding = 0  # requests in flight; ServerPool balances on it
        # No connection cap: ServerPool and the callers bound what is in flight (max_concurrency per batch).
        api_key = os.environ.get(API_KEY_ENV, "").strip()
        self._client = httpx2.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=timeout,
            transport=transport,
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32),
            trust_env=False,  # a loopback/cluster server: no proxy from the environment
        )

    def close(self) -> None:
        self._client.close()

    def check_health(self, timeout: float | None = None) -> None:
        """``GET /health``; one try only: a server that is not up at start is a setup mistake.
        ``timeout``: seconds (default: the client's)."""
        import httpx2

        try:
            response = self._client.get("/health", **({} if timeout is None else {"timeout": timeout}))
        except httpx2.HTTPError as error:
            raise ServerError(
                f"cannot reach the rollout server at sglang.base_url={self.url}: {describe(error)}; "
                "start it (python -m sglang.launch_server ... or flux serve MODEL_DIR) or fix the URL"
            ) from None
        if response.status_code != 200:
            raise ServerError(
                f"rollout server at {self.url}: GET /health answered HTTP {response.status_code} "
                f"{excerpt(response.text)}"
            )

    def post(self, endpoint: str, payload: dict[str, Any]) -> Any:
        """POST JSON, retrying connection errors, timeouts and 5xx with backoff; the decoded JSON answer."""
        import httpx2

        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                response = self._client.post(endpoint, json=payload)
            except httpx2.HTTPError as error:
                problem = describe(error)
            else:
                if response.status_code < 500:
                    break
                problem = f"HTTP {response.status_code} {excerpt(response.text)}"
            if attempt + 1 < attempts:
                time.sleep(min(BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS))
        else:
            raise ServerUnavailable(
                f"rollout server at {self.url} failed POST {endpoint} {attempts} times (last: {problem})"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            message = body.get("message") if isinstance(body, dict) else None
            raise ServerError(
                f"rollout server at {self.url}: POST {endpoint} answered HTTP {response.status_code}: "
                f"{excerpt(message or response.text)}"
            )
        if body is None:
            raise ServerError(
                f"rollout server at {self.url}: POST {endpoint} answered something that is not JSON: "
                f"{excerpt(response.text)}"
            )
        return body


class ServerPool:
    """The live servers of a run; requests go to the least busy one and survive the death of all but one.

    Args:
        urls: one URL (a server or a router) or several.
        timeout, max_retries, transport: as :class:`ServerClient`, for each server.
    """

    def __init__(self, urls: str | Sequence[str], timeout: float = 300.0, max_retries: int = 3, transport: Any = None):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ServerError("sglang.base_url is an empty list: give one rollout server URL or several")
        self.servers = [ServerClient(url, timeout, max_retries, transport) for url in urls]
        self.dropped: list[str] = []
        self._away: dict[str, tuple[ServerClient, float]] = {}  # dropped: url -> (client, when to ask again)
        self._lock = threading.Lock()
        self._turn = itertools.count()
        try:
            for server in self.servers:
                server.check_health()
        except ServerError:
            self.close()
            raise

    @property
    def urls(self) -> list[str]:
        with self._lock:
            return [server.url for server in self.servers]

    def close(self) -> None:
        for server in [*self.servers, *(client for client, _ in self._away.values())]:
            server.close()

    def call(self, request: Callable[[ServerClient], T]) -> T:
        """``request(server)`` on the live server with the fewest requests in flight; another one if it dies."""
        while True:
            with self._lock:
                if not self.servers:
                    raise ServerError(f"no rollout server is left; {STOPPED}")
                turn = next(self._turn)
                live = self.servers[turn % len(self.servers) :] + self.servers[: turn % len(self.servers)]
                server = min(live, key=lambda candidate: candidate.outstanding)
                server.outstanding += 1
            try:
                return request(server)
            except ServerUnavailable as error:
                self.drop(server, error)
            finally:
                with self._lock:
                    server.outstanding -= 1

    def call_all(self, request: Callable[[ServerClient], T]) -> list[T]:
        """``request(server)`` on every live server at once (weight syncs); servers that die are dropped.

        Dropped servers that answer ``/health`` again get the request too, and rejoin once it succeeds.
        """
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            servers = list(self.servers)
        if not servers:
            raise ServerError(f"no rollout server is left; {STOPPED}")
        returning = self._returning()

        def attempt(server: ServerClient) -> tuple[bool, Any]:
            try:
                return True, request(server)
            except ServerError as error:
                if server in returning:  # not back after all: asked again later
                    self._ask_again_later(server)
                    return False, None
                if isinstance(error, ServerUnavailable):
                    self.drop(server, error)
                    return False, None
                raise

        with ThreadPoolExecutor(max_workers=len(servers) + len(returning)) as pool:
            outcomes = list(pool.map(attempt, servers + returning))
        for server, (succeeded, _) in zip(servers + returning, outcomes):
            if server in returning and succeeded:
                self._rejoin(server)
        return [answer for succeeded, answer in outcomes if succeeded]

    def _returning(self) -> list[ServerClient]:
        """Dropped servers due to be asked again that answer ``GET /health`` now."""
        now = time.monotonic()
        with self._lock:
            due = [client for client, when in self._away.values() if when <= now]
        returning = []
        for client in due:
            try:
                client.check_health(timeout=PROBE_TIMEOUT_SECONDS)
            except ServerError:
                self._ask_again_later(client)
            else:
                returning.append(client)
        return returning

    def _ask_again_later(self, server: ServerClient) -> None:
        with self._lock:
            if server.url in self._away:
                self._away[server.url] = (server, time.monotonic() + REJOIN_PROBE_SECONDS)

    def _rejoin(self, server: ServerClient) -> None:
        with self._lock:
            self._away.pop(server.url, None)
            self.servers.append(server)
            count = len(self.servers)
        warnings.warn(
            f"rollout server at {server.url} is back: it loaded the current weights and takes rollouts again "
            f"({count} servers)",
            UserWarning,
            stacklevel=3,
        )

    def drop(self, server: ServerClient, error: ServerUnavailable) -> None:
        """Stop using ``server`` (one warning); with none left, raise ``error`` as the run's last line."""
        with self._lock:
            if server in self.servers:
                self.servers.remove(server)
                self.dropped.append(server.url)
                self._away[server.url] = (server, time.monotonic() + REJOIN_PROBE_SECONDS)
                left = len(self.servers)
            else:
                left = None  # dropped already by a concurrent request
            remaining = len(self.servers)
        if left is not None and left > 0:
            warnings.warn(
                f"{error}: dropped it; rollouts continue on the {left} other server{'s' if left > 1 else ''}",
                UserWarning,
                stacklevel=2,
            )
        if remaining == 0:  # a plain ServerError: nothing is left to retry on
            before = f" (dropped before: {', '.join(self.dropped[:-1])})" if len(self.dropped) > 1 else ""
            raise ServerError(f"{error}{before}; {STOPPED}") from None


def describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
