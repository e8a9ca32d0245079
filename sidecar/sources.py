"""Stream sources: MediaMTX path configurations (pull from RTSP/RTMP/HTTP/SRT, or wait for a publisher)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.errors import BadRequest, Unavailable
from sidecar.mediamtx import MediaMTXClient
from sidecar.policy import is_glob, normalise_path
from sidecar.store import Store

SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "srt://", "whep://", "wheps://")


@dataclass(frozen=True)
class Source:
    name: str
    source: str
    source_on_demand: bool
    record: bool


def _name(value: object) -> str:
    normal = normalise_path(value) if isinstance(value, str) and not is_glob(value) else None
    if normal is None:
        raise BadRequest("name must be a plain stream path such as live/drone1", field="name")
    return normal


def _config(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    source = body.get("source")
    if source is not None or not partial:
        if not isinstance(source, str) or not (source == "publisher" or source.startswith(SCHEMES)):
            raise BadRequest("source must be 'publisher' or a URL starting with " + ", ".join(SCHEMES), field="source")
        if len(source) > 2048:
            raise BadRequest("source is too long", field="source")
        config["source"] = source
    on_demand = body.get("source_on_demand")
    if on_demand is not None:
        if not isinstance(on_demand, bool):
            raise BadRequest("source_on_demand must be true or false", field="source_on_demand")
        config["sourceOnDemand"] = on_demand
    if partial and not config:
        raise BadRequest("nothing to change: give source and/or source_on_demand", field="source")
    return config


class Sources:
    def __init__(self, store: Store, mediamtx: MediaMTXClient | None) -> None:
        self.store = store
        self.mediamtx = mediamtx

    def _client(self) -> MediaMTXClient:
        if self.mediamtx is None:
            raise Unavailable("MediaMTX's API is not configured (SIDECAR_MEDIAMTX_API_URL)")
        return self.mediamtx

    async def list(self) -> list[Source]:
        configs = await self._client().list_path_configs()
        return [Source(c.name, c.source, c.source_on_demand, c.record) for c in configs if c.name != "all_others"]

    async def add(self, body: dict[str, Any], actor: str) -> str:
        name = _name(body.get("name"))
        config = _config(body, partial=False)
        await self._client().add_path_config(name, config)
        self._audit(actor, "source.add", name, config)
        return name

    async def change(self, name: str, body: dict[str, Any], actor: str) -> None:
        normal = _name(name)
        config = _config(body, partial=True)
        await self._client().patch_path_config(normal, config)
        self._audit(actor, "source.change", normal, config)

    async def delete(self, name: str, actor: str) -> None:
        normal = _name(name)
        await self._client().delete_path_config(normal)
        self._audit(actor, "source.delete", normal, {})

    def _audit(self, actor: str, action: str, name: str, config: dict[str, Any]) -> None:
        # Source URLs can carry credentials (rtsp://user:pass@cam): the audit keeps only the scheme and host.
        detail = {key: value for key, value in config.items() if key != "source"}
        if "source" in config:
            detail["source"] = _redacted(config["source"])
        with self.store.transaction() as db:
            self.store.audit(db, actor, action, name, detail)


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return f"{scheme}://{host}" if rest else url
