"""The sidecar's view of live streams, fed by MediaMTX's runOnReady/NotReady/Read/Unread webhooks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sidecar.store import Store


@dataclass
class LiveStream:
    path: str
    ready_since: float
    source_type: str = ""
    readers: dict[str, str] = field(default_factory=dict)  # reader id -> reader type


class LiveStreams:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._streams: dict[str, LiveStream] = {}

    def apply(
        self,
        event: str,
        *,
        path: str,
        query: str = "",
        source_type: str = "",
        source_id: str = "",
        reader_type: str = "",
        reader_id: str = "",
    ) -> None:
        with self._lock:
            if event == "ready":
                self._streams[path] = LiveStream(path, time.time(), source_type)
            elif event in ("not-ready", "notready"):
                self._streams.pop(path, None)
            elif event == "read" and path in self._streams and reader_id:
                self._streams[path].readers[reader_id] = reader_type
            elif event == "unread" and reader_id:
                stream = self._streams.get(path)
                if stream is not None:
                    stream.readers.pop(reader_id, None)
        if event == "unread" and reader_id:
            with self.store.transaction() as db:
                self.store.forget_session(db, reader_id)

    def ready(self) -> list[LiveStream]:
        with self._lock:
            return sorted(self._streams.values(), key=lambda stream: stream.path)
