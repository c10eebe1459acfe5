"""The one simulated venue: the daemon's simulated broker, the TWAP shadow and the backtest.

Rules (one of each, for every driver):
- Latency: an order decided at ``t`` reaches the venue at ``due = t + latency_ns`` and executes
  against the book *in force* at ``due``: the last snapshot with ``ts_event_ns <= due`` (the
  previous batch's last row when the current batch starts after ``due``), once a batch reaches
  ``due`` (or the feed ends).
- Orders are immediate-or-cancel limit orders matched level by level inside the limit
  (``match_ioc``); the remainder is cancelled.
- Depth memory (optional): with ``half_life_s > 0`` the venue remembers, per symbol and side
  taken, the depth our earlier fills consumed, and that depth comes back with the half-life
  (``DepthMemory``). With ``half_life_s = 0`` every order sees the displayed book.
- ``beyond_depth = "penalty"`` fills what the visible levels inside the limit cannot at the
  last visible price worsened by ``penalty_bps`` (liquidity we cannot see, flagged in
  ``Execution.beyond_qty``); ``unfilled`` (default) cancels it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from agent.brokers.matching import match_ioc
from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    Side,
)
from feeds.model import BookBatch

__all__ = ["DepthMemory", "Execution", "SimVenue"]

_LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class Execution:
    """Outcome of one IOC child against one snapshot.

    Attributes:
        qty: Shares filled per level touched, shape (m,) (the last entry may be a penalty fill).
        px: Fill price per entry, shape (m,).
        beyond_qty: Shares filled by the beyond-depth penalty policy (0 when none).
        reason: ``filled``, ``ioc_remainder`` (partial), ``no_liquidity`` (nothing filled).
    """

    qty: NDArray[np.float64]
    px: NDArray[np.float64]
    beyond_qty: float
    reason: str

    @property
    def filled(self) -> float:
        """Return the shares filled."""
        return float(self.qty.sum())

    @property
    def avg_px(self) -> float:
        """Return the volume-weighted fill price (NaN when nothing filled)."""
        f = self.filled
        return float(self.qty @ self.px / f) if f > 0 else math.nan


@dataclass(slots=True)
class DepthMemory:
    """Our memory of the depth we took on one side of one symbol, with resilience.

    Consumed depth ``c(p)`` is kept per price of the side we take; between two executions it
    decays as ``c * exp(-ln2 * dt / half_life)``. At an execution the size available to us at
    ``p`` is ``max(0, displayed(p) - c(p))`` and what we take is added to ``c(p)``: on an
    unchanged book with an infinite half-life no share is taken twice.

    Args:
        side: The side of our orders (a buy takes asks).
        half_life_s: Resilience half-life in seconds (0: none kept; ``math.inf``: forever).
        beyond_depth: ``unfilled`` or ``penalty``.
        penalty_bps: Price penalty of ``penalty`` beyond the last visible level, bps.
    """

    side: Side
    half_life_s: float
    beyond_depth: str = "unfilled"
    penalty_bps: float = 100.0
    _consumed: dict[float, float] = field(default_factory=dict)
    _last_ns: int | None = None

    def __post_init__(self) -> None:
        if not (self.half_life_s >= 0):
            raise ValueError(f"half_life_s must be >= 0, got {self.half_life_s}")
        if self.beyond_depth not in ("unfilled", "penalty"):
            raise ValueError(f"beyond_depth must be unfilled or penalty, got {self.beyond_depth}")

    def consumed(self, px: float, ts_ns: int) -> float:
        """Return the depth still missing at ``px`` at time ``ts_ns`` (shares)."""
        self._decay(ts_ns)
        return self._consumed.get(_key(px), 0.0)

    def _decay(self, ts_ns: int) -> None:
        if self._last_ns is None:
            self._last_ns = ts_ns
            return
        dt = (ts_ns - self._last_ns) / 1e9
        if dt < 0:
            raise ValueError("executions must come in time order")
        if self.half_life_s == 0:
            self._consumed.clear()
        elif dt > 0 and math.isfinite(self.half_life_s):
            f = math.exp(-_LN2 * dt / self.half_life_s)
            self._consumed = {p: c * f for p, c in self._consumed.items() if c * f > 1e-9}
        self._last_ns = ts_ns

    def execute(
        self,
        ts_ns: int,
        qty: float,
        limit_px: float,
        px: NDArray[np.float64],
        sz: NDArray[np.float64],
    ) -> Execution:
        """Execute an IOC limit order against one snapshot of the side we take.

        Args:
            ts_ns: Time of the execution, ns (non-decreasing across calls).
            qty: Shares wanted, > 0.
            limit_px: Worst acceptable price.
            px: Displayed prices of the side taken, shape (L,), best first, NaN when empty.
            sz: Displayed sizes, shape (L,).
        """
        self._decay(ts_ns)
        if self.half_life_s == 0:
            self._consumed.clear()
        avail = np.asarray(sz, dtype=np.float64).copy()
        for i, p in enumerate(px):
            if np.isfinite(p):
                avail[i] = max(0.0, avail[i] - self._consumed.get(_key(float(p)), 0.0))
        fq, fp = match_ioc(self.side, qty, limit_px, np.asarray(px, dtype=np.float64), avail)
        if self.half_life_s > 0:
            for q, p in zip(fq.tolist(), fp.tolist(), strict=True):
                k = _key(p)
                self._consumed[k] = self._consumed.get(k, 0.0) + q
        left = qty - float(fq.sum())
        beyond = 0.0
        if left > 1e-9 and self.beyond_depth == "penalty":
            live = np.isfinite(px) & (np.asarray(sz) > 0)
            if live.any():
                last = float(np.asarray(px)[np.flatnonzero(live)[-1]])
                pen = last * (1.0 + self.side.sign * self.penalty_bps * 1e-4)
                inside = pen <= limit_px if self.side is Side.BUY else pen >= limit_px
                # Only shares past the whole visible book go to the penalty: a level skipped
                # for the collar is not "beyond depth".
                with np.errstate(invalid="ignore"):
                    in_limit = (px <= limit_px) if self.side is Side.BUY else (px >= limit_px)
                if inside and bool(np.all(~live | in_limit)):
                    beyond = left
                    fq = np.append(fq, left)
                    fp = np.append(fp, pen)
                    left = 0.0
        partial = "ioc_remainder" if fq.size else "no_liquidity"
        reason = "filled" if left <= 1e-9 else partial
        return Execution(fq, fp, beyond, reason)


def _key(px: float) -> float:
    # Prices are on a tick grid; rounding merges float noise from different snapshots.
    return round(px, 8)


_Row = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


@dataclass(slots=True)
class _SymbolBook:
    last_row: _Row | None = None
    last_ts: int = -1
    pending: list[tuple[int, int, ChildOrder]] = field(default_factory=list)  # (due, seq, order)


@dataclass(frozen=True, slots=True)
class VenueFill:
    """What the venue did with one child (for TCA): the book it met and the execution."""

    client_order_id: str
    due_ns: int
    book_ts_ns: int
    mid: float
    half_spread: float
    execution: Execution


class SimVenue:
    """Pure matching venue driven by book batches (see the module docstring for the rules).

    Args:
        latency_ns: Delay between an order's decision time and its execution, ns.
        half_life_s: Depth-memory half-life, s (0: no memory).
        beyond_depth: ``unfilled`` or ``penalty``.
        penalty_bps: Penalty of ``penalty`` fills past the last visible level, bps.
    """

    def __init__(
        self,
        latency_ns: int = 0,
        half_life_s: float = 0.0,
        beyond_depth: str = "unfilled",
        penalty_bps: float = 100.0,
    ) -> None:
        if latency_ns < 0:
            raise ValueError(f"latency_ns must be >= 0, got {latency_ns}")
        self.latency_ns = int(latency_ns)
        self.half_life_s = float(half_life_s)
        self.beyond_depth = beyond_depth
        self.penalty_bps = float(penalty_bps)
        DepthMemory(Side.BUY, self.half_life_s, beyond_depth, penalty_bps)  # validates
        self._books: dict[str, _SymbolBook] = {}
        self._memory: dict[tuple[str, Side], DepthMemory] = {}
        self._seq = 0
        self._seen: set[str] = set()
        self.fills: list[VenueFill] = []  # every execution, in order (the backtest's TCA)

    def known(self, client_order_id: str) -> bool:
        """Return True when this venue has seen the client order id."""
        return client_order_id in self._seen

    def submit(self, order: ChildOrder) -> list[OrderEvent]:
        """Queue an order; returns immediate rejects (duplicate id, bad quantity or price)."""
        if order.client_order_id in self._seen:
            return [OrderRejected(order.client_order_id, order.ts_created_ns, "duplicate_order_id")]
        self._seen.add(order.client_order_id)
        if not (math.isfinite(order.qty) and order.qty > 0 and math.isfinite(order.limit_px)):
            return [OrderRejected(order.client_order_id, order.ts_created_ns, "invalid_order")]
        book = self._books.setdefault(order.symbol, _SymbolBook())
        self._seq += 1
        bisect.insort(book.pending, (order.ts_created_ns + self.latency_ns, self._seq, order))
        return []

    def advance(self, batch: BookBatch) -> list[OrderEvent]:
        """Execute every order of ``batch.symbol`` whose due time the batch has passed."""
        n = len(batch)
        if n == 0:
            return []
        book = self._books.setdefault(batch.symbol, _SymbolBook())
        events: list[OrderEvent] = []
        ts = batch.ts_event_ns
        last_ts = int(ts[-1])
        while book.pending and book.pending[0][0] <= last_ts:
            due, _, order = book.pending.pop(0)
            i = int(np.searchsorted(ts, due, side="right")) - 1
            if i >= 0:
                row: _Row | None = (
                    batch.bid_px[i],
                    batch.bid_sz[i],
                    batch.ask_px[i],
                    batch.ask_sz[i],
                )
                row_ts = int(ts[i])
            else:
                row, row_ts = book.last_row, book.last_ts
            events.extend(self._execute(order, due, row, row_ts))
        book.last_ts = last_ts
        book.last_row = (batch.bid_px[-1], batch.bid_sz[-1], batch.ask_px[-1], batch.ask_sz[-1])
        return events

    def flush(self, symbol: str) -> list[OrderEvent]:
        """Execute every pending order of ``symbol`` against its last book (feed ended)."""
        book = self._books.setdefault(symbol, _SymbolBook())
        events: list[OrderEvent] = []
        while book.pending:
            due, _, order = book.pending.pop(0)
            events.extend(self._execute(order, due, book.last_row, book.last_ts))
        return events

    def pending(self, symbol: str) -> int:
        """Return how many orders of ``symbol`` wait for their due time."""
        b = self._books.get(symbol)
        return len(b.pending) if b is not None else 0

    def _execute(
        self, order: ChildOrder, due: int, row: _Row | None, row_ts: int
    ) -> list[OrderEvent]:
        coid = order.client_order_id
        if row is None:
            return [OrderRejected(coid, due, "no_book")]
        bid_px, bid_sz, ask_px, ask_sz = row
        px, sz = (ask_px, ask_sz) if order.side is Side.BUY else (bid_px, bid_sz)
        key = (order.symbol, order.side)
        mem = self._memory.get(key)
        if mem is None:
            mem = DepthMemory(order.side, self.half_life_s, self.beyond_depth, self.penalty_bps)
            self._memory[key] = mem
        ex = mem.execute(due, order.qty, order.limit_px, px, sz)
        mid = 0.5 * float(bid_px[0] + ask_px[0])
        self.fills.append(VenueFill(coid, due, row_ts, mid, 0.5 * float(ask_px[0] - bid_px[0]), ex))
        events: list[OrderEvent] = [OrderAccepted(coid, due)]
        for n, (q, p) in enumerate(zip(ex.qty.tolist(), ex.px.tolist(), strict=True)):
            events.append(OrderFilled(coid, f"{coid}-x{n}", q, p, due))
        left = order.qty - ex.filled
        if left > 1e-9:
            reason = "ioc_remainder" if ex.qty.size else "no_liquidity_within_collar"
            events.append(OrderCancelled(coid, due, reason))
        return events
