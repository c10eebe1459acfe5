"""Clocks: the only place the agent reads time.

Pure code receives time as an argument; the async shell asks a ``Clock``. ``WallClock`` is real
time, ``ManualClock`` is advanced by hand (tests) or by the replayed event time (replay), so no
test ever sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "WallClock"]


class Clock(Protocol):
    """Source of time in integer nanoseconds since the Unix epoch (UTC)."""

    def now_ns(self) -> int:
        """Return the current time in ns."""
        ...

    async def sleep_until(self, t_ns: int) -> None:
        """Return once ``now_ns() >= t_ns``."""
        ...


class WallClock:
    """Real time."""

    def now_ns(self) -> int:
        """Return ``time.time_ns()``."""
        return time.time_ns()

    async def sleep_until(self, t_ns: int) -> None:
        """Sleep on the event loop until the wall clock reaches ``t_ns``."""
        delay = (t_ns - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when told to.

    ``sleep_until`` waits until someone calls ``advance_to``/``advance`` past the target, so tests
    and as-fast-as-possible replays run without wall-clock sleeps.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def now_ns(self) -> int:
        """Return the current manual time in ns."""
        return self._now

    def advance_to(self, t_ns: int) -> None:
        """Move time forward to ``t_ns`` (never backwards) and wake due sleepers."""
        if t_ns <= self._now:
            return
        self._now = t_ns
        still: list[tuple[int, asyncio.Future[None]]] = []
        for due, fut in self._waiters:
            if due <= t_ns:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((due, fut))
        self._waiters = still

    def advance(self, dt_ns: int) -> None:
        """Move time forward by ``dt_ns``."""
        self.advance_to(self._now + dt_ns)

    async def sleep_until(self, t_ns: int) -> None:
        """Wait until the clock has been advanced to ``t_ns``."""
        if t_ns <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((t_ns, fut))
        await fut
