"""MediaMTXClient against canned answers and against the fake MediaMTX, every exchange held to MediaMTX's schema."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from sidecar.mediamtx import (
    NOT_MEDIAMTX_MESSAGE,
    MediaMTXClient,
    MediaMTXError,
    MediaMTXNotFound,
    MediaMTXRejected,
    MediaMTXUnauthorized,
    MediaMTXUnavailable,
    PathConfig,
    PathInfo,
    Session,
    SessionKind,
    escape_path,
)
from tests.fake_mediamtx import PATH_CONF_FIELDS, FakeMediaMTX, create_fake_mediamtx
from tests.helpers import streamed_answer

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "shared" / "mediamtx" / "openapi.yaml"
BASE = "http://mediamtx.test:9997"
STARTED = "2025-05-01T10:00:00Z"
CAM_ID = "0d4f3c9a-6a53-4a3e-9a0e-7f1f1d1b2c3d"
Handler = Callable[[httpx.Request], httpx.Response]


# --- the contract: MediaMTX's OpenAPI 3.0 document as JSON Schema ------------------------------------------------


def _json_schema(node: Any) -> Any:
    """One OpenAPI 3.0 schema object as JSON Schema 2020-12: `nullable` becomes a null branch, refs point at $defs."""
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "deprecated", "example"):
            continue
        if key == "$ref":
            converted[key] = value.replace("#/components/schemas/", "#/$defs/")
        elif key == "properties":
            converted[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("allOf", "oneOf", "anyOf"):
            converted[key] = [_json_schema(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            converted[key] = _json_schema(value)
        else:
            converted[key] = value
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


class Contract:
    """Checks requests and responses against the operations of MediaMTX's control-API schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.defs = {name: _json_schema(schema) for name, schema in document["components"]["schemas"].items()}
        self.operations: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for template, item in document["paths"].items():
            # MediaMTX routes path names as catch-alls (`/config/paths/add/*name`), so `{name}` may hold slashes.
            pattern = template.replace("{name}", "(?P<name>.*)").replace("{id}", "(?P<id>[^/]+)")
            for method, operation in item.items():
                self.operations.append((re.compile(f"^{pattern}$"), method.upper(), operation))

    def operation(self, method: str, path: str) -> dict[str, Any]:
        for pattern, op_method, operation in self.operations:
            if op_method == method and pattern.match(path):
                return operation
        raise AssertionError(f"MediaMTX's schema has no operation {method} {path}")

    def validate(self, schema: dict[str, Any], instance: Any) -> None:
        root = {**_json_schema(schema), "$defs": self.defs}
        validator = jsonschema.Draft202012Validator(root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        validator.validate(instance)

    def check_request(self, request: httpx.Request) -> None:
        operation = self.operation(request.method, request.url.path)
        declared = {param["name"]: param for param in operation.get("parameters", []) if param["in"] == "query"}
        for name, value in request.url.params.multi_items():
            assert name in declared, f"{request.method} {request.url.path} takes no query parameter {name!r}"
            schema = declared[name]["schema"]
            self.validate(schema, int(value) if schema.get("type") == "integer" and value.isdigit() else value)
        body = request.content
        if "requestBody" in operation:
            assert body, f"{request.method} {request.url.path} needs a JSON body"
            self.validate(operation["requestBody"]["content"]["application/json"]["schema"], json.loads(body))
        else:
            assert not body, f"{request.method} {request.url.path} takes no body"

    def check_response(self, request: httpx.Request, status: int, content: bytes) -> None:
        if status == 404 and content == b"404 page not found":
            # gin's answer for a route that is not registered (a protocol whose server is off); outside the schema.
            return
        operation = self.operation(request.method, request.url.path)
        if status == 401:
            # MediaMTX's auth middleware answers 401 with its Error body on every route; the schema leaves it out.
            schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        else:
            documented = operation["responses"].get(str(status))
            assert documented, f"{request.method} {request.url.path} never answers {status}"
            schema = documented["content"]["application/json"]["schema"]
        self.validate(schema, json.loads(content))


@pytest.fixture(scope="session")
def schema_contract() -> Contract | None:
    if not SCHEMA_FILE.exists():
        return None
    return Contract(yaml.safe_load(SCHEMA_FILE.read_text()))


@pytest.fixture
def contract(schema_contract: Contract | None) -> Contract:
    if schema_contract is None:
        pytest.skip(f"MediaMTX's OpenAPI schema is not at {SCHEMA_FILE}")
    return schema_contract


class CheckedTransport(httpx.AsyncBaseTransport):
    """Holds every request (and, unless told otherwise, every response) to the contract, and records requests."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, contract: Contract | None, *, check_responses: bool = True
    ) -> None:
        self.inner = inner
        self.contract = contract
        self.check_responses = check_responses
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self.contract:
            self.contract.check_request(request)
        response = await self.inner.handle_async_request(request)
        if self.contract and self.check_responses:
            content = await response.aread()
            self.contract.check_response(request, response.status_code, content)
        return response


@asynccontextmanager
async def canned(
    handler: Handler, contract: Contract | None, *, check_responses: bool = True, **options: Any
) -> AsyncIterator[tuple[MediaMTXClient, CheckedTransport]]:
    transport = CheckedTransport(httpx.MockTransport(handler), contract, check_responses=check_responses)
    base_url = options.pop("base_url", BASE)
    options.setdefault("retry_backoff", (0, 0))
    async with httpx.AsyncClient(transport=transport) as http:
        yield MediaMTXClient(http, base_url, **options), transport


@pytest.fixture
def fake() -> FakeMediaMTX:
    return create_fake_mediamtx()


@pytest.fixture
async def on_fake(
    fake: FakeMediaMTX, schema_contract: Contract | None
) -> AsyncIterator[tuple[MediaMTXClient, CheckedTransport]]:
    transport = CheckedTransport(httpx.ASGITransport(app=fake.app), schema_contract)
    async with httpx.AsyncClient(transport=transport) as http:
        yield MediaMTXClient(http, BASE, page_size=2, retry_backoff=(0, 0)), transport


# --- canned MediaMTX answers ------------------------------------------------------------------------------------


def path_item(name: str, *, ready: bool = True, readers: int = 0) -> dict[str, Any]:
    when = STARTED if ready else None
    return {
        "name": name,
        "confName": "all_others",
        "source": {"type": "rtspSession", "id": CAM_ID} if ready else None,
        "ready": ready,
        "readyTime": when,
        "available": ready,
        "availableTime": when,
        "online": ready,
        "onlineTime": when,
        "tracks": ["H264", "MPEG-4 Audio"] if ready else [],
        "tracks2": [{"codec": "H264", "codecProps": None}, {"codec": "MPEG-4 Audio", "codecProps": None}]
        if ready
        else [],
        "readers": [{"type": "webRTCSession", "id": str(uuid.uuid4())} for _ in range(readers)],
        "inboundBytes": 1000,
        "outboundBytes": 2000,
        "inboundFramesInError": 0,
        "bytesReceived": 1000,
        "bytesSent": 2000,
    }


def page_of(items: list[dict[str, Any]], page_count: int, item_count: int | None = None) -> dict[str, Any]:
    return {"itemCount": len(items) if item_count is None else item_count, "pageCount": page_count, "items": items}


def error_body(message: str) -> dict[str, str]:
    return {"status": "error", "error": message}


def ok() -> httpx.Response:
    return httpx.Response(200, json={"status": "ok"})


def always(response: Callable[[], httpx.Response]) -> tuple[Handler, list[httpx.Request]]:
    """A handler giving a fresh copy of the same answer to every request, and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response()

    return handler, seen


# --- paths ------------------------------------------------------------------------------------------------------


async def test_list_paths_follows_every_page(schema_contract: Contract | None) -> None:
    pages = {
        "0": page_of([path_item("live/a"), path_item("live/b", readers=2)], 3, 5),
        "1": page_of([path_item("live/c", ready=False), path_item("live/d")], 3, 5),
        "2": page_of([path_item("live/e")], 3, 5),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/paths/list"
        assert request.url.params["itemsPerPage"] == "2"
        return httpx.Response(200, json=pages[request.url.params["page"]])

    async with canned(handler, schema_contract, page_size=2) as (client, transport):
        paths = await client.list_paths()

    assert [p.name for p in paths] == ["live/a", "live/b", "live/c", "live/d", "live/e"]
    assert [r.url.params["page"] for r in transport.requests] == ["0", "1", "2"]
    assert all(r.method == "GET" for r in transport.requests)
    b, c = paths[1], paths[2]
    assert b.ready and b.online and len(b.readers) == 2 and b.readers[0].type == "webRTCSession"
    assert b.tracks == ("H264", "MPEG-4 Audio") and b.ready_time == STARTED
    assert b.source is not None and b.source.type == "rtspSession" and b.source.id == CAM_ID
    assert (b.inbound_bytes, b.outbound_bytes) == (1000, 2000)
    assert not c.ready and c.source is None and c.tracks == () and c.ready_time is None


async def test_a_path_shifting_between_pages_is_listed_once(schema_contract: Contract | None) -> None:
    pages = {"0": page_of([path_item("a"), path_item("b")], 2, 4), "1": page_of([path_item("b"), path_item("c")], 2)}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params["page"]])

    async with canned(handler, schema_contract, page_size=2) as (client, _):
        assert [p.name for p in await client.list_paths()] == ["a", "b", "c"]


