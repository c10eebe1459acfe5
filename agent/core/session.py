"""One symbol's books cut at the parents' decision times (pure): the loop both drivers run.

A batch of books is cut so that a decision at ``t`` sees exactly the book in force at ``t``:
the rows up to and including ``t`` are observed first (by the parents' windows and the
simulated venues), and the decision is taken only once a later row proves that nothing more
can arrive for that instant. ``SymbolSession.feed`` yields what the driver must do, in order:
``VenueEvents`` to route to the parents (the daemon journals and logs them, the backtest
applies them), and ``DecideAt`` for the parents whose decision time has come.

Within a period the books are also cut where a parent's tactic reacts to a row (its touch moved
away from a resting child, a cheap book for a waiting one: ``ParentCore.wake_in``) and where a
simulated venue answers a cancel, a replace or a resting order (``SimVenue.next_due``); a later
row then releases what reached the venue before it. These cuts depend on the rows and the
orders only, so a chunked feed and a whole day meet the same books at the same instants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.core.bookstats import FeatureMemo
from agent.core.estimator import CurveView, IncrementalCurve, SharedCurves, Weighting
from agent.core.parent import ParentCore
from agent.core.venue import SimVenue
from agent.impact.book_walk import DepthPolicy, Side
from agent.model import OrderEvent
from feeds.model import BookBatch

__all__ = ["DecideAt", "SymbolSession", "VenueEvents"]

_TRADE = ord("T")
# Rows a segment leaves waiting before the estimates fold them in (walks of fewer rows cost more
# per row; a live driver settles the rest when it has nothing to read, ``SymbolSession.settle``).
SETTLE_ROWS = 64


@dataclass(frozen=True, slots=True)
class VenueEvents:
    """Events the simulated venues produced while advancing over the rows just observed."""

    events: list[OrderEvent]


@dataclass(frozen=True, slots=True)
class DecideAt:
    """Parents whose next decision time is ``t_ns``; ``now_ns`` is the next book's time and
    ``recv_ns`` its receive time (None: the clock proved the instant, no book did)."""

    t_ns: int
    now_ns: int
    parents: list[ParentCore]
    recv_ns: int | None = None


def trades_of(seg: BookBatch) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(ts_ns, qty)`` of the trade rows of ``seg`` (None: the feed has no events)."""
    action = getattr(seg, "action", None)
    size = getattr(seg, "ev_sz", None)
    if action is None or size is None:
        return None
    hit = action == _TRADE
    return seg.ts_event_ns[hit], np.asarray(size, dtype=np.float64)[hit]


