"""Reading JSON from upstream APIs defensively: each client names its own error for an unreadable answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx


def parse(response: httpx.Response, unreadable: Callable[[], Exception]) -> Any:
    try:
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
