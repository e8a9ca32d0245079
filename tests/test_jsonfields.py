"""Upstream JSON: a large answer is parsed off the event loop, a small one on it; garbage is the client's error."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from sidecar import jsonfields


class Unreadable(Exception):
    pass


def _answer(size: int) -> httpx.Response:
    names = [{"name": f"live/cam{n}"} for n in range(size // 24)]
    return httpx.Response(200, content=json.dumps({"items": names}).encode())


@pytest.mark.parametrize(("size", "off_the_loop"), [(1024, False), (2 * 1024 * 1024, True)])
async def test_large_answers_are_parsed_on_a_thread(
    size: int, off_the_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = json.loads

    def watched(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(json, "loads", watched)
    response = _answer(size)
    data = await jsonfields.parse(response, Unreadable)
    assert data == real(response.content)
    assert threads and (threads[0] is not threading.main_thread()) is off_the_loop


@pytest.mark.parametrize("size", [10, 2 * 1024 * 1024])
async def test_garbage_is_the_callers_error_either_way(size: int) -> None:
    with pytest.raises(Unreadable):
        await jsonfields.parse(httpx.Response(200, content=b"<" * size), Unreadable)
