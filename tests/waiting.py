"""Bounded waits for a condition: how a test waits for something to happen, never for time.

A test that needs time to pass advances a ``ManualClock``; a test that needs something to have
happened (a log line, a state, a file) waits for it here, with a bound that only turns a hang
into a failure: the outcome never depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["logged", "wait_until"]

# The poll period of a bounded wait. It is not timing: the condition is checked again until it
# holds, however long that takes (up to the bound); a shorter period only costs more CPU.
_POLL_S = 0.001


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 30.0, what: str = ""
) -> None:
    """Return once ``cond()`` holds; fail the test after ``timeout_s`` (a hang, not a pace).

    ``cond`` may be a coroutine function (a status query on the control socket, say).
    """
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                got = cond()
                if inspect.isawaitable(got):
                    got = await got
                if got:
                    return
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what or cond}") from None


def logged(logs: list[dict], event: str, n: int = 1) -> Callable[[], bool]:
    """Return a condition: ``event`` is in the captured ``logs`` at least ``n`` times."""
    return lambda: sum(e["event"] == event for e in logs) >= n