class _Trades:
    """A time-ordered trade source read forward: ``upto(t)`` returns the trades not yet handed
    out with ``ts <= t``."""

    def __init__(self, ts: NDArray[np.int64], qty: NDArray[np.float64]) -> None:
        self.ts = np.asarray(ts, dtype=np.int64)
        self.qty = np.asarray(qty, dtype=np.float64)
        self.i = 0

    def upto(self, t_ns: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        j = int(np.searchsorted(self.ts, t_ns, side="right"))
        i, self.i = self.i, max(self.i, j)
        return self.ts[i:j], self.qty[i:j]


class SymbolSession:
    """The parents and simulated venues of one symbol, advanced batch by batch.

    Args:
        symbol: Instrument.
        parents: Parents on it (the list may grow while the session runs).
        venues: Simulated venues to advance with the books (none for a real broker).
    """

    def __init__(
        self, symbol: str, parents: list[ParentCore], venues: list[SimVenue] | None = None
    ) -> None:
        self.symbol = symbol
        self.parents = parents
        self.venues = venues or []
        self._estimators: dict[tuple[object, ...], IncrementalCurve] = {}
        self._shared: dict[tuple[object, ...], SharedCurves] = {}
        self._features: dict[tuple[str, int], FeatureMemo] = {}
        self._last_observed_ns: int | None = None

    def estimator(
        self, key: tuple[object, ...], make: Callable[[], IncrementalCurve]
    ) -> IncrementalCurve:
        """Return the incremental estimator of ``key`` (side, sizes, depth policy, window,
        weighting), made once: parents on the same symbol and side share the curve."""
        est = self._estimators.get(key)
        if est is None:
            est = self._estimators[key] = make()
        return est

    def curve_view(
        self,
        side: Side,
        sizes: NDArray[np.float64],
        policy: DepthPolicy,
        window_ns: int,
        weighting: Weighting,
    ) -> CurveView:
        """Return a parent's view of the symbol's window curve for ``side``: parents with the
        same policy, window and weighting share one walk of each book whatever their size grids
        (``SharedCurves``)."""
        key = (side, policy, int(window_ns), weighting)
        sc = self._shared.get(key)
        if sc is None:
            sc = self._shared[key] = SharedCurves(side, policy, window_ns, weighting)
        return sc.view(sizes)

    def features(self, side: str, levels: int = 5) -> FeatureMemo:
        """Return the book features of ``side`` that the parents' forecasts share."""
        key = (side, int(levels))
        memo = self._features.get(key)
        if memo is None:
            memo = self._features[key] = FeatureMemo(side, levels)
        return memo

    def _curves(self) -> list[IncrementalCurve | SharedCurves]:
        shared: dict[int, IncrementalCurve | SharedCurves] = {}
        for p in self.parents:
            if (e := p.estimator) is not None:
                src = e.source if isinstance(e, CurveView) else e
                shared[id(src)] = src
        return list(shared.values())

    def settle(self, min_rows: int = 1) -> None:
        """Fold the rows observed so far into the estimates now, where at least ``min_rows``
        wait: the work the next decision would do first (no row observed is later than it).

        Every segment observed settles at ``SETTLE_ROWS``; a live driver with nothing to read
        calls this with fewer, so a decision walks only the rows that came with its trigger.
        The results are the same to the rounding of the sums (about 1e-16 relative).
        """
        self._settle(self._curves(), min_rows)

    def _settle(self, curves: list[IncrementalCurve | SharedCurves], min_rows: int) -> None:
        t = self._last_observed_ns
        if t is None:
            return
        for est in curves:
            est.settle(t, min_rows)
        for memo in self._features.values():
            memo.settle(min_rows)
        for p in list(self.parents):
            p.settle(min_rows)

    def _next_time(self) -> int | None:
        times = [t for p in list(self.parents) if (t := p.next_time()) is not None]
        return min(times) if times else None

    def _observe(
        self, seg: BookBatch, parents: bool = True, trades: _Trades | None = None
    ) -> Iterator[VenueEvents]:
        if not len(seg):
            return
        if parents:
            tr = trades_of(seg) if trades is None else trades.upto(int(seg.ts_event_ns[-1]))
            self._last_observed_ns = int(seg.ts_event_ns[-1])
            curves = self._curves()
            for est in curves:  # once per estimator, however many parents share it
                est.push(seg)
            for memo in self._features.values():  # the forecasts' shared tails
                memo.push(seg)
            for p in list(self.parents):
                p.observe(seg)
                if tr is not None:
                    p.on_trades(*tr)
            self._settle(curves, SETTLE_ROWS)
        events: list[OrderEvent] = []
        for v in self.venues:
            events.extend(v.advance(seg))
        if events:
            yield VenueEvents(events)

    def feed(
        self,
        batch: BookBatch,
        stop: bool = False,
        trades: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None,
    ) -> Iterator[VenueEvents | DecideAt]:
        """Yield the driver's work for one batch (re-reading the parents' times as it goes).

        Args:
            batch: Validated rows of this symbol, in time order.
            stop: Nothing new may be decided (a stop was requested): the venues only advance.
            trades: Market trades ``(ts_ns, qty)`` from another source than the batch's trade
                rows (a LOBSTER message file, say); each is handed to the parents with the
                rows up to its time.
        """
        src = _Trades(*trades) if trades is not None else None
        n = len(batch)
        ts = batch.ts_event_ns
        pos = 0
        while pos < n:
            t_next = None if stop else self._next_time()
            if t_next is None:
                # Every parent is done: orders already sent still execute on these books.
                yield from self._observe(batch.slice(pos, n), parents=False)
                return
            cut = int(np.searchsorted(ts, t_next, side="right")) if t_next < ts[-1] else n
            t_next, cut = self._wakes(batch, pos, cut, t_next)
            yield from self._observe(batch.slice(pos, cut), trades=src)
            pos = cut
            if pos < n:
                # A later row proves the book in force: what reaches the venues before it
                # executes now (resting orders, cancels, replaces), before anyone decides.
                events = [
                    e
                    for v in self.venues
                    if v.active(self.symbol)
                    for e in v.release(self.symbol, int(ts[pos]))
                ]
                if events:
                    yield VenueEvents(events)
                due = [p for p in list(self.parents) if p.next_time() == t_next]
                if due:
                    yield DecideAt(t_next, int(ts[pos]), due, int(batch.ts_recv_ns[pos]))

    def _wakes(self, batch: BookBatch, pos: int, cut: int, t_next: int) -> tuple[int, int]:
        """Cut earlier where a parent's tactic reacts to a row or a venue answers a cancel.

        Both depend on the rows and the orders only, never on how the feed was batched, so the
        daemon (chunks) and the backtest (one batch) cut at the same instants.
        """
        ts = batch.ts_event_ns
        t = t_next
        if cut > pos:
            seg = batch.slice(pos, cut)
            for p in list(self.parents):
                w = p.wake_in(seg)
                if w is not None and w < t:
                    t = w
        for v in self.venues:
            d = v.next_due(self.symbol)
            if d is not None and d < t:
                t = d
        if t == t_next:
            return t_next, max(pos, cut)
        return t, max(pos, int(np.searchsorted(ts, t, side="right")))

    def tick(self, now_ns: int) -> Iterator[DecideAt]:
        """Yield the decisions whose time ``now_ns`` has passed although no later book came.

        Live, the wall clock (less a grace for late books) proves that nothing more can arrive
        for those instants; ``now_ns`` is passed on, so a period with no book is skipped and a
        deadline passes without books. Replay never calls this: event time alone drives it.
        """
        while True:
            t_next = self._next_time()
            if t_next is None or t_next >= now_ns:
                return
            due = [p for p in list(self.parents) if p.next_time() == t_next]
            yield DecideAt(t_next, now_ns, due)

    def end(self) -> Iterator[VenueEvents]:
        """The feed ended: what is pending at the venues executes against the last book."""
        events: list[OrderEvent] = []
        for v in self.venues:
            events.extend(v.flush(self.symbol))
        if events:
            yield VenueEvents(events)

    @property
    def done(self) -> bool:
        """Return True once every parent is done."""
        return all(p.done for p in self.parents)
