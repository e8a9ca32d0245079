"""Several independent stacks (sidecar + Caddy, each on its own data dir) built at once for one module; one that
cannot be built fails only the tests that use it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import pytest


class Buildable(Protocol):
    name: str
    broken: str  # why it could not be built, else ""


S = TypeVar("S", bound=Buildable)


def build_each(stacks: Mapping[str, S], build: Callable[[S], None]) -> None:
    """Run `build` for every stack not already broken, in parallel (the CLI and the interpreter start slowly)."""

    def one(stack: S) -> None:
        if stack.broken:
            return
        try:
            build(stack)
        except Exception as error:  # noqa: BLE001 (reported by that stack's own tests)
            stack.broken = f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=max(1, len(stacks))) as pool:
        list(pool.map(one, stacks.values()))


def ready(stacks: Mapping[str, S], name: str) -> S:
    """The named stack, or this test fails (not the whole module) when it could not be built."""
    stack = stacks[name]
    if stack.broken:
        pytest.fail(f"the {name!r} stack could not be built: {stack.broken}", pytrace=False)
    return stack
