"""A small stateful stand-in for MediaMTX's control API (v3.x as of v1.20.1): its routes, pagination and errors."""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

VERSION = "v1.20.1"

# Reader and source `type` values MediaMTX reports on a path for a session of each kind.
READER_TYPES = {
    "hlssessions": "hlsSession",
    "rtspsessions": "rtspSession",
    "rtspssessions": "rtspsSession",
    "rtmpconns": "rtmpConn",
    "rtmpsconns": "rtmpsConn",
    "srtconns": "srtConn",
    "webrtcsessions": "webRTCSession",
    "moqsessions": "moqSession",
}
STATES = {
    "hlssessions": frozenset({"read"}),
    "webrtcsessions": frozenset({"read", "publish"}),
}
DEFAULT_STATES = frozenset({"idle", "read", "publish"})

# MediaMTX decodes path configurations strictly: a field it does not know is a 400, so the fake knows them all
# (the properties of the PathConf schema).
_PATH_CONF_FIELD_NAMES = """
    alwaysAvailable alwaysAvailableFile alwaysAvailableTracks disablePublisherOverride fallback forward maxReaders
    moqTransport mpegtsUDPReadBufferSize name overridePublisher playback publishIPs publishPass publishUser readIPs
    readPass readUser record recordDeleteAfter recordFormat recordMaxPartSize recordPartDuration recordPath
    recordSegmentDuration rpiCameraAWB rpiCameraAWBGains rpiCameraAfMode rpiCameraAfRange rpiCameraAfSpeed
    rpiCameraAfWindow rpiCameraBitrate rpiCameraBrightness rpiCameraCamID rpiCameraCodec rpiCameraContrast
    rpiCameraDenoise rpiCameraEV rpiCameraExposure rpiCameraFPS rpiCameraFlickerPeriod rpiCameraGain
    rpiCameraH264Level rpiCameraH264Profile rpiCameraHDR rpiCameraHFlip rpiCameraHardwareH264Level
    rpiCameraHardwareH264Profile rpiCameraHeight rpiCameraIDRPeriod rpiCameraJPEGQuality rpiCameraLensPosition
    rpiCameraLevel rpiCameraMJPEGQuality rpiCameraMetering rpiCameraMode rpiCameraProfile rpiCameraROI
    rpiCameraSaturation rpiCameraSecondary rpiCameraSharpness rpiCameraShutter rpiCameraSoftwareH264Level
    rpiCameraSoftwareH264Profile rpiCameraTextOverlay rpiCameraTextOverlayEnable rpiCameraTuningFile rpiCameraVFlip
    rpiCameraWidth rtpSDP rtpUDPReadBufferSize rtspAnyPort rtspDemuxMpegts rtspRangeStart rtspRangeType rtspScale
    rtspTransport rtspUDPReadBufferSize rtspUDPSourcePortRange runOnAvailable runOnAvailableRestart runOnDemand
    runOnDemandCloseAfter runOnDemandRestart runOnDemandStartTimeout runOnInit runOnInitRestart runOnNotReady
    runOnOffline runOnOnline runOnOnlineRestart runOnRead runOnReadRestart runOnReady runOnReadyRestart
    runOnRecordSegmentComplete runOnRecordSegmentCreate runOnUnDemand runOnUnavailable runOnUnread source
    sourceAnyPortEnable sourceFingerprint sourceOnDemand sourceOnDemandCloseAfter sourceOnDemandStartTimeout
    sourceProtocol sourceRedirect srtPublishPassphrase srtReadPassphrase useAbsoluteTimestamp whepBearerToken
    whepHandshakeTimeout whepSTUNGatherTimeout whepTrackGatherTimeout
"""
PATH_CONF_FIELDS = frozenset(_PATH_CONF_FIELD_NAMES.split())
# The defaults MediaMTX fills into every listed configuration (a representative subset).
PATH_CONF_DEFAULTS: dict[str, Any] = {
    "source": "publisher",
    "sourceOnDemand": False,
    "sourceOnDemandStartTimeout": "10s",
    "sourceOnDemandCloseAfter": "10s",
    "maxReaders": 0,
    "overridePublisher": True,
    "record": False,
    "recordFormat": "fmp4",
    "rtspTransport": "automatic",
    "rtspRangeType": "",
    "runOnDemand": "",
    "runOnReady": "",
}
PATH_NAME = re.compile(r"^[0-9a-zA-Z_\-/.]+$")
UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
GIN_NOT_FOUND = "404 page not found"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


