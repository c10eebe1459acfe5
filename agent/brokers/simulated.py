"""In-process simulated broker for replay and paper trading.

The venue core (``SimulatedVenue``) is pure: orders wait ``latency_ns`` after their decision
time, then execute against the snapshot in force at that moment (the last one with
``ts_event_ns <= due``) as immediate-or-cancel limit orders, level by level (``match_ioc``).
The remainder is cancelled. It does not remember the depth it took: every order sees the
displayed book, which is the right model when our children are small against the refresh rate.

``SimulatedBroker`` wraps the venue in the ``Broker`` protocol with an asyncio queue of events.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from agent.brokers.matching import match_ioc
from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Side,
)
from feeds.model import BookBatch

__all__ = ["SimulatedBroker", "SimulatedVenue"]


@dataclass(slots=True)
class _SymbolBook:
    last_ts: int = -1
    last_row: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    pending: list[tuple[int, int, ChildOrder]] = field(default_factory=list)  # (due, seq, order)


class SimulatedVenue:
    """Pure matching venue driven by replayed book batches.

    Args:
        latency_ns: Delay between an order's decision time and its execution, ns.
    """

    def __init__(self, latency_ns: int = 0) -> None:
        self.latency_ns = int(latency_ns)
        self._books: dict[str, _SymbolBook] = {}
        self._seq = 0
        self._seen: set[str] = set()

    def submit(self, order: ChildOrder) -> list[OrderEvent]:
        """Queue an order; returns immediate rejects (duplicate id, bad quantity)."""
        if order.client_order_id in self._seen:
            return [OrderRejected(order.client_order_id, order.ts_created_ns, "duplicate_order_id")]
        self._seen.add(order.client_order_id)
        if not order.qty > 0 or not np.isfinite(order.limit_px):
            return [OrderRejected(order.client_order_id, order.ts_created_ns, "invalid_order")]
        book = self._books.setdefault(order.symbol, _SymbolBook())
        self._seq += 1
        bisect.insort(book.pending, (order.ts_created_ns + self.latency_ns, self._seq, order))
        return []

    def advance(self, batch: BookBatch) -> list[OrderEvent]:
        """Execute every order of ``batch.symbol`` due at or before the batch's last row."""
        book = self._books.setdefault(batch.symbol, _SymbolBook())
        n = len(batch)
        if n == 0:
            return []
        events: list[OrderEvent] = []
        ts = batch.ts_event_ns
        last_ts = int(ts[-1])
        while book.pending and book.pending[0][0] <= last_ts:
            due, _, order = book.pending.pop(0)
            i = int(np.searchsorted(ts, due, side="right")) - 1
            if i >= 0:
                row = (batch.bid_px[i], batch.bid_sz[i], batch.ask_px[i], batch.ask_sz[i])
            else:
                row = book.last_row  # type: ignore[assignment]
            events.extend(self._execute(order, due, row))
        book.last_ts = last_ts
        book.last_row = (batch.bid_px[-1], batch.bid_sz[-1], batch.ask_px[-1], batch.ask_sz[-1])
        return events

    def flush(self, symbol: str) -> list[OrderEvent]:
        """Execute every pending order of ``symbol`` against the last book (feed ended)."""
        book = self._books.setdefault(symbol, _SymbolBook())
        events: list[OrderEvent] = []
        while book.pending:
            due, _, order = book.pending.pop(0)
            events.extend(self._execute(order, due, book.last_row))
        return events

    @staticmethod
    def _execute(
        order: ChildOrder,
        due: int,
        row: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> list[OrderEvent]:
        coid = order.client_order_id
        if row is None:
            return [OrderRejected(coid, due, "no_book")]
        bid_px, bid_sz, ask_px, ask_sz = row
        px, sz = (ask_px, ask_sz) if order.side is Side.BUY else (bid_px, bid_sz)
        qtys, pxs = match_ioc(order.side, order.qty, order.limit_px, px, sz)
        events: list[OrderEvent] = [OrderAccepted(coid, due)]
        for n, (q, p) in enumerate(zip(qtys.tolist(), pxs.tolist(), strict=True)):
            events.append(OrderFilled(coid, f"{coid}-x{n}", q, p, due))
        left = order.qty - float(qtys.sum())
        if left > 1e-9:
            reason = "ioc_remainder" if len(qtys) else "no_liquidity_within_collar"
            events.append(OrderCancelled(coid, due, reason))
        return events


class SimulatedBroker:
    """``Broker`` over a ``SimulatedVenue``; events go through an asyncio queue.

    Args:
        latency_ns: Order-to-execution delay, ns.
        name: Broker name for logs.
    """

    def __init__(self, latency_ns: int = 0, name: str = "simulated") -> None:
        self.name = name
        self.venue = SimulatedVenue(latency_ns)
        self._queue: asyncio.Queue[OrderEvent | None] = asyncio.Queue()
        self._closed = False

    async def submit(self, order: ChildOrder) -> None:
        """Queue the order at the venue."""
        self._put(self.venue.submit(order))

    async def cancel(self, client_order_id: str) -> None:
        """IOC orders cannot rest, so there is never anything to cancel."""

    async def request_status(self, client_order_id: str) -> None:
        """Answer a status query: an order this venue never saw is ``unknown``.

        The simulated venue lives in the daemon's process, so after a restart it knows no
        earlier order: those are closed as unknown (nothing executed here for them).
        """
        if client_order_id not in self.venue._seen:
            self._put([OrderStatus(client_order_id, 0, "unknown", 0.0, 0.0, "unknown order")])

    def on_book(self, batch: BookBatch) -> None:
        """Advance the venue with a replayed batch."""
        self._put(self.venue.advance(batch))

    def on_end(self, symbol: str) -> None:
        """Execute what is still pending on ``symbol`` against its last book."""
        self._put(self.venue.flush(symbol))

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

    def pending_events(self) -> int:
        """Return how many events wait in the queue."""
        return self._queue.qsize()

    async def aclose(self) -> None:
        """End the event stream."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
