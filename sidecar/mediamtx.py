"""The one client for MediaMTX's control API (v3): running paths, path configuration, sessions and JWKS refresh."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import httpx

from sidecar import jsonfields, outbound

ERROR_MESSAGE_LIMIT = 200
DEFAULT_PAGE_SIZE = 100  # MediaMTX's own default for itemsPerPage
MAX_PAGES = 10_000  # a safety stop should a broken server keep announcing more pages
UNAUTHORIZED_MESSAGE = "the sidecar's MediaMTX API credentials were refused"


class SessionKind(enum.StrEnum):
    """The session and connection lists MediaMTX can also kick from, named as in `/v3/<kind>/list`."""

    HLS = "hlssessions"
    RTSP = "rtspsessions"
    RTSPS = "rtspssessions"
    RTMP = "rtmpconns"
    RTMPS = "rtmpsconns"
    SRT = "srtconns"
    WEBRTC = "webrtcsessions"
    MOQ = "moqsessions"


class MediaMTXError(Exception):
    """Base of MediaMTX failures; the message is safe to show to an admin."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MediaMTXUnavailable(MediaMTXError):
    """MediaMTX could not be reached, did not answer in time, or failed (5xx)."""


class MediaMTXRejected(MediaMTXError):
    """MediaMTX refused the request (4xx); `message` is MediaMTX's own `error` string, trimmed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MediaMTXNotFound(MediaMTXRejected):
    """No such path, path configuration or session — or the protocol's server is disabled."""


class MediaMTXUnauthorized(MediaMTXRejected):
    """MediaMTX refused the sidecar's own API credentials (action `api`)."""

    def __init__(self, status: int, message: str = UNAUTHORIZED_MESSAGE) -> None:
        super().__init__(status, message)


@dataclass(frozen=True)
class PathSource:
    type: str
    id: str = ""


@dataclass(frozen=True)
class PathReader:
    type: str
    id: str = ""


@dataclass(frozen=True)
class PathInfo:
    """A running path. `ready`: readers can play it now; `online`: a publisher or source is feeding it."""

    name: str
    conf_name: str = ""
    ready: bool = False
    online: bool = False
    ready_time: str | None = None
    source: PathSource | None = None
    tracks: tuple[str, ...] = ()
    readers: tuple[PathReader, ...] = ()
    inbound_bytes: int = 0
    outbound_bytes: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PathInfo:
        # v1.20 reports `available`/`online` and keeps `ready` only as a deprecated alias; older releases send
        # just `ready`, so fall back to it rather than report every stream as offline.
        ready = _bool(data, "available", _bool(data, "ready", False))
        source = data.get("source")
        return cls(
            name=_str(data, "name"),
            conf_name=_str(data, "confName"),
            ready=ready,
            online=_bool(data, "online", ready),
            ready_time=_opt_str(data, "availableTime") or _opt_str(data, "readyTime"),
            source=PathSource(_str(source, "type"), _str(source, "id")) if isinstance(source, Mapping) else None,
            tracks=_track_codecs(data),
            readers=tuple(
                PathReader(_str(reader, "type"), _str(reader, "id"))
                for reader in _list(data, "readers")
                if isinstance(reader, Mapping)
            ),
            inbound_bytes=_int(data, "inboundBytes", "bytesReceived"),
            outbound_bytes=_int(data, "outboundBytes", "bytesSent"),
        )


@dataclass(frozen=True)
class PathConfig:
    """A path configuration; the common fields are typed, `values` holds everything MediaMTX sent (read-only)."""

    name: str
    source: str = "publisher"
    source_on_demand: bool = False
    record: bool = False
    max_readers: int = 0
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PathConfig:
        return cls(
            name=_str(data, "name"),
            source=_str(data, "source", "publisher"),
            source_on_demand=_bool(data, "sourceOnDemand", False),
            record=_bool(data, "record", False),
            max_readers=_int(data, "maxReaders"),
            values=MappingProxyType(dict(data)),
        )