async def test_an_empty_list_is_one_request(schema_contract: Contract | None) -> None:
    handler, seen = always(lambda: httpx.Response(200, json=page_of([], 0)))
    async with canned(handler, schema_contract) as (client, _):
        assert await client.list_paths() == []
    assert len(seen) == 1


def test_path_info_tolerates_missing_extra_and_null_fields() -> None:
    assert PathInfo.from_json({"name": "x"}) == PathInfo(name="x")
    nulls = PathInfo.from_json(
        {"name": "x", "source": None, "readyTime": None, "readers": None, "tracks2": None, "inboundBytes": None}
    )
    assert nulls == PathInfo(name="x")
    # Before `available`/`online`/`tracks2` existed MediaMTX only sent `ready`, `tracks` and byte counters.
    old = PathInfo.from_json(
        {"name": "x", "ready": True, "readyTime": STARTED, "tracks": ["H264"], "bytesReceived": 5, "future": {}}
    )
    assert old.ready and old.online and old.tracks == ("H264",) and old.inbound_bytes == 5
    assert old.ready_time == STARTED


async def test_list_paths_against_the_fake(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, transport = on_fake
    for name in ("live/e", "live/a", "live/c", "live/b", "live/d"):
        fake.add_path(name)
    fake.set_ready("live/cam1", ready=True)
    fake.add_session("webrtcsessions", path="live/cam1", user="alice")

    paths = await client.list_paths()

    assert [p.name for p in paths] == ["live/a", "live/b", "live/c", "live/cam1", "live/d", "live/e"]
    assert len(transport.requests) == 3  # six paths, two per page
    cam = next(p for p in paths if p.name == "live/cam1")
    assert cam.ready and cam.tracks == ("H264",) and [r.type for r in cam.readers] == ["webRTCSession"]
    assert not paths[0].ready


async def test_get_path_escapes_each_segment(schema_contract: Contract | None) -> None:
    handler, seen = always(lambda: httpx.Response(200, json=path_item("whatever")))
    async with canned(handler, schema_contract) as (client, _):
        await client.get_path("live/cam 1")
        await client.get_path("a?b#c%d/e")
        await client.get_path("../../auth/jwks/refresh")
    assert [r.url.raw_path for r in seen] == [
        b"/v3/paths/get/live/cam%201",
        b"/v3/paths/get/a%3Fb%23c%25d/e",
        # Dot segments stay inside the name instead of climbing to another endpoint.
        b"/v3/paths/get/%2E%2E/%2E%2E/auth/jwks/refresh",
    ]


def test_escape_path_keeps_slashes_and_regex_names_round_trip() -> None:
    assert escape_path("live/drone1") == "live/drone1"
    assert escape_path("~^live/.*$") == "~%5Elive/.%2A%24"
    assert escape_path(".") == "%2E"


async def test_get_path_against_the_fake(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, _ = on_fake
    fake.set_ready("live/cam 1", ready=True)
    path = await client.get_path("live/cam 1")
    assert path.name == "live/cam 1" and path.ready and path.conf_name == "all_others"
    with pytest.raises(MediaMTXNotFound) as caught:
        await client.get_path("live/nothing")
    assert caught.value.status == 404 and caught.value.message == "path not found"


# --- path configuration -----------------------------------------------------------------------------------------


async def test_path_config_requests(schema_contract: Contract | None) -> None:
    handler, seen = always(ok)
    config = {"source": "rtsp://10.0.0.5/stream", "sourceOnDemand": True}
    async with canned(handler, schema_contract) as (client, _):
        await client.add_path_config("drones/d 1", config)
        await client.patch_path_config("drones/d 1", {"record": True})
        await client.delete_path_config("drones/d 1")
    assert [(r.method, r.url.raw_path) for r in seen] == [
        ("POST", b"/v3/config/paths/add/drones/d%201"),
        ("PATCH", b"/v3/config/paths/patch/drones/d%201"),
        ("DELETE", b"/v3/config/paths/delete/drones/d%201"),
    ]
    assert json.loads(seen[0].content) == config
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[1].content) == {"record": True}
    assert seen[2].content == b""


async def test_list_path_configs_follows_every_page(schema_contract: Contract | None) -> None:
    items = [{"name": f"cam{i}", "source": "publisher", "record": i == 2, "maxReaders": i} for i in range(5)]
    items[3]["sourceOnDemand"] = True

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/config/paths/list"
        page = int(request.url.params["page"])
        return httpx.Response(200, json=page_of(items[page * 2 : page * 2 + 2], 3, 5))

    async with canned(handler, schema_contract, page_size=2) as (client, transport):
        configs = await client.list_path_configs()
    assert [c.name for c in configs] == ["cam0", "cam1", "cam2", "cam3", "cam4"]
    assert len(transport.requests) == 3
    assert configs[2].record and configs[4].max_readers == 4 and configs[3].source_on_demand
    assert configs[0].values["source"] == "publisher" and not configs[0].source_on_demand


def test_path_config_tolerates_missing_extra_and_null_fields() -> None:
    bare = PathConfig.from_json({"name": "x"})
    assert (bare.name, bare.source, bare.source_on_demand, bare.record, bare.max_readers) == (
        "x",
        "publisher",
        False,
        False,
        0,
    )
    odd = PathConfig.from_json({"name": "x", "source": None, "sourceOnDemand": None, "maxReaders": None, "new": 1})
    assert (odd.source, odd.source_on_demand, odd.max_readers, odd.values["new"]) == ("publisher", False, 0, 1)


async def test_path_config_round_trip_against_the_fake(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, _ = on_fake
    fake.add_config_path("all_others")
    await client.add_path_config("drones/d1", {"source": "rtsp://10.0.0.5/stream", "sourceOnDemand": True})
    await client.add_path_config("~^live/.*$", {})
    await client.add_path_config("a", {})

    configs = {c.name: c for c in await client.list_path_configs()}
    assert set(configs) == {"a", "all_others", "drones/d1", "~^live/.*$"}
    assert configs["drones/d1"].source == "rtsp://10.0.0.5/stream" and configs["drones/d1"].source_on_demand
    assert "drones/d1" in {p.name for p in await client.list_paths()}  # a configured plain name is a path at once

    await client.patch_path_config("drones/d1", {"record": True, "sourceOnDemand": False})
    assert fake.config_paths["drones/d1"]["record"] is True
    await client.delete_path_config("drones/d1")
    assert "drones/d1" not in fake.config_paths and "drones/d1" not in fake.paths


@pytest.mark.parametrize(
    ("call", "error", "status", "message"),
    [
        (lambda c: c.add_path_config("a", {}), MediaMTXRejected, 400, "path already exists"),
        (lambda c: c.add_path_config("b", {"bogus": 1}), MediaMTXRejected, 400, 'json: unknown field "bogus"'),
        (lambda c: c.add_path_config("../x", {}), MediaMTXRejected, 400, "invalid path name '../x': can't contain"),
        (lambda c: c.patch_path_config("nope", {"record": True}), MediaMTXNotFound, 404, "path not found"),
        (lambda c: c.delete_path_config("nope"), MediaMTXNotFound, 404, "path not found"),
    ],
)
async def test_path_config_refusals_carry_mediamtx_message(
    fake: FakeMediaMTX,
    on_fake: tuple[MediaMTXClient, Any],
    call: Callable[[MediaMTXClient], Any],
    error: type[MediaMTXRejected],
    status: int,
    message: str,
) -> None:
    client, transport = on_fake
    fake.add_config_path("a")
    with pytest.raises(error) as caught:
        await call(client)
    assert type(caught.value) is error
    assert caught.value.status == status and caught.value.message.startswith(message)
    assert len(transport.requests) == 1  # writes are never retried


# --- sessions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SessionKind))
async def test_list_sessions_of_every_kind(
    fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any], kind: SessionKind
) -> None:
    client, transport = on_fake
    user = "" if kind is SessionKind.MOQ else "alice"
    ids = [fake.add_session(kind.value, path="live/cam1", user=user, query="token=abc") for _ in range(3)]
    fake.add_session(kind.value, path="live/other", remote_addr="10.1.2.3:4000")

    sessions = await client.list_sessions(kind)

    assert [s.id for s in sessions][:3] == ids and len(sessions) == 4
    assert [r.url.path for r in transport.requests] == [f"/v3/{kind.value}/list"] * 2
    first = sessions[0]
    assert first.kind is kind and first.path == "live/cam1" and first.query == "token=abc" and first.user == user
    assert first.state == "read" and first.remote_addr == "127.0.0.1:50000" and first.created
    assert sessions[3].remote_addr == "10.1.2.3:4000"


def test_session_tolerates_missing_and_null_fields() -> None:
    bare = Session.from_json(SessionKind.MOQ, {"id": CAM_ID, "user": None, "path": None, "extra": [1]})
    assert bare == Session(kind=SessionKind.MOQ, id=CAM_ID)
    assert Session.from_json(SessionKind.HLS, {"id": CAM_ID}).state == "read"


async def test_list_all_sessions_skips_disabled_protocols(
    fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]
) -> None:
    client, transport = on_fake
    rtsp = fake.add_session("rtspsessions", path="live/a", user="bob", state="publish")
    hls = fake.add_session("hlssessions", path="live/a", user="alice")
    fake.add_session("srtconns", path="live/a", user="carol")
    fake.disable("srtconns", "rtmpconns", "rtmpsconns", "moqsessions")

    sessions = await client.list_all_sessions()

    assert sorted((s.kind.value, s.id, s.state) for s in sessions) == sorted(
        [("rtspsessions", rtsp, "publish"), ("hlssessions", hls, "read")]
    )
    assert len(transport.requests) == len(SessionKind)  # a disabled protocol's 404 is not retried

    with pytest.raises(MediaMTXNotFound):
        await client.list_sessions(SessionKind.SRT)


