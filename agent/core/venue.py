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
- Resting orders (``tif`` ``day``/``gtc``): at ``due`` the part that crosses the book takes
  liquidity as an IOC would; the rest joins the back of the queue at its price and fills from
  the rows that follow by the queue model (``agent.core.queue``: trades at our price eat the
  queue ahead first, trades through and crossing books fill us; cancels move us up by the
  configured model, conservative by default). Cancels and replaces reach the venue after the
  same latency: a cancel of an order that filled meanwhile is rejected (``too_late_to_cancel``),
  a replace likewise; a replace that changes the price or raises the size loses priority.
  Feeds without event columns (no trade rows) cannot fill a resting order: it is rejected with
  a reason rather than given invented fills.
- ``beyond_depth = "penalty"`` fills what the visible levels inside the limit cannot at the
  last visible price worsened by ``penalty_bps`` (liquidity we cannot see, flagged in
  ``Execution.beyond_qty``); ``unfilled`` (default) cancels it.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from agent.brokers.matching import match_ioc
from agent.core.queue import PassiveFill, QueueConfig, QueueModel, QueueRows
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceRequested,
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

    def take(self, ts_ns: int, qty: NDArray[np.float64], px: NDArray[np.float64]) -> None:
        """Remember depth taken outside ``execute`` (a resting order crossing on arrival)."""
        self._decay(ts_ns)
        if self.half_life_s > 0:
            for q, p in zip(qty.tolist(), px.tolist(), strict=True):
                k = _key(p)
                self._consumed[k] = self._consumed.get(k, 0.0) + q

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


_Request = ChildOrder | CancelRequested | ReplaceRequested


@dataclass(slots=True)
class _Resting:
    order: ChildOrder  # as it stands (after replaces)
    filled: float = 0.0
    notional: float = 0.0


@dataclass(slots=True)
class _SymbolBook:
    last_row: _Row | None = None
    last_ts: int = -1
    pending: list[tuple[int, int, _Request]] = field(default_factory=list)  # (due, seq, request)
    queue: QueueModel | None = None
    resting: dict[str, _Resting] = field(default_factory=dict)
    has_events: bool = False

    def active(self) -> bool:
        """Return True when something non-IOC rests or waits (cuts and releases matter)."""
        return bool(self.resting) or any(
            not isinstance(r, ChildOrder) or r.rests for _, _, r in self.pending
        )


@dataclass(frozen=True, slots=True)
class VenueFill:
    """What the venue did with one child (for TCA): the book it met and the execution."""

    client_order_id: str
    due_ns: int
    book_ts_ns: int
    mid: float
    half_spread: float
    execution: Execution
    kind: str = "taker"  # "taker" (took liquidity) or "passive" (a resting order was hit)
    how: str = ""  # passive: the queue model's trade, trade_through or cross


