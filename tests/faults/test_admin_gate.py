"""The admin work gate: state-changing `/api/v1` requests run their Python one at a time, and nothing else waits.

Each test drives a small Starlette app behind `AdminGate` (the real middleware) through httpx's ASGI transport, and
observes what runs at once with events, never with timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sidecar import outbound
from sidecar.admin_gate import AdminGate, Gate, gated, released
from sidecar.app import create_app

NEVER = 3600.0  # a lease no test waits out: only what the test does lets a turn go
Handler = Callable[[Request], Awaitable[None]]


class Probe:
    """What the handlers did: how many ran at once at most, and in which order they finished."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.finished: list[str] = []
        self.entered: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.entered.setdefault(name, asyncio.Event())


def make_app(probe: Probe, work: Handler, *, lease: float = NEVER) -> Starlette:
    async def handler(request: Request) -> Response:
        name = request.query_params.get("name", request.method)
        probe.running += 1
        probe.most = max(probe.most, probe.running)
        probe.event(name).set()
        try:
            await work(request)
        finally:
            probe.running -= 1
        probe.finished.append(name)
        return JSONResponse({"name": name})

    routes = [
        Route("/api/v1/thing", handler, methods=["GET", "PUT", "POST", "PATCH", "DELETE"]),
        Route("/healthz", handler, methods=["GET"]),
        Route("/mediamtx/auth", handler, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AdminGate, lease=lease)])


def gate_of(app: Starlette) -> Gate:
    """The gate of the app's middleware stack (built at its first request)."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, AdminGate):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, AdminGate)
    return layer.gate


@pytest.fixture
async def probe() -> Probe:
    return Probe()


async def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def yielding(request: Request) -> None:
    for _ in range(20):
        await asyncio.sleep(0)  # every other request gets turns here, were it let in


async def test_writes_never_run_their_handlers_at_once(probe: Probe) -> None:
    async with await client_for(make_app(probe, yielding)) as client:
        methods = ["PUT", "POST", "PATCH", "DELETE"] * 3
        answers = await asyncio.wait_for(asyncio.gather(*(client.request(m, "/api/v1/thing") for m in methods)), 10)
    assert [a.status_code for a in answers] == [200] * len(methods)
    assert probe.most == 1


async def test_reads_run_beside_each_other(probe: Probe) -> None:
    """The same handler as GETs: they do overlap (so the previous test could fail)."""
    async with await client_for(make_app(probe, yielding)) as client:
        await asyncio.gather(*(client.get("/api/v1/thing", params={"name": f"r{n}"}) for n in range(6)))
    assert probe.most > 1


async def held_until(release: asyncio.Event) -> Handler:
    async def work(request: Request) -> None:
        if request.query_params.get("name") == "holder":
            await release.wait()  # not outbound I/O: the turn stays held

    return work


async def test_reads_healthz_and_the_callback_are_never_gated(probe: Probe) -> None:
    release = asyncio.Event()
    app = make_app(probe, await held_until(release))
    async with await client_for(app) as client:
        holder = asyncio.create_task(client.put("/api/v1/thing", params={"name": "holder"}))
        await probe.event("holder").wait()
        assert gate_of(app).active == 1
        # While a write holds the gate, reads, /healthz and the MediaMTX callback all answer.
        for method, path, name in (
            ("GET", "/api/v1/thing", "read"),
            ("GET", "/healthz", "health"),
            ("POST", "/mediamtx/auth", "callback"),
        ):
            answer = await asyncio.wait_for(client.request(method, path, params={"name": name}), 10)
            assert answer.status_code == 200
        assert not holder.done()
        # ... but another write waits for it.
        writer = asyncio.create_task(client.put("/api/v1/thing", params={"name": "writer"}))
        while gate_of(app).waiting == 0:
            await asyncio.sleep(0)
        assert "writer" not in probe.entered
        release.set()
        await asyncio.gather(holder, writer)
    assert probe.finished == ["read", "health", "callback", "holder", "writer"]


def test_only_state_changing_api_requests_are_gated() -> None:
    def scope(method: str, path: str) -> Scope:
        return {"type": "http", "method": method, "path": path}

    assert all(gated(scope(m, "/api/v1/rules")) for m in ("POST", "PUT", "PATCH", "DELETE"))
    assert not any(gated(scope(m, "/api/v1/rules")) for m in ("GET", "HEAD", "OPTIONS"))
    paths = ("/healthz", "/readyz", "/mediamtx/auth", "/mediamtx/hooks/ready", "/auth/login", "/users", "/api/x")
    for path in (*paths, "/api/v1/streams/token"):  # a viewer's playback token never waits for admins
        assert not gated(scope("POST", path))
    assert not gated({"type": "websocket", "path": "/api/v1/rules"})


class HungUpstream(httpx.AsyncBaseTransport):
    """An upstream that answers only when told to."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.set()
        await self.answer.wait()
        return httpx.Response(200, json={"ok": True})