async def test_list_all_sessions_with_canned_disabled_protocol(schema_contract: Contract | None) -> None:
    item: dict[str, Any] = {"id": CAM_ID, "created": STARTED, "remoteAddr": "10.0.0.9:5000", "state": "read"}
    item.update(path="live/a", query="", user="dave", userAgent="ffmpeg", inboundBytes=0, outboundBytes=0)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/rtmpconns/list":
            return httpx.Response(200, json=page_of([item], 1))
        return httpx.Response(404, text="404 page not found")

    async with canned(handler, schema_contract) as (client, _):
        sessions = await client.list_all_sessions()
    assert sessions == [
        Session(SessionKind.RTMP, CAM_ID, "live/a", "", "10.0.0.9:5000", "dave", "read", STARTED, "ffmpeg")
    ]


async def test_kick_session_against_the_fake(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, transport = on_fake
    reader = fake.add_session("rtspsessions", path="live/cam1", user="alice")
    publisher = fake.add_session("rtmpconns", path="live/cam1", state="publish")

    await client.kick_session(SessionKind.RTSP, reader)
    assert fake.kicked == [("rtspsessions", reader)] and fake.session_ids("rtspsessions") == []
    assert fake.paths["live/cam1"].readers == []
    await client.kick_session(SessionKind.RTMP, publisher)
    assert not (await client.get_path("live/cam1")).ready

    with pytest.raises(MediaMTXNotFound) as caught:
        await client.kick_session(SessionKind.RTSP, reader)
    assert caught.value.message == "session not found"
    with pytest.raises(MediaMTXRejected) as bad:
        await client.kick_session(SessionKind.WEBRTC, "not-a-uuid")
    assert bad.value.status == 400
    assert [r.method for r in transport.requests if "/kick/" in r.url.path] == ["POST"] * 4


async def test_kick_session_request(schema_contract: Contract | None) -> None:
    handler, seen = always(ok)
    async with canned(handler, schema_contract) as (client, _):
        await client.kick_session(SessionKind.SRT, CAM_ID)
    assert [(r.method, r.url.raw_path, r.content) for r in seen] == [
        ("POST", f"/v3/srtconns/kick/{CAM_ID}".encode(), b"")
    ]


# --- JWKS refresh and info --------------------------------------------------------------------------------------


async def test_refresh_jwks_and_info_against_the_fake(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, transport = on_fake
    await client.refresh_jwks()
    await client.refresh_jwks()
    assert fake.jwks_refreshes == 2
    info = await client.info()
    assert info.version == "v1.20.1" and info.started == fake.started
    assert [(r.method, r.url.path) for r in transport.requests] == [
        ("POST", "/v3/auth/jwks/refresh"),
        ("POST", "/v3/auth/jwks/refresh"),
        ("GET", "/v3/info"),
    ]


async def test_refresh_jwks_request(schema_contract: Contract | None) -> None:
    handler, seen = always(ok)
    async with canned(handler, schema_contract) as (client, _):
        await client.refresh_jwks()
    assert [(r.method, r.url.path, r.content) for r in seen] == [("POST", "/v3/auth/jwks/refresh", b"")]


# --- failures ---------------------------------------------------------------------------------------------------


def _raise(error: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    return handler


@pytest.mark.parametrize(
    ("transport_error", "attempts"),
    # A timeout, connecting included, has used up the call's one deadline: it is not tried again.
    [(httpx.ConnectError, 3), (httpx.ConnectTimeout, 1), (httpx.RemoteProtocolError, 3), (httpx.ReadTimeout, 1)],
)
async def test_transport_failures_are_unavailable(
    schema_contract: Contract | None, transport_error: type[httpx.TransportError], attempts: int
) -> None:
    async with canned(_raise(transport_error), schema_contract) as (client, transport):
        with pytest.raises(MediaMTXUnavailable) as caught:
            await client.list_paths()
        assert len(transport.requests) == attempts  # a read that already timed out is not repeated
        transport.requests.clear()
        with pytest.raises(MediaMTXUnavailable):
            await client.kick_session(SessionKind.RTSP, CAM_ID)
        assert len(transport.requests) == 1
    assert "mediamtx.test:9997" in caught.value.message and "boom" not in caught.value.message


async def test_a_server_error_is_retried_for_reads_only(schema_contract: Contract | None) -> None:
    handler, seen = always(lambda: httpx.Response(500, json=error_body("terminated")))
    writes: list[Callable[[MediaMTXClient], Awaitable[None]]] = [
        lambda c: c.refresh_jwks(),
        lambda c: c.kick_session(SessionKind.RTSP, CAM_ID),
        lambda c: c.add_path_config("a", {}),
        lambda c: c.patch_path_config("a", {}),
        lambda c: c.delete_path_config("a"),
    ]
    async with canned(handler, schema_contract) as (client, _):
        with pytest.raises(MediaMTXUnavailable) as caught:
            await client.get_path("live/a")
        assert len(seen) == 3
        assert caught.value.message == "MediaMTX failed (500): terminated"
        for write in writes:
            seen.clear()
            with pytest.raises(MediaMTXUnavailable):
                await write(client)
            assert len(seen) == 1


async def test_a_read_recovers_after_passing_failures(fake: FakeMediaMTX, on_fake: tuple[MediaMTXClient, Any]) -> None:
    client, transport = on_fake
    fake.add_path("live/a")
    fake.fail_next(500, times=2)
    assert [p.name for p in await client.list_paths()] == ["live/a"]
    assert len(transport.requests) == 3


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (400, MediaMTXRejected, "invalid items per page"),
        (401, MediaMTXUnauthorized, "the sidecar's MediaMTX API credentials were refused"),
        (404, MediaMTXNotFound, "path not found"),
    ],
)
async def test_refusals_map_to_exceptions(
    schema_contract: Contract | None, status: int, error: type[MediaMTXRejected], message: str
) -> None:
    body = error_body("authentication error" if status == 401 else message)
    handler, seen = always(lambda: httpx.Response(status, json=body))
    async with canned(handler, schema_contract) as (client, _):
        with pytest.raises(error) as caught:
            await client.get_path("live/a")
    assert type(caught.value) is error and caught.value.status == status and caught.value.message == message
    assert len(seen) == 1  # a refusal is final


async def test_answers_mediamtx_never_gives_are_still_mapped(schema_contract: Contract | None) -> None:
    # What a proxy in front of MediaMTX, or a wrong URL, may answer: outside the schema, so not checked against it.
    cases: list[tuple[Callable[[], httpx.Response], type[MediaMTXError], str]] = [
        (lambda: httpx.Response(403, text="<html>denied</html>"), MediaMTXUnauthorized, "credentials were refused"),
        (lambda: httpx.Response(502, text="<html>upstream page</html>"), MediaMTXUnavailable, "MediaMTX failed (502)"),
        (lambda: httpx.Response(200, text="<html>an editor page</html>"), MediaMTXError, "cannot read"),
        (lambda: httpx.Response(200, json=["not", "an", "object"]), MediaMTXError, "cannot read"),
        (lambda: httpx.Response(302, headers={"location": "/login"}), MediaMTXError, "unexpected status (302)"),
        (lambda: httpx.Response(418, json={"error": "x" * 500 + "\nsecond line"}), MediaMTXRejected, "x" * 200),
    ]
    for response, error, fragment in cases:
        handler, _ = always(response)
        async with canned(handler, schema_contract, check_responses=False) as (client, _):
            with pytest.raises(error) as caught:
                await client.info()
        assert fragment in caught.value.message
        assert "<html>" not in caught.value.message and "second" not in caught.value.message
        assert len(caught.value.message) <= 200


WRITES: list[Callable[[MediaMTXClient], Awaitable[None]]] = [
    lambda c: c.add_path_config("live/a", {"source": "publisher"}),
    lambda c: c.patch_path_config("live/a", {"sourceOnDemand": True}),
    lambda c: c.delete_path_config("live/a"),
    lambda c: c.kick_session(SessionKind.RTSP, CAM_ID),
    lambda c: c.refresh_jwks(),
]


@pytest.mark.parametrize(
    "answer",
    [
        lambda: httpx.Response(200, json={"status": "ok"}),  # v1.20.1: the `OK` schema
        lambda: httpx.Response(200),  # releases before it: a bare 200, no body, no content type
    ],
    ids=["ok-object", "bare-200"],
)
async def test_a_write_is_done_when_mediamtx_confirms_it(answer: Callable[[], httpx.Response]) -> None:
    handler, seen = always(answer)
    async with canned(handler, None) as (client, _):
        for write in WRITES:
            await write(client)
    assert len(seen) == len(WRITES)


@pytest.mark.parametrize(
    "answer",
    [
        lambda: httpx.Response(200, html="<!doctype html><title>Welcome</title><p>It works"),
        lambda: httpx.Response(200, headers={"content-type": "text/html"}),
        lambda: httpx.Response(200, json={"ok": True}),
        lambda: httpx.Response(200, json={"status": "error", "error": "x"}),
        lambda: httpx.Response(200, json=["ok"]),
        lambda: httpx.Response(200, text="ok"),
        lambda: httpx.Response(201, json={"status": "ok"}),
        lambda: httpx.Response(204),
    ],
    ids=["html-page", "empty-html", "other-json", "error-status", "json-list", "plain-text", "201", "204"],
)
async def test_a_write_answered_by_something_else_is_not_taken_as_done(answer: Callable[[], httpx.Response]) -> None:
    handler, seen = always(answer)
    async with canned(handler, None) as (client, _):
        for write in WRITES:
            with pytest.raises(MediaMTXError) as caught:
                await write(client)
            assert caught.value.message == NOT_MEDIAMTX_MESSAGE
    assert len(seen) == len(WRITES)  # and never sent twice


async def test_an_answer_over_the_cap_is_refused_while_it_streams() -> None:
    handler, sent = streamed_answer(1000, size=100)
    async with canned(handler, None, max_answer_bytes=1024) as (client, transport):
        with pytest.raises(MediaMTXUnavailable) as caught:
            await client.list_paths()
    assert caught.value.message == "MediaMTX sent an answer larger than 1 KiB; the sidecar stopped reading"
    assert sum(sent) < 2048 and len(transport.requests) == 1
    announced = httpx.Response(200, headers={"content-length": str(150 * 1024 * 1024)}, content=b"{}")
    async with canned(lambda request: announced, None, max_answer_bytes=1024) as (client, _):
        with pytest.raises(MediaMTXUnavailable, match="larger than 1 KiB"):
            await client.info()


async def test_every_page_of_a_listing_shares_one_deadline() -> None:
    calls: list[int] = []

    async def slow_page(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        await asyncio.sleep(0.1)  # each page far within the deadline; ten of them are not
        return httpx.Response(200, json=page_of([path_item(f"live/{len(calls)}")], page_count=10))

    transport = httpx.MockTransport(slow_page)
    async with httpx.AsyncClient(transport=transport) as http:
        client = MediaMTXClient(http, BASE, timeout=0.35, retry_backoff=())
        with pytest.raises(MediaMTXUnavailable) as caught:
            await client.list_paths()
    assert caught.value.message == "MediaMTX at http://mediamtx.test:9997 did not answer within 0.35 s"
    assert len(calls) < 10


async def test_a_trickling_answer_is_cut_off_at_the_calls_deadline() -> None:
    handler, sent = streamed_answer(1000, pause=0.02)
    async with canned(handler, None, timeout=0.3) as (client, _):
        for call in (lambda c: c.info(), *WRITES):
            sent.clear()
            with pytest.raises(MediaMTXUnavailable, match=r"did not answer within 0\.3 s"):
                await call(client)
            assert len(sent) < 100


async def test_credentials_are_sent_and_a_refusal_is_unauthorized(
    fake: FakeMediaMTX, schema_contract: Contract | None
) -> None:
    fake.require_credentials("sidecar", "right")
    transport = CheckedTransport(httpx.ASGITransport(app=fake.app), schema_contract)
    # Credentials given to the client win; without them the AsyncClient's own auth is kept.
    for auth, client_auth in [(httpx.BasicAuth("sidecar", "right"), ("x", "y")), (None, ("sidecar", "right"))]:
        async with httpx.AsyncClient(transport=transport, auth=client_auth) as http:
            assert (await MediaMTXClient(http, BASE, auth).info()).version
    async with httpx.AsyncClient(transport=transport) as http:
        client = MediaMTXClient(http, BASE, httpx.BasicAuth("sidecar", "wrong"), retry_backoff=(0, 0))
        with pytest.raises(MediaMTXUnauthorized) as caught:
            await client.list_paths()
    assert caught.value.status == 401 and "wrong" not in caught.value.message


async def test_credentials_in_the_url_never_reach_a_message(schema_contract: Contract | None) -> None:
    async with canned(_raise(httpx.ConnectError), schema_contract, base_url="http://u:hunter2@mm.test:9997/") as (
        client,
        _,
    ):
        with pytest.raises(MediaMTXUnavailable) as caught:
            await client.info()
    assert caught.value.message == "MediaMTX is unreachable at http://mm.test:9997"


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.WriteError, httpx.PoolTimeout, httpx.UnsupportedProtocol])
async def test_no_httpx_exception_escapes(schema_contract: Contract | None, error: type[httpx.TransportError]) -> None:
    async with canned(_raise(error), schema_contract) as (client, _):
        with pytest.raises(MediaMTXError) as caught:
            await client.list_all_sessions()
    assert not isinstance(caught.value, httpx.HTTPError)


