"""One policy for the sidecar's outbound HTTP calls: Authentik, MediaMTX's control API and the editor.

- A total deadline per call: connecting, waiting for a free connection, sending and every read of the answer
  together, never each phase on its own (an upstream trickling a byte a second would otherwise hold a request for
  as long as it likes). Clients that retry do so inside the same deadline (`deadline`).
- A cap on the size of an answer, enforced while it streams in: reading stops at the cap.
- One connection pool per upstream, so a hung Authentik fills only Authentik's pool and viewers' stream lists,
  which ask MediaMTX, keep their connections.
- No client ever stores a cookie: one client serves every person, and a cookie an upstream set for one of them
  must never go out with the next person's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx

from sidecar.admin_gate import released

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # far above any page of users, groups, paths or sessions these APIs return
DEFAULT_TOTAL_SECONDS = 30.0  # when a client comes without any timeout of its own
# Per upstream: a hung upstream holds at most this many connections (and file descriptors) of the sidecar, and
# requests to the others never wait for them. Authentik is asked for admin pages, sign-ins and the form; MediaMTX for
# every stream list and kick; the editor for every asset of its pages.
AUTHENTIK_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=10)
MEDIAMTX_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
EDITOR_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
OTHER_LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=2)

# The deadline (event-loop time) every outbound call inside the current task must finish by, if one is set.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("sidecar_outbound_deadline", default=None)


class DeadlineExceeded(httpx.TimeoutException):
    """The call as a whole (connect, send and every read together) took longer than its deadline."""


class AnswerTooLarge(httpx.TransportError):
    """The answer is larger than the cap; reading stopped there."""

    def __init__(self, limit: int, request: httpx.Request | None = None) -> None:
        super().__init__(f"the answer is larger than {describe_size(limit)}", request=request)
        self.limit = limit


def describe_size(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def total_timeout(http: httpx.AsyncClient) -> float:
    """A client's per-phase timeout taken as the whole call's deadline (its largest phase)."""
    phases = [value for value in http.timeout.as_dict().values() if value is not None]
    return max(phases) if phases else DEFAULT_TOTAL_SECONDS


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Every outbound call inside shares one deadline: `seconds` from now, or an enclosing one if that is earlier.
    Yields the deadline (event-loop time)."""
    now = asyncio.get_running_loop().time()
    outer = _deadline.get()
    at = now + seconds if outer is None else min(outer, now + seconds)
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def time_left(at: float | None = None) -> float:
    """Seconds until the given deadline (or the current one); infinite without any."""
    at = _deadline.get() if at is None else at
    return math.inf if at is None else at - asyncio.get_running_loop().time()


