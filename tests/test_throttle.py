"""Failure limits that hold under concurrency: attempts in flight use up the allowance, only failures stay counted."""

from __future__ import annotations

import asyncio

import pytest
from limits import parse

from sidecar.errors import TooManyRequests
from sidecar.throttle import FailureLimits


def limits() -> FailureLimits:
    return FailureLimits({"ip": parse("20/minute"), "user": parse("3/minute")})


async def guess(found: FailureLimits, gate: asyncio.Event, *, right: bool = False, **keys: str) -> str:
    try:
        with found.attempt("slow down", **keys) as attempt:
            await gate.wait()  # the slow check (bcrypt) of every admitted attempt overlaps the others
            if not right:
                attempt.fail()
            return "checked"
    except TooManyRequests:
        return "refused"


async def test_a_concurrent_burst_gets_no_more_checks_than_the_limit() -> None:
    found, gate = limits(), asyncio.Event()
    burst = [asyncio.create_task(guess(found, gate, ip="198.51.100.7", user="bob")) for _ in range(30)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*burst)
    assert answers.count("checked") == 3 and answers.count("refused") == 27
    assert await guess(found, gate, ip="198.51.100.7", user="bob") == "refused"  # the failures stay counted


async def test_successes_and_errors_leave_the_allowance_as_it_was() -> None:
    found, gate = limits(), asyncio.Event()
    gate.set()
    for _ in range(10):
        assert await guess(found, gate, right=True, ip="a", user="bob") == "checked"
    with pytest.raises(RuntimeError), found.attempt("slow down", ip="a", user="bob"):
        raise RuntimeError("the directory failed: no verdict, no failure")
    for _ in range(3):
        assert await guess(found, gate, ip="a", user="bob") == "checked"
    assert await guess(found, gate, ip="a", user="bob") == "refused"


async def test_each_key_has_its_own_allowance() -> None:
    found, gate = limits(), asyncio.Event()
    gate.set()
    for _ in range(3):
        await guess(found, gate, ip="a", user="bob@a")
    assert await guess(found, gate, ip="a", user="bob@a") == "refused"
    assert await guess(found, gate, ip="b", user="bob@b") == "checked"  # another address is not locked out
    assert await guess(found, gate, ip="a", user="carol@a") == "checked"  # the address's own limit is higher