class SimVenue:
    """Pure matching venue driven by book batches (see the module docstring for the rules).

    Args:
        latency_ns: Delay between an order's decision time and its execution, ns.
        half_life_s: Depth-memory half-life, s (0: no memory).
        beyond_depth: ``unfilled`` or ``penalty``.
        penalty_bps: Penalty of ``penalty`` fills past the last visible level, bps.
        queue: Queue model of resting orders (default conservative).
    """

    def __init__(
        self,
        latency_ns: int = 0,
        half_life_s: float = 0.0,
        beyond_depth: str = "unfilled",
        penalty_bps: float = 100.0,
        queue: QueueConfig | None = None,
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
        self._symbol_of: dict[str, str] = {}
        self._n_exec: dict[str, int] = {}
        self.queue_config = queue or QueueConfig()
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
        self._symbol_of[order.client_order_id] = order.symbol
        self._queue_request(order.symbol, order.ts_created_ns, order)
        return []

    def cancel(self, request: CancelRequested) -> list[OrderEvent]:
        """Queue a cancel; it reaches the venue after the latency (immediate reject: unknown id)."""
        sym = self._symbol_of.get(request.client_order_id)
        if sym is None:
            return [OrderCancelRejected(request.client_order_id, request.ts_event_ns, "unknown")]
        self._queue_request(sym, request.ts_event_ns, request)
        return []

    def replace(self, request: ReplaceRequested) -> list[OrderEvent]:
        """Queue a cancel/replace (new total quantity and price; the id is kept)."""
        sym = self._symbol_of.get(request.client_order_id)
        if sym is None:
            return [OrderReplaceRejected(request.client_order_id, request.ts_event_ns, "unknown")]
        self._queue_request(sym, request.ts_event_ns, request)
        return []

    def _queue_request(self, symbol: str, ts_ns: int, request: _Request) -> None:
        book = self._books.setdefault(symbol, _SymbolBook())
        self._seq += 1
        bisect.insort(book.pending, (ts_ns + self.latency_ns, self._seq, request))

    def may_rest(self, client_order_id: str) -> bool:
        """Return True when the order rests, or will rest once it reaches the venue."""
        b = self._books.get(self._symbol_of.get(client_order_id, ""))
        if b is None:
            return False
        if client_order_id in b.resting:
            return True
        return any(
            isinstance(r, ChildOrder) and r.rests and r.client_order_id == client_order_id
            for _, _, r in b.pending
        )

    def resting_status(self, client_order_id: str) -> tuple[float, float] | None:
        """Return ``(cum_qty, avg_px)`` of a resting order (None when it does not rest)."""
        b = self._books.get(self._symbol_of.get(client_order_id, ""))
        r = b.resting.get(client_order_id) if b is not None else None
        if r is None:
            return None
        return r.filled, (r.notional / r.filled if r.filled > 0 else 0.0)

    def now_ns(self, client_order_id: str) -> int:
        """Return the time of the last book seen on the order's symbol (-1: none)."""
        b = self._books.get(self._symbol_of.get(client_order_id, ""))
        return b.last_ts if b is not None else -1

    def next_due(self, symbol: str) -> int | None:
        """Return when the next cancel, replace or resting order of ``symbol`` reaches the venue.

        The session cuts the books there, so what the venue answers reaches the parents with
        the book in force at that instant, whatever batches the feed came in.
        """
        b = self._books.get(symbol)
        if b is None:
            return None
        dues = [d for d, _, r in b.pending if not isinstance(r, ChildOrder) or r.rests]
        return min(dues) if dues else None

    def active(self, symbol: str) -> bool:
        """Return True when orders rest, or cancels/replaces/resting orders wait, on ``symbol``."""
        b = self._books.get(symbol)
        return b is not None and b.active()

    def resting(self, symbol: str) -> list[str]:
        """Return the client order ids resting on ``symbol``."""
        b = self._books.get(symbol)
        return list(b.resting) if b is not None else []

    def advance(self, batch: BookBatch) -> list[OrderEvent]:
        """Execute every order of ``batch.symbol`` whose due time the batch has passed."""
        n = len(batch)
        if n == 0:
            return []
        book = self._books.setdefault(batch.symbol, _SymbolBook())
        events: list[OrderEvent] = []
        ts = batch.ts_event_ns
        last_ts = int(ts[-1])
        rows: QueueRows | None = None
        done = 0  # rows already applied to the queue model
        while book.pending and book.pending[0][0] <= last_ts:
            due, _, order = book.pending.pop(0)
            i = int(np.searchsorted(ts, due, side="right")) - 1
            if i + 1 > done:
                if book.resting:
                    rows = QueueRows.from_batch(batch) if rows is None else rows
                    events.extend(self._passive(book, batch, rows, done, i + 1))
                done = i + 1
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
            events.extend(
                self._process(
                    book, order, due, row, row_ts, getattr(batch, "action", None) is not None
                )
            )
        if book.resting and done < n:
            rows = QueueRows.from_batch(batch) if rows is None else rows
            events.extend(self._passive(book, batch, rows, done, n))
        book.last_ts = last_ts
        book.last_row = (batch.bid_px[-1], batch.bid_sz[-1], batch.ask_px[-1], batch.ask_sz[-1])
        book.has_events = getattr(batch, "action", None) is not None
        return events

    def release(self, symbol: str, before_ns: int) -> list[OrderEvent]:
        """Execute what reaches the venue before ``before_ns`` (a later row proves the book in
        force then is the last one seen): the same outcome ``advance`` would give on the next
        batch, delivered before the session's next decision."""
        book = self._books.get(symbol)
        events: list[OrderEvent] = []
        if book is None:
            return events
        while book.pending and book.pending[0][0] < before_ns:
            due, _, order = book.pending.pop(0)
            events.extend(
                self._process(book, order, due, book.last_row, book.last_ts, book.has_events)
            )
        return events

    def _process(
        self,
        book: _SymbolBook,
        req: _Request,
        due: int,
        row: _Row | None,
        row_ts: int,
        has_events: bool,
    ) -> list[OrderEvent]:
        if isinstance(req, CancelRequested):
            return self._cancel(book, req, due)
        if isinstance(req, ReplaceRequested):
            return self._replace(book, req, due, row)
        if req.rests:
            return self._rest(book, req, due, row, row_ts, has_events)
        return self._execute(req, due, row, row_ts)

    def _queue(self, book: _SymbolBook) -> QueueModel:
        if book.queue is None:
            book.queue = QueueModel(self.queue_config)
        return book.queue

    def _exec_id(self, coid: str) -> str:
        n = self._n_exec.get(coid, 0)
        self._n_exec[coid] = n + 1
        return f"{coid}-p{n}"

    def _rest(
        self,
        book: _SymbolBook,
        order: ChildOrder,
        due: int,
        row: _Row | None,
        row_ts: int,
        has_events: bool,
    ) -> list[OrderEvent]:
        coid = order.client_order_id
        if row is None:
            return [OrderRejected(coid, due, "no_book")]
        if not has_events:
            return [OrderRejected(coid, due, "no_trade_rows: this feed cannot fill resting orders")]
        bid_px, bid_sz, ask_px, ask_sz = row
        events: list[OrderEvent] = [OrderAccepted(coid, due)]
        book.resting[coid] = _Resting(order)
        fills = self._queue(book).join(
            coid, order.side, order.limit_px, order.qty, bid_px, bid_sz, ask_px, ask_sz
        )
        taken = [f for f in fills if f.kind == "taker"]
        if taken:
            mem = self._mem(order)
            mem.take(due, np.array([f.qty for f in taken]), np.array([f.px for f in taken]))
        events.extend(self._fills(book, fills, due, row, row_ts, "taker"))
        return events

    def _mem(self, order: ChildOrder) -> DepthMemory:
        key = (order.symbol, order.side)
        mem = self._memory.get(key)
        if mem is None:
            mem = DepthMemory(order.side, self.half_life_s, self.beyond_depth, self.penalty_bps)
            self._memory[key] = mem
        return mem

    def _fills(
        self,
        book: _SymbolBook,
        fills: list[PassiveFill],
        ts_ns: int,
        row: _Row,
        row_ts: int,
        kind: str,
    ) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        bid_px, _, ask_px, _ = row
        mid = 0.5 * float(bid_px[0] + ask_px[0])
        half = 0.5 * float(ask_px[0] - bid_px[0])
        for f in fills:
            r = book.resting.get(f.key)
            if r is None:
                continue
            r.filled += f.qty
            r.notional += f.qty * f.px
            q, p = np.array([f.qty]), np.array([f.px])
            ex = Execution(q, p, 0.0, "passive" if kind == "passive" else "filled")
            how = f.kind if kind == "passive" else ""
            self.fills.append(VenueFill(f.key, ts_ns, row_ts, mid, half, ex, kind, how))
            events.append(OrderFilled(f.key, self._exec_id(f.key), f.qty, f.px, ts_ns))
            if f.done:
                del book.resting[f.key]
        return events

    def _passive(
        self, book: _SymbolBook, batch: BookBatch, rows: QueueRows, a: int, b: int
    ) -> list[OrderEvent]:
        """Apply rows ``a:b`` to the resting orders; their fills, at each row's time."""
        fills = self._queue(book).advance(rows.slice(a, b))
        events: list[OrderEvent] = []
        for f in fills:
            i = a + f.row
            t = int(batch.ts_event_ns[i])
            # Priced against the book just before the row that filled us (the row itself may
            # already show the move that reached our price).
            row: _Row | None = (
                (batch.bid_px[i - 1], batch.bid_sz[i - 1], batch.ask_px[i - 1], batch.ask_sz[i - 1])
                if i > 0
                else book.last_row
            )
            if row is None:
                row = (batch.bid_px[i], batch.bid_sz[i], batch.ask_px[i], batch.ask_sz[i])
            events.extend(self._fills(book, [f], t, row, t, "passive"))
        return events

    def _cancel(self, book: _SymbolBook, req: CancelRequested, due: int) -> list[OrderEvent]:
        coid = req.client_order_id
        if coid not in book.resting:
            return [OrderCancelRejected(coid, due, "too_late_to_cancel")]
        del book.resting[coid]
        self._queue(book).cancel(coid)
        return [OrderCancelled(coid, due, "cancel_requested")]

    def _replace(
        self, book: _SymbolBook, req: ReplaceRequested, due: int, row: _Row | None
    ) -> list[OrderEvent]:
        coid = req.client_order_id
        r = book.resting.get(coid)
        if r is None:
            return [OrderReplaceRejected(coid, due, "too_late_to_replace")]
        if not req.qty > r.filled + 1e-9:
            return [OrderReplaceRejected(coid, due, "qty_not_above_filled")]
        q = self._queue(book)
        leaves = req.qty - r.filled
        same_px = abs(req.limit_px - r.order.limit_px) <= 1e-9 * max(1.0, req.limit_px)
        r.order = ChildOrder(
            coid, r.order.parent_id, r.order.symbol, r.order.side, req.qty, req.limit_px,
            r.order.ts_created_ns, r.order.tif, r.order.ord_type,
        )  # fmt: skip
        new = req.new_client_order_id or coid
        events: list[OrderEvent] = [
            OrderReplaced(coid, due, req.qty, req.limit_px, req.new_client_order_id)
        ]
        pos = q.position(coid)
        if new == coid and same_px and pos is not None and leaves <= pos.qty + 1e-9:
            q.reduce(coid, leaves)  # a smaller size keeps its place
            return events
        q.cancel(coid)
        if new != coid:  # the order goes by its new id from now on
            book.resting[new] = book.resting.pop(coid)
            r.order = dataclasses.replace(r.order, client_order_id=new)
            self._symbol_of[new] = r.order.symbol
            self._seen.add(new)
        if row is None:
            return events
        fills = q.join(new, r.order.side, req.limit_px, leaves, *row)
        events.extend(self._fills(book, fills, due, row, due, "taker"))
        return events

    def flush(self, symbol: str) -> list[OrderEvent]:
        """Execute every pending order of ``symbol`` against its last book (feed ended)."""
        book = self._books.setdefault(symbol, _SymbolBook())
        events: list[OrderEvent] = []
        while book.pending:
            due, _, order = book.pending.pop(0)
            events.extend(
                self._process(book, order, due, book.last_row, book.last_ts, book.has_events)
            )
        return events

    def _execute(
        self, order: ChildOrder, due: int, row: _Row | None, row_ts: int
    ) -> list[OrderEvent]:
        coid = order.client_order_id
        if row is None:
            return [OrderRejected(coid, due, "no_book")]
        bid_px, bid_sz, ask_px, ask_sz = row
        px, sz = (ask_px, ask_sz) if order.side is Side.BUY else (bid_px, bid_sz)
        mem = self._mem(order)
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