async def fetch(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout: float,
    limit: int = MAX_ANSWER_BYTES,
    params: httpx.QueryParams | Mapping[str, Any] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """One call, its answer read whole (decoded) within `timeout` seconds (or the enclosing `deadline`) and at
    most `limit` bytes. Raises `DeadlineExceeded`, `AnswerTooLarge`, or httpx's own errors."""
    with deadline(timeout) as at:
        request = http.build_request(
            method,
            url,
            params=params,
            json=json,
            # Plain bytes: the cap then counts what arrives, and no small compressed answer unpacks into gigabytes.
            headers={"Accept-Encoding": "identity", **(headers or {})},
            # httpx's own per-phase timeouts, each at most what is left of the whole.
            timeout=httpx.Timeout(max(time_left(at), 0.001)),
        )
        try:
            # An admin write waiting here lets the next one run (sidecar/admin_gate.py).
            async with released(), asyncio.timeout_at(at):
                response = await http.send(
                    request, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth, stream=True
                )
                try:
                    body = await read_capped(response, limit)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {timeout:g} s", request=request) from None
    headers_kept = [(name, value) for name, value in response.headers.raw if name.lower() not in _BODY_FRAMING]
    return httpx.Response(response.status_code, headers=headers_kept, content=body, request=request)


# The fields that described the bytes on the wire, not the decoded body handed on.
_BODY_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The decoded body, refusing an answer that announces or reaches more than `limit` bytes."""
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise AnswerTooLarge(limit, response.request)
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > limit:
            raise AnswerTooLarge(limit, response.request)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Policy:
    """What every request through one upstream's pool is held to; None: no limit of the pool's own (the editor
    proxy sets its own timeouts per request and streams answers of any size through)."""

    timeout: float | None
    max_answer_bytes: int | None


class PolicyTransport(httpx.AsyncBaseTransport):
    """Holds every request through `inner` to a policy, whoever sends it (the clients above, or `/readyz`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: Policy) -> None:
        self.inner = inner
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        loop = asyncio.get_running_loop()
        at = _deadline.get()
        if policy.timeout is not None:
            own = loop.time() + policy.timeout
            at = own if at is None else min(at, own)
        try:
            async with asyncio.timeout_at(at):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise DeadlineExceeded("no answer in time", request=request) from None
        limit = policy.max_answer_bytes
        announced = response.headers.get("content-length", "")
        if limit is not None and announced.isdigit() and int(announced) > limit:
            await response.aclose()
            raise AnswerTooLarge(limit, request)
        if at is None and limit is None:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Bounded(response.stream, request, at, limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Bounded(httpx.AsyncByteStream):
    """An answer's bytes, each read within the call's deadline, stopping at the cap."""

    def __init__(self, inner: Any, request: httpx.Request, at: float | None, limit: int | None) -> None:
        self.inner = inner
        self.request = request
        self.at = at
        self.limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        received = 0
        while True:
            try:
                async with asyncio.timeout_at(self.at):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlineExceeded("no answer in time", request=self.request) from None
            received += len(chunk)
            if self.limit is not None and received > self.limit:
                raise AnswerTooLarge(self.limit, self.request)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport several clients share (tests inject one); closed once, by its owner, not by each client."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class _Router(httpx.AsyncBaseTransport):
    """Sends each request through the pool of the upstream it goes to (by scheme, host and port)."""

    def __init__(self, routes: Mapping[tuple[str, str, int | None], httpx.AsyncBaseTransport], other: Any) -> None:
        self.routes = dict(routes)
        self.other: httpx.AsyncBaseTransport = other

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.routes.get(origin(request.url), self.other)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # the pools are closed by `Upstreams.aclose`, once each


def origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    port = parsed.port
    if port is None:
        port = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host.lower(), port


def no_cookies(client: httpx.AsyncClient) -> httpx.AsyncClient:
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client


@dataclass
class Upstreams:
    """The sidecar's HTTP clients, one pool per upstream.

    `authentik`, `mediamtx` and `editor` each have their own connections; `shared` is for anything else (the
    readiness checks) and sends a request to Authentik, MediaMTX or the editor through that upstream's pool.
    """

    authentik: httpx.AsyncClient
    mediamtx: httpx.AsyncClient
    editor: httpx.AsyncClient
    shared: httpx.AsyncClient
    _pools: tuple[httpx.AsyncBaseTransport, ...] = ()

    async def aclose(self) -> None:
        for client in (self.authentik, self.mediamtx, self.editor, self.shared):
            await client.aclose()
        for pool in self._pools:
            await pool.aclose()


def build_upstreams(
    *,
    timeout: float,
    authentik_url: str | None = None,
    mediamtx_url: str | None = None,
    editor_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Upstreams:
    """The clients for one sidecar. `timeout` is each call's total deadline for Authentik and MediaMTX (the editor
    proxy sets its own per request); `transport`, when given (tests), carries every upstream's requests."""

    def pool(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(limits=limits) if transport is None else _Borrowed(transport)

    api = Policy(timeout=timeout, max_answer_bytes=MAX_ANSWER_BYTES)
    authentik_pool = PolicyTransport(pool(AUTHENTIK_LIMITS), api)
    mediamtx_pool = PolicyTransport(pool(MEDIAMTX_LIMITS), api)
    editor_pool = pool(EDITOR_LIMITS)
    other_pool = PolicyTransport(pool(OTHER_LIMITS), api)
    routes: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}
    for url, routed in ((authentik_url, authentik_pool), (mediamtx_url, mediamtx_pool), (editor_url, editor_pool)):
        if url:
            with contextlib.suppress(httpx.InvalidURL):
                routes.setdefault(origin(url), routed)
    pools: tuple[httpx.AsyncBaseTransport, ...] = (authentik_pool, mediamtx_pool, editor_pool, other_pool)
    if transport is not None:
        pools = (transport,)

    def client(routed: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return no_cookies(httpx.AsyncClient(timeout=timeout, transport=_Borrowed(routed)))

    return Upstreams(
        authentik=client(authentik_pool),
        mediamtx=client(mediamtx_pool),
        editor=client(editor_pool),
        shared=client(_Router(routes, other_pool)),
        _pools=pools,
    )