@dataclass(frozen=True)
class Session:
    """A reader or publisher connected over one protocol; `user` is empty for token-only or user-less protocols."""

    kind: SessionKind
    id: str
    path: str = ""
    query: str = ""
    remote_addr: str = ""
    user: str = ""
    state: str = ""
    created: str | None = None
    user_agent: str = ""

    @classmethod
    def from_json(cls, kind: SessionKind, data: Mapping[str, Any]) -> Session:
        # HLS sessions carry no state because they can only read.
        default_state = "read" if kind is SessionKind.HLS else ""
        return cls(
            kind=kind,
            id=_str(data, "id"),
            path=_str(data, "path"),
            query=_str(data, "query"),
            remote_addr=_str(data, "remoteAddr"),
            user=_str(data, "user"),
            state=_str(data, "state", default_state),
            created=_opt_str(data, "created"),
            user_agent=_str(data, "userAgent"),
        )


@dataclass(frozen=True)
class ServerInfo:
    version: str = ""
    started: str | None = None


class MediaMTXClient:
    """Calls MediaMTX's control API through a caller-owned `httpx.AsyncClient`.

    Each call (all its attempts, and all pages of a listing people wait for, included) must be done within
    `timeout` seconds, by default the client's own timeout, and each answer may be at most `max_answer_bytes` long
    (see sidecar/outbound.py). A change counts as done only when MediaMTX itself confirmed it (`_confirmed`).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        auth: httpx.Auth | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        retry_backoff: Sequence[float] = (0.1, 0.4),
        timeout: float | None = None,
        max_answer_bytes: int = outbound.MAX_ANSWER_BYTES,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._page_size = page_size
        self._retry_backoff = tuple(retry_backoff)
        self._timeout = outbound.total_timeout(http) if timeout is None else timeout
        self._max_answer_bytes = max_answer_bytes

    async def info(self) -> ServerInfo:
        data = _object(await self._read("/v3/info"))
        return ServerInfo(version=_str(data, "version"), started=_opt_str(data, "started"))

    async def list_paths(self) -> list[PathInfo]:
        # Someone is waiting for this list (the streams page): every page shares one deadline.
        with outbound.deadline(self._timeout):
            items = await self._read_all_pages("/v3/paths/list", key="name")
        return [PathInfo.from_json(item) for item in items if _str(item, "name")]

    async def get_path(self, name: str) -> PathInfo:
        return PathInfo.from_json(_object(await self._read(f"/v3/paths/get/{escape_path(name)}")))

    async def list_path_configs(self) -> list[PathConfig]:
        with outbound.deadline(self._timeout):  # an admin's sources page waits for every page
            items = await self._read_all_pages("/v3/config/paths/list", key="name")
        return [PathConfig.from_json(item) for item in items if _str(item, "name")]

    # Every change below is answered by MediaMTX with 200 and its `OK` object, `{"status": "ok"}` (openapi.yaml,
    # v1.20.1: `writeOK`), or by releases before that with a bare 200 and no body (gin's `ctx.Status(200)`); errors
    # are `{"status": "error", "error": ...}` with 4xx/5xx. `_confirmed` accepts exactly those two success forms.

    async def add_path_config(self, name: str, config: Mapping[str, Any]) -> None:
        await self._write("POST", f"/v3/config/paths/add/{escape_path(name)}", dict(config))

    async def patch_path_config(self, name: str, config: Mapping[str, Any]) -> None:
        await self._write("PATCH", f"/v3/config/paths/patch/{escape_path(name)}", dict(config))

    async def delete_path_config(self, name: str) -> None:
        await self._write("DELETE", f"/v3/config/paths/delete/{escape_path(name)}")

    async def list_sessions(self, kind: SessionKind) -> list[Session]:
        kind = SessionKind(kind)
        items = await self._read_all_pages(f"/v3/{kind.value}/list", key="id")
        # A session without an id can be neither told apart nor kicked.
        return [Session.from_json(kind, item) for item in items if _str(item, "id")]

    async def list_all_sessions(self) -> list[Session]:
        """Sessions of every protocol; a protocol whose server is disabled (its routes answer 404) adds none."""
        results = await asyncio.gather(
            *(self._sessions_if_enabled(kind) for kind in SessionKind), return_exceptions=True
        )
        sessions: list[Session] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            sessions.extend(result)
        return sessions

    async def kick_session(self, kind: SessionKind, session_id: str) -> None:
        """Returns only once MediaMTX confirmed the kick (200 and its `OK` answer)."""
        kind = SessionKind(kind)
        await self._write("POST", f"/v3/{kind.value}/kick/{escape_path(session_id)}")

    async def refresh_jwks(self) -> None:
        """Returns only once MediaMTX confirmed it refetched the JWKS (200 and its `OK` answer): key rotation relies
        on it before a new key signs, so any other answer, an HTML page from a wrong URL included, raises."""
        await self._write("POST", "/v3/auth/jwks/refresh")

    async def _sessions_if_enabled(self, kind: SessionKind) -> list[Session]:
        try:
            return await self.list_sessions(kind)
        except MediaMTXNotFound:
            return []

    async def _read_all_pages(self, endpoint: str, *, key: str) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        page = 0
        while True:
            data = _object(await self._read(endpoint, {"page": page, "itemsPerPage": self._page_size}))
            page_items = data.get("items")
            if page_items is None:
                page_items = []
            if not isinstance(page_items, list):
                raise _unreadable()
            for item in page_items:
                if not isinstance(item, Mapping):
                    continue
                # The list can change between two page requests, shifting an item onto the next page as well.
                ident = item.get(key)
                if isinstance(ident, str):
                    if ident in seen:
                        continue
                    seen.add(ident)
                items.append(item)
            page += 1
            page_count = data.get("pageCount")
            if not page_items or not isinstance(page_count, int) or page >= min(page_count, MAX_PAGES):
                return items

    async def _read(self, endpoint: str, params: Mapping[str, int] | None = None) -> Any:
        """GET with retries: reads are idempotent, so a refused connection or a 5xx is worth another try, as long
        as the try and the pause before it fit in what is left of the call's one deadline."""
        with outbound.deadline(self._timeout) as deadline:
            for delay in (*self._retry_backoff, None):
                try:
                    response = await self._send("GET", endpoint, params=params)
                    return await _json(response)
                except _Retryable as error:
                    if delay is None or outbound.time_left(deadline) <= delay:
                        raise error.cause from error.__cause__
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, method: str, endpoint: str, body: Mapping[str, Any] | None = None) -> None:
        """One attempt only: a write whose answer was lost may already have happened. Done only when confirmed."""
        try:
            response = await self._send(method, endpoint, body=body)
        except _Retryable as error:
            raise error.cause from error.__cause__
        _confirmed(response)

    async def _send(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request, its answer read whole within the call's deadline and size cap."""
        try:
            response = await outbound.fetch(
                self._http,
                method,
                self._base_url + endpoint,
                params=dict(params or {}),
                json=body,
                auth=self._auth,
                timeout=self._timeout,
                limit=self._max_answer_bytes,
            )
        except outbound.AnswerTooLarge as error:
            size = outbound.describe_size(error.limit)
            raise MediaMTXUnavailable(
                f"MediaMTX sent an answer larger than {size}; the sidecar stopped reading"
            ) from error
        except (httpx.ConnectError, httpx.RemoteProtocolError) as error:
            # RemoteProtocolError covers a pooled keep-alive connection that MediaMTX had already closed.
            raise _Retryable(MediaMTXUnavailable(f"MediaMTX is unreachable at {self._where()}")) from error
        except httpx.TimeoutException as error:
            # A timeout (connecting included) used up the call's deadline: there is no time left to try again.
            raise MediaMTXUnavailable(
                f"MediaMTX at {self._where()} did not answer within {self._timeout:g} s"
            ) from error
        except httpx.InvalidURL as error:
            raise MediaMTXError("the MediaMTX API URL is not a valid URL") from error
        except (httpx.HTTPError, httpx.StreamError) as error:
            raise MediaMTXUnavailable(f"the connection to MediaMTX at {self._where()} failed") from error
        _raise_for_status(response)
        return response

    def _where(self) -> str:
        # Only scheme, host and port: a URL with credentials in it must not reach a page or a log.
        try:
            url = httpx.URL(self._base_url)
        except httpx.InvalidURL:
            return "the configured URL"
        host = f"[{url.host}]" if ":" in url.host else url.host
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{host}{port}"


class _Retryable(Exception):
    def __init__(self, cause: MediaMTXUnavailable) -> None:
        super().__init__(cause.message)
        self.cause = cause


def escape_path(name: str) -> str:
    """URL-escape a path name or id segment by segment; `.` and `..` are escaped too, so no name can climb."""
    segments = []
    for segment in name.split("/"):
        if segment in (".", ".."):
            segments.append(segment.replace(".", "%2E"))
        else:
            segments.append(quote(segment, safe=""))
    return "/".join(segments)


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = _error_detail(response)
    if status in (401, 403):
        raise MediaMTXUnauthorized(status)
    if status == 404:
        raise MediaMTXNotFound(status, detail or "MediaMTX has no such path, configuration or session")
    if 400 <= status < 500:
        raise MediaMTXRejected(status, detail or f"MediaMTX refused the request ({status})")
    if status >= 500:
        suffix = f": {detail}" if detail else ""
        raise _Retryable(MediaMTXUnavailable(f"MediaMTX failed ({status}){suffix}"))
    raise MediaMTXError(f"MediaMTX answered with an unexpected status ({status})")


NOT_MEDIAMTX_MESSAGE = "the MediaMTX API URL does not answer like MediaMTX; check SIDECAR_MEDIAMTX_API_URL"


def _confirmed(response: httpx.Response) -> None:
    """A change is done only when MediaMTX said so: 200 with `{"status": "ok"}` (its `OK` schema, v1.20.1), or 200
    with no body and no content type (older releases). Any other success (an HTML page, someone else's JSON, a 201
    or a 204) comes from something that is not MediaMTX's API, so the change cannot be taken as done."""
    if response.status_code == 200:
        if not response.content:
            if "content-type" not in response.headers:
                return
        else:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("status") == "ok":
                return
    raise MediaMTXError(NOT_MEDIAMTX_MESSAGE)


def _error_detail(response: httpx.Response) -> str:
    """MediaMTX's own `error` string, single-line and trimmed; never any other part of the body."""
    try:
        data = response.json()
    except ValueError:
        return ""
    message = data.get("error") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return ""
    return " ".join(message.split())[:ERROR_MESSAGE_LIMIT]


async def _json(response: httpx.Response) -> Any:
    return await jsonfields.parse(response, _unreadable)


def _unreadable() -> MediaMTXError:
    return MediaMTXError("MediaMTX sent an answer the sidecar cannot read; is the URL MediaMTX's control API?")


def _object(data: Any) -> Mapping[str, Any]:
    return jsonfields.mapping(data, _unreadable)


_str = jsonfields.text


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    return value if isinstance(value, bool) else default


def _int(data: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def _track_codecs(data: Mapping[str, Any]) -> tuple[str, ...]:
    # `tracks2` (objects) replaced `tracks` (codec names); read whichever this MediaMTX sends.
    described = [_str(track, "codec") for track in _list(data, "tracks2") if isinstance(track, Mapping)]
    if any(described):
        return tuple(codec for codec in described if codec)
    return tuple(codec for codec in _list(data, "tracks") if isinstance(codec, str))