def _ok() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _uint31(text: str) -> int:
    # MediaMTX parses page and itemsPerPage with strconv.ParseUint(s, 10, 31).
    if not text.isascii() or not text.isdigit():
        raise _ApiError(400, f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value >= 2**31:
        raise _ApiError(400, f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def paginate(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """MediaMTX's pagination: 0-based `page`, `itemsPerPage` (default 100), `pageCount` 0 for an empty list."""
    per_page_text = request.query_params.get("itemsPerPage", "")
    page_text = request.query_params.get("page", "")
    per_page = 100
    if per_page_text:
        per_page = _uint31(per_page_text)
        if per_page == 0:
            raise _ApiError(400, "invalid items per page")
    page = _uint31(page_text) if page_text else 0
    page_count = -(-len(items) // per_page)
    window = items[page * per_page : (page + 1) * per_page]
    return {"itemCount": len(items), "pageCount": page_count, "items": window}


def path_name_error(name: str) -> str | None:
    """Why MediaMTX would refuse `name` as a path configuration name, or None."""
    if name in ("all", "all_others"):
        return None
    if name.startswith("~"):
        try:
            re.compile(name[1:])
        except re.error:
            return f"invalid regular expression: {name[1:]}"
        return None
    reason = None
    if not name:
        reason = "cannot be empty"
    elif name.startswith("/"):
        reason = "can't begin with a slash"
    elif name.endswith("/"):
        reason = "can't end with a slash"
    elif not PATH_NAME.match(name):
        reason = "can contain only alphanumeric characters, underscore, dot, minus, slash"
    elif any(segment in (".", "..") for segment in name.split("/")):
        reason = "can't contain dot path segments"
    return None if reason is None else f"invalid path name '{name}': {reason}"


@dataclass
class FakePath:
    name: str
    conf_name: str
    ready: bool = False
    ready_time: str | None = None
    source: dict[str, str] | None = None
    tracks: tuple[str, ...] = ()
    readers: list[dict[str, str]] = field(default_factory=list)
    inbound_bytes: int = 0
    outbound_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        tracks = list(self.tracks) if self.ready else []
        return {
            "name": self.name,
            "confName": self.conf_name,
            "source": self.source,
            "ready": self.ready,
            "readyTime": self.ready_time,
            "available": self.ready,
            "availableTime": self.ready_time,
            "online": self.ready,
            "onlineTime": self.ready_time,
            "tracks": tracks,
            # codecProps stays null: the schema's codec-props oneOf cannot tell H264 from H265 props apart.
            "tracks2": [{"codec": codec, "codecProps": None} for codec in tracks],
            "readers": list(self.readers),
            "inboundBytes": self.inbound_bytes,
            "outboundBytes": self.outbound_bytes,
            "inboundFramesInError": 0,
            "bytesReceived": self.inbound_bytes,
            "bytesSent": self.outbound_bytes,
        }


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    body: bytes


class FakeMediaMTX:
    """State plus `.app`; helpers seed paths, configurations and sessions and expose what was kicked or refreshed."""

    def __init__(self) -> None:
        self.paths: dict[str, FakePath] = {}
        self.config_paths: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in READER_TYPES}
        self.disabled: set[str] = set()
        self.kicked: list[tuple[str, str]] = []
        self.jwks_refreshes = 0
        self.requests: list[RecordedRequest] = []
        self.credentials: tuple[str, str] | None = None
        self.started = _now()
        self._failures: list[tuple[int, str]] = []
        # Browser tests serve the fake from another thread while the test seeds it.
        self._lock = threading.RLock()
        self.app = self._build_app()

    # --- seeding -------------------------------------------------------------------------------------------------

    def add_path(
        self,
        name: str,
        *,
        ready: bool = False,
        conf_name: str | None = None,
        tracks: Iterable[str] = ("H264",),
        source_type: str = "rtspSession",
    ) -> FakePath:
        with self._lock:
            path = FakePath(name=name, conf_name=conf_name or self._conf_name_for(name), tracks=tuple(tracks))
            self.paths[name] = path
            if ready:
                self.set_ready(name, source_type=source_type)
            return path

    def set_ready(self, name: str, ready: bool = True, *, source_type: str = "rtspSession") -> FakePath:
        """Mark a path online (a publisher appeared) or offline; the path is created if needed."""
        with self._lock:
            path = self.paths.get(name) or self.add_path(name)
            path.ready = ready
            path.ready_time = _now() if ready else None
            path.source = {"type": source_type, "id": str(uuid.uuid4())} if ready else None
            if ready and not path.tracks:
                path.tracks = ("H264",)
            return path

    def remove_path(self, name: str) -> None:
        with self._lock:
            self.paths.pop(name, None)

    def add_config_path(self, name: str, **values: Any) -> None:
        """Seed a path configuration as if it were in mediamtx.yml (no HTTP round trip)."""
        with self._lock:
            unknown = set(values) - PATH_CONF_FIELDS
            if unknown:
                raise ValueError(f"MediaMTX has no path setting {sorted(unknown)}")
            self._add_config(name, values)

    def add_session(
        self,
        kind: str,
        *,
        id: str | None = None,
        path: str = "",
        user: str = "",
        query: str = "",
        remote_addr: str = "127.0.0.1:50000",
        state: str = "read",
        **extra: Any,
    ) -> str:
        """Add a session of one protocol (e.g. "rtspsessions") reading or publishing `path`; returns its id."""
        with self._lock:
            if kind not in READER_TYPES:
                raise ValueError(f"unknown session kind {kind!r}")
            if state not in STATES.get(kind, DEFAULT_STATES):
                raise ValueError(f"{kind} cannot be in state {state!r}")
            if kind == "moqsessions" and user:
                raise ValueError("MediaMTX reports no user for MoQ sessions")
            # MediaMTX ids are UUIDs (and kick parses them as such), so seeded ids must be too.
            session_id = str(uuid.UUID(id)) if id else str(uuid.uuid4())
            item = self._session_item(kind, session_id, path, user, query, remote_addr, state)
            item.update(extra)
            self.sessions[kind][session_id] = item
            if path:
                fake_path = self.paths.get(path) or self.add_path(path)
                if state == "publish":
                    self.set_ready(path, source_type=READER_TYPES[kind])
                    assert fake_path.source is not None
                    fake_path.source["id"] = session_id
                elif state == "read":
                    fake_path.readers.append({"type": READER_TYPES[kind], "id": session_id})
            return session_id

    def disable(self, *kinds: str) -> None:
        """Turn a protocol's server off: like MediaMTX, its routes then do not exist (gin's plain-text 404)."""
        with self._lock:
            self.disabled.update(kinds)

    def enable(self, *kinds: str) -> None:
        with self._lock:
            self.disabled.difference_update(kinds)

    def require_credentials(self, user: str, password: str) -> None:
        """Answer 401 to any request without these Basic credentials (MediaMTX's `api` action check)."""
        self.credentials = (user, password)

    def fail_next(self, status: int = 500, *, times: int = 1, message: str = "terminated") -> None:
        """The next `times` requests answer `status` with MediaMTX's error body."""
        with self._lock:
            self._failures.extend([(status, message)] * times)

    def session_ids(self, kind: str) -> list[str]:
        with self._lock:
            return list(self.sessions[kind])

    # --- state rules ---------------------------------------------------------------------------------------------

    def _conf_name_for(self, name: str) -> str:
        if name in self.config_paths:
            return name
        for conf_name in self.config_paths:
            if conf_name.startswith("~") and re.search(conf_name[1:], name):
                return conf_name
        return "all_others"

    def _add_config(self, name: str, values: dict[str, Any]) -> None:
        self.config_paths[name] = dict(values)
        # MediaMTX starts every path with a plain (non-regex) name as soon as it is configured.
        if not name.startswith("~") and name not in ("all", "all_others") and name not in self.paths:
            self.paths[name] = FakePath(name=name, conf_name=name)

    def _session_item(
        self, kind: str, session_id: str, path: str, user: str, query: str, remote_addr: str, state: str
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": session_id,
            "created": _now(),
            "remoteAddr": remote_addr,
            "path": path,
            "query": query,
        }
        if kind != "moqsessions":
            item["user"] = user
        if kind != "srtconns":
            item["userAgent"] = ""
        if kind == "hlssessions":
            item.update(isCDN=False, outboundBytes=0)
        else:
            item["state"] = state
        if kind in ("rtspsessions", "rtspssessions"):
            item.update(conns=[], transport="TCP", profile="AVP", inboundBytes=0, outboundBytes=0)
        elif kind in ("rtmpconns", "rtmpsconns"):
            item.update(inboundBytes=0, outboundBytes=0, outboundFramesDiscarded=0)
        elif kind == "srtconns":
            item.update(bytesReceived=0, bytesSent=0, msRTT=0.0)
        elif kind == "webrtcsessions":
            item.update(peerConnectionEstablished=True, localCandidate="", remoteCandidate="", inboundBytes=0)
            item.update(outboundBytes=0)
        elif kind == "moqsessions":
            item.update(transport="webtransport", version="moqt-16", userAgent="", inboundBytes=0, outboundBytes=0)
        return item

    def _kick(self, kind: str, session_id: str) -> None:
        item = self.sessions[kind].pop(session_id)
        self.kicked.append((kind, session_id))
        path = self.paths.get(item.get("path", ""))
        if path is None:
            return
        path.readers = [reader for reader in path.readers if reader["id"] != session_id]
        if path.source and path.source.get("id") == session_id:
            path.ready, path.ready_time, path.source = False, None, None

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        handlers: list[tuple[str, str, Callable[[Request, bytes], Response]]] = [
            ("/v3/info", "GET", self._info),
            ("/v3/auth/jwks/refresh", "POST", self._jwks_refresh),
            ("/v3/paths/list", "GET", self._paths_list),
            ("/v3/paths/get/{name:path}", "GET", self._paths_get),
            ("/v3/config/paths/list", "GET", self._config_list),
            ("/v3/config/paths/add/{name:path}", "POST", self._config_add),
            ("/v3/config/paths/patch/{name:path}", "PATCH", self._config_patch),
            ("/v3/config/paths/delete/{name:path}", "DELETE", self._config_delete),
            ("/v3/{kind}/list", "GET", self._sessions_list),
            ("/v3/{kind}/kick/{id}", "POST", self._sessions_kick),
        ]
        routes = [Route(path, self._endpoint(handler), methods=[method]) for path, method, handler in handlers]

        async def not_found(request: Request, exc: Exception) -> Response:
            # gin answers unknown routes and wrong methods alike with this plain-text 404.
            return PlainTextResponse(GIN_NOT_FOUND, status_code=404)

        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})

    def _endpoint(self, handler: Callable[[Request, bytes], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests.append(RecordedRequest(request.method, request.url.path, request.url.query, body))
                if not self._authorized(request):
                    response = _error(401, "authentication error")
                    response.headers["WWW-Authenticate"] = 'Basic realm="mediamtx"'
                    return response
                if self._failures:
                    status, message = self._failures.pop(0)
                    return _error(status, message)
                try:
                    return handler(request, body)
                except _ApiError as error:
                    return _error(error.status, error.message)

        return endpoint

    def _authorized(self, request: Request) -> bool:
        if self.credentials is None:
            return True
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == self.credentials

    def _info(self, request: Request, body: bytes) -> Response:
        return JSONResponse({"version": VERSION, "started": self.started})

    def _jwks_refresh(self, request: Request, body: bytes) -> Response:
        self.jwks_refreshes += 1
        return _ok()

    def _paths_list(self, request: Request, body: bytes) -> Response:
        items = [self.paths[name].to_json() for name in sorted(self.paths)]
        return JSONResponse(paginate(items, request))

    def _paths_get(self, request: Request, body: bytes) -> Response:
        path = self.paths.get(_name_param(request))
        if path is None:
            raise _ApiError(404, "path not found")
        return JSONResponse(path.to_json())

    def _config_list(self, request: Request, body: bytes) -> Response:
        items = [{**PATH_CONF_DEFAULTS, **self.config_paths[name], "name": name} for name in sorted(self.config_paths)]
        return JSONResponse(paginate(items, request))

    def _config_add(self, request: Request, body: bytes) -> Response:
        name = _name_param(request)
        values = _decode_path_conf(body)
        # MediaMTX answers an existing name with 400 "path already exists" (conf.AddPath; the API maps every
        # add failure to 400 and documents no 404 or 409 for this route).
        if name in self.config_paths:
            raise _ApiError(400, "path already exists")
        problem = path_name_error(name)
        if problem:
            raise _ApiError(400, problem)
        self._add_config(name, values)
        return _ok()

    def _config_patch(self, request: Request, body: bytes) -> Response:
        name = _name_param(request)
        values = _decode_path_conf(body)
        if name not in self.config_paths:
            raise _ApiError(404, "path not found")
        self.config_paths[name].update(values)
        return _ok()

    def _config_delete(self, request: Request, body: bytes) -> Response:
        name = _name_param(request)
        if name not in self.config_paths:
            raise _ApiError(404, "path not found")
        del self.config_paths[name]
        # Removing a configuration closes its paths and drops everyone on them.
        for path_name in [path.name for path in self.paths.values() if path.conf_name == name]:
            del self.paths[path_name]
            for kind, sessions in self.sessions.items():
                for session_id in [sid for sid, item in sessions.items() if item.get("path") == path_name]:
                    self._kick(kind, session_id)
        return _ok()

    def _sessions_list(self, request: Request, body: bytes) -> Response:
        kind = self._enabled_kind(request)
        return JSONResponse(paginate(list(self.sessions[kind].values()), request))

    def _sessions_kick(self, request: Request, body: bytes) -> Response:
        kind = self._enabled_kind(request)
        session_id = request.path_params["id"]
        if not UUID_TEXT.match(session_id):
            raise _ApiError(400, f"invalid UUID length: {len(session_id)}")
        # MediaMTX parses the id into a UUID first, so any spelling of the same UUID finds the session.
        session_id = str(uuid.UUID(session_id))
        if session_id not in self.sessions[kind]:
            raise _ApiError(404, "connection not found" if kind.endswith("conns") else "session not found")
        self._kick(kind, session_id)
        return _ok()

    def _enabled_kind(self, request: Request) -> str:
        kind: str = request.path_params["kind"]
        if kind not in READER_TYPES or kind in self.disabled:
            raise HTTPException(404)
        return kind


def _name_param(request: Request) -> str:
    name: str = request.path_params["name"]
    if not name:
        raise _ApiError(400, "invalid name")
    return name


def _decode_path_conf(body: bytes) -> dict[str, Any]:
    try:
        values = json.loads(body)
    except ValueError as error:
        raise _ApiError(400, str(error)) from None
    if not isinstance(values, dict):
        raise _ApiError(400, "json: cannot unmarshal into Go value of type conf.Path")
    for key in values:
        if key not in PATH_CONF_FIELDS:
            raise _ApiError(400, f"json: unknown field {json.dumps(key)}")
    return values


def create_fake_mediamtx() -> FakeMediaMTX:
    return FakeMediaMTX()
