"""Reading JSON from upstream APIs defensively: each client names its own error for an unreadable answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
import httpx

# Parsing takes about 10 ms per MiB: a larger answer (a big page of users or paths) is parsed on a thread, so the
# event loop keeps answering health checks and MediaMTX meanwhile.
THREAD_ABOVE_BYTES = 256 * 1024


async def parse(response: httpx.Response, unreadable: Callable[[], Exception]) -> Any:
    try:
        if len(response.content) > THREAD_ABOVE_BYTES:
            return await anyio.to_thread.run_sync(json.loads, response.content)
        return response.json()
    except ValueError:
        raise unreadable() from None


def mapping(data: Any, unreadable: Callable[[], Exception]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise unreadable()
    return data


def text(data: Any, key: str, default: str = "") -> str:
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else default