# --- the contract itself ----------------------------------------------------------------------------------------


def test_every_session_kind_can_be_listed_and_kicked(contract: Contract) -> None:
    for kind in SessionKind:
        contract.operation("GET", f"/v3/{kind.value}/list")
        contract.operation("POST", f"/v3/{kind.value}/kick/{CAM_ID}")


def test_the_fake_knows_exactly_the_schema_path_settings() -> None:
    if not SCHEMA_FILE.exists():
        pytest.skip(f"MediaMTX's OpenAPI schema is not at {SCHEMA_FILE}")
    document = yaml.safe_load(SCHEMA_FILE.read_text())
    assert set(document["components"]["schemas"]["PathConf"]["properties"]) == PATH_CONF_FIELDS


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v3/paths/list", page_of([{**path_item("a"), "ready": "yes"}], 1)),
        ("GET", "/v3/paths/list", {**page_of([], 0), "pageCount": "1"}),
        ("GET", "/v3/paths/get/a", {**path_item("a"), "source": {"type": "carrierPigeon", "id": "1"}}),
        ("GET", "/v3/rtspsessions/list", page_of([{"id": "not-a-uuid", "path": "a"}], 1)),
        ("GET", "/v3/webrtcsessions/list", page_of([{"id": CAM_ID, "state": "idle"}], 1)),
        ("POST", "/v3/auth/jwks/refresh", {"status": "done"}),
        ("GET", "/v3/info", {"version": 1}),
    ],
)
def test_a_wrong_canned_response_fails_the_contract(
    contract: Contract, method: str, path: str, body: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        contract.check_response(httpx.Request(method, BASE + path), 200, json.dumps(body).encode())


def test_undocumented_requests_and_answers_fail_the_contract(contract: Contract) -> None:
    with pytest.raises(AssertionError, match="no operation"):
        contract.check_request(httpx.Request("GET", BASE + "/v3/paths/kick/a"))
    with pytest.raises(AssertionError, match="takes no query parameter"):
        contract.check_request(httpx.Request("GET", BASE + "/v3/paths/list?pageSize=3"))
    with pytest.raises(jsonschema.ValidationError):
        contract.check_request(httpx.Request("POST", BASE + "/v3/config/paths/add/a", json={"sourceOnDemand": "y"}))
    with pytest.raises(AssertionError, match="never answers 404"):
        contract.check_response(httpx.Request("GET", BASE + "/v3/paths/list"), 404, b'{"error": "x"}')


async def test_a_wrong_canned_response_stops_the_client(contract: Contract) -> None:
    handler, _ = always(lambda: httpx.Response(200, json=page_of([{**path_item("a"), "readers": {}}], 1)))
    async with canned(handler, contract) as (client, _):
        with pytest.raises(jsonschema.ValidationError):
            await client.list_paths()


@pytest.fixture
def raw_fake(fake: FakeMediaMTX, contract: Contract) -> Callable[..., Any]:
    """Plain HTTP calls to the fake, each answer held to the contract, for answers the client never provokes."""
    transport = CheckedTransport(httpx.ASGITransport(app=fake.app), None)

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            response = await http.request(method, path, **kwargs)
        contract.check_response(response.request, response.status_code, response.content)
        return response

    return call


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v3/paths/list?itemsPerPage=0", 400, "invalid items per page"),
        ("GET", "/v3/paths/list?page=-1", 400, 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("GET", "/v3/rtmpconns/list?itemsPerPage=99999999999", 400, "value out of range"),
        ("GET", "/v3/paths/get/", 400, "invalid name"),
        ("GET", "/v3/paths/get/missing", 404, "path not found"),
        ("POST", f"/v3/srtconns/kick/{CAM_ID}", 404, "connection not found"),
        ("POST", "/v3/hlssessions/kick/123", 400, "invalid UUID length: 3"),
    ],
)
async def test_the_fake_answers_errors_like_mediamtx(
    raw_fake: Callable[..., Any], method: str, path: str, status: int, error: str
) -> None:
    response = await raw_fake(method, path)
    assert response.status_code == status
    assert response.json()["status"] == "error" and error in response.json()["error"]