async def test_a_write_waiting_on_a_hung_upstream_lets_the_next_write_run(probe: Probe) -> None:
    upstream = HungUpstream()

    async def work(request: Request) -> None:
        if request.query_params.get("name") == "slow":
            async with httpx.AsyncClient(transport=upstream) as http:
                await outbound.fetch(http, "GET", "http://authentik.invalid/api/v3/core/users/", timeout=NEVER)
        else:
            await yielding(request)

    app = make_app(probe, work)
    async with await client_for(app) as client:
        slow = asyncio.create_task(client.put("/api/v1/thing", params={"name": "slow"}))
        await upstream.asked.wait()
        quick = [client.patch("/api/v1/thing", params={"name": f"quick{n}"}) for n in range(3)]
        answers = await asyncio.wait_for(asyncio.gather(*quick), 10)  # a guard against a hang, not a timing
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert not slow.done()
        upstream.answer.set()
        assert (await slow).status_code == 200
    assert probe.finished == ["quick0", "quick1", "quick2", "slow"]
    assert gate_of(app).active == 0


async def test_a_write_back_from_its_upstream_carries_on_before_new_writes(probe: Probe) -> None:
    """Coming back from the upstream it never queues again (it cannot wait behind a write that waits for it), and
    no new write starts until it is done."""
    gate = Gate(lease=NEVER)
    order: list[str] = []

    async def first() -> None:
        async with gate.turn():
            order.append("first in")
            async with released():
                await asyncio.sleep(0)
                assert gate.active == 0  # given back while waiting
            assert gate.active == 1  # back at once, although nothing let go meanwhile
            await asyncio.sleep(0)
            order.append("first out")

    async def second() -> None:
        async with gate.turn():
            order.append("second")

    one = asyncio.create_task(first())
    await asyncio.sleep(0)
    await asyncio.gather(one, second())
    assert order in (["first in", "second", "first out"], ["first in", "first out", "second"])
    assert gate.active == 0


async def test_a_background_task_of_a_request_does_not_give_its_turn_away() -> None:
    gate = Gate(lease=NEVER)

    async def background() -> None:
        async with released():  # inherited the request's context, not its turn
            assert gate.active == 1

    async with gate.turn():
        await asyncio.create_task(background())
        assert gate.active == 1
    assert gate.active == 0


async def test_the_gate_is_released_when_a_handler_raises() -> None:
    calls: list[str] = []

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["method"])
        if scope["method"] == "PUT":
            raise RuntimeError("the handler failed")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = AdminGate(failing, lease=NEVER)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        pass

    scope = {"type": "http", "method": "PUT", "path": "/api/v1/thing"}
    with pytest.raises(RuntimeError):
        await middleware(scope, receive, send)
    assert middleware.gate.active == 0
    await asyncio.wait_for(middleware({**scope, "method": "DELETE"}, receive, send), 10)
    assert calls == ["PUT", "DELETE"]
    assert middleware.gate.active == 0


async def test_a_cancelled_holder_and_a_cancelled_waiter_let_the_others_through() -> None:
    """A client that disconnects ends its request task: whether it held a turn or queued for one, the rest go on."""
    gate = Gate(lease=NEVER)
    holding, never = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def request(name: str) -> None:
        async with gate.turn():
            holding.set()
            if name != "last":
                await never.wait()
            done.append(name)

    holder = asyncio.create_task(request("holder"))
    await holding.wait()
    waiter = asyncio.create_task(request("waiter"))
    last = asyncio.create_task(request("last"))
    while gate.waiting < 2:
        await asyncio.sleep(0)
    waiter.cancel()
    holder.cancel()
    await asyncio.wait_for(last, 10)
    assert done == ["last"]
    assert waiter.cancelled() and holder.cancelled()
    assert gate.active == 0 and gate.waiting == 0


async def test_a_turn_held_while_waiting_on_something_else_lapses() -> None:
    """A holder stuck on a lock (or a thread, or another process) does not keep every other write out."""
    gate = Gate(lease=0.01)
    stuck, unstick = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with gate.turn():
            stuck.set()
            await unstick.wait()

    first = asyncio.create_task(holder())
    await stuck.wait()
    second_ran = asyncio.Event()

    async def second() -> None:
        async with gate.turn():
            second_ran.set()

    await asyncio.wait_for(second(), 10)
    assert second_ran.is_set() and not first.done()
    unstick.set()
    await first
    assert gate.active == 0


def test_the_sidecar_app_puts_writes_behind_the_gate() -> None:
    app = create_app()
    assert [m.cls for m in app.user_middleware][-1] is AdminGate  # innermost: bodies are read before queueing
