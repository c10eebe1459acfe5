"""In-process simulated broker for replay and paper trading.

``SimulatedBroker`` wraps the execution core's one simulated venue (``agent.core.venue.SimVenue``:
its latency rule, IOC matching, resting orders on the queue model and optional depth memory
are the backtest's too) in the
``Broker`` protocol, with an asyncio queue of events. The venue is advanced with the books by
the core's ``SymbolSession`` (in the daemon's symbol task), whose execution events the daemon
routes at once; only what ``submit`` answers at once (a duplicate id, say) goes through the
queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent.core.queue import QueueConfig
from agent.core.venue import SimVenue
from agent.model import CancelRequested, ChildOrder, OrderEvent, OrderStatus, ReplaceRequested

__all__ = ["SimulatedBroker"]


class SimulatedBroker:
    """``Broker`` over the core's ``SimVenue``; events go through an asyncio queue.

    Args:
        latency_ns: Order-to-execution delay, ns.
        name: Broker name for logs.
        half_life_s: Depth-memory half-life of the venue, s (0: every order sees the book).
        beyond_depth: ``unfilled`` or ``penalty`` (see ``SimVenue``).
        penalty_bps: Penalty of beyond-depth fills, bps.
    """

    def __init__(
        self,
        latency_ns: int = 0,
        name: str = "simulated",
        half_life_s: float = 0.0,
        beyond_depth: str = "unfilled",
        penalty_bps: float = 100.0,
        queue: QueueConfig | None = None,
    ) -> None:
        self.name = name
        self.venue = SimVenue(latency_ns, half_life_s, beyond_depth, penalty_bps, queue)
        self._queue: asyncio.Queue[OrderEvent | None] = asyncio.Queue()
        self._closed = False

    async def submit(self, order: ChildOrder) -> None:
        """Queue the order at the venue."""
        self._put(self.venue.submit(order))

    async def cancel(self, client_order_id: str) -> None:
        """Cancel a resting order now (at the venue's latest book time); an IOC never rests,
        so there is nothing to cancel for it."""
        if self.venue.may_rest(client_order_id):
            now = self.venue.now_ns(client_order_id)
            self._put(self.venue.cancel(CancelRequested(client_order_id, now)))

    async def cancel_request(self, request: CancelRequested) -> None:
        """Send a recorded cancel request; it reaches the venue after the latency."""
        self._put(self.venue.cancel(request))

    async def replace(self, request: ReplaceRequested) -> None:
        """Send a recorded cancel/replace; it reaches the venue after the latency."""
        self._put(self.venue.replace(request))

    async def request_status(self, client_order_id: str) -> None:
        """Answer a status query: an order this venue never saw is ``unknown``.

        The simulated venue lives in the daemon's process, so after a restart it knows no
        earlier order: those are closed as unknown (nothing executed here for them).
        """
        st = self.venue.resting_status(client_order_id)
        if st is not None:  # a resting order: working, with what it filled so far
            now = self.venue.now_ns(client_order_id)
            self._put([OrderStatus(client_order_id, now, "working", st[0], st[1])])
            return
        if not self.venue.known(client_order_id):
            self._put([OrderStatus(client_order_id, 0, "unknown", 0.0, 0.0, "unknown order")])

    def _put(self, events: list[OrderEvent]) -> None:
        for e in events:
            self._queue.put_nowait(e)

    async def events(self) -> AsyncIterator[OrderEvent]:
        """Yield events until ``aclose``."""
        while True:
            e = await self._queue.get()
            if e is None:
                return
            yield e

    async def aclose(self) -> None:
        """End the event stream."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