async def test_the_fake_pages_like_mediamtx(fake: FakeMediaMTX, raw_fake: Callable[..., Any]) -> None:
    assert (await raw_fake("GET", "/v3/paths/list")).json() == {"itemCount": 0, "pageCount": 0, "items": []}
    for i in range(5):
        fake.add_path(f"p{i}")
    body = (await raw_fake("GET", "/v3/paths/list?itemsPerPage=2&page=2")).json()
    assert (body["itemCount"], body["pageCount"], [i["name"] for i in body["items"]]) == (5, 3, ["p4"])
    beyond = (await raw_fake("GET", "/v3/paths/list?itemsPerPage=2&page=7")).json()
    assert beyond["items"] == [] and beyond["pageCount"] == 3


async def test_the_fake_refuses_bad_credentials_and_unknown_routes(
    fake: FakeMediaMTX, raw_fake: Callable[..., Any]
) -> None:
    fake.disable("moqsessions")
    gone = await raw_fake("GET", "/v3/moqsessions/list")
    assert (gone.status_code, gone.text) == (404, "404 page not found")
    wrong_method = await raw_fake("GET", "/v3/auth/jwks/refresh")
    assert wrong_method.status_code == 404
    fake.require_credentials("sidecar", "right")
    refused = await raw_fake("GET", "/v3/info", auth=("sidecar", "wrong"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Basic realm="mediamtx"'
    assert refused.json() == {"status": "error", "error": "authentication error"}
