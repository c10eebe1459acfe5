"""Incremental walk-the-book cost curve of a rolling window (pure).

Today's estimate re-walks every snapshot of the window at each decision (``RollingWindow.view``
then ``cost_curve``): O(rows x levels) per decision. ``IncrementalCurve`` keeps the window's
weighted sums of the per-snapshot curve coefficients (a ``CurveAccumulator``) up to date
instead: a row is walked once when it enters the window (its coefficient changes binned onto the
size grid, kept with its chunk) and the same changes are subtracted when it leaves, and a
decision reads the curve from the sums in O(sizes). The numbers are those of the batch
computation over the same rows:

    cost_curve(rows with t - window_ns < ts <= t, side, sizes, policy,
               weights=time_weights(ts, t) if weighting == "time" else None)

Exactness, row by row:
- ``"snapshot"`` weighting: every row weighs 1.
- ``"time"`` weighting (``time_weights``): a row weighs how long it was in force, up to the next
  row *of the feed* (dropped or not, in the window or not) or, for the newest row, up to ``t``.
  That weight does not change with age, so nothing is rescaled: a row enters the sums once its
  successor has arrived, and the newest row (the tail) is added at read time with weight
  ``t - ts``. (A weight decaying with age, ``exp(-(t - ts)/tau)``, would be kept exact the usual
  way, with sums in units of ``exp(ts/tau)`` rescaled by ``exp(-t/tau)`` at read time; the
  project's estimator has no such weighting.)
- Rounding: sums that rows enter and leave drift from a fresh sum by the rounding of each add and
  subtract. Each chunk of rows (those taken in by one read) also keeps its own sums, and each time
  as many rows have left as are in the window the total is re-summed from the chunks' sums
  (O(chunks x sizes); only the one chunk rows have left from is walked again, so no stall
  however long the window), which keeps the
  mean cost within about 1e-14 relative of the batch result (``tests/unit/test_estimator.py``
  compares mean, share past depth and fit to 1e-12; the standard deviation, a difference of
  moments that the batch itself gets only to about 2e-12, to 1e-11). The past-depth share under
  time weighting is summed in exact integer nanoseconds.
- ``RollingWindow``'s ``max_rows`` thinning has no counterpart: it bounded the once-per-decision
  re-walk, which no longer exists (each row costs O(levels) once), so every row counts. The
  equivalence holds with the unthinned window.

Rows are pushed as they arrive (``push``: O(1), the batch is only queued) and walked in one
vectorised step when a curve is next read, so a burst of single-row books costs a few numpy calls
per decision, not per book. ``settle`` does that walk earlier, once enough rows wait: live, the
rows come in between decisions, and a decision then walks only the last few (the work leaves the
path from a book's receipt to the child). The chunks differ, so the sums differ from a read-only
run by their rounding (about 1e-16 relative). Several parents on one symbol and side (same
sizes, policy, window and weighting) can share one instance, reading at their own times as long
as the times of the reads never go backwards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.impact.book_walk import (
    CostCurve,
    CurveAccumulator,
    DepthPolicy,
    Side,
    WalkedRows,
    side_arrays,
)
from feeds.model import BookBatch

__all__ = ["CurveBank", "CurveView", "IncrementalCurve", "SharedCurves", "Weighting"]

Weighting = Literal["time", "snapshot"]
_NS = 1e9
_NS_INT = 1_000_000_000
# Rows of a window up to which each chunk keeps its walk (``IncrementalCurve._walked``): about
# 60 MB a curve; past it rows are walked again when they leave.
_KEEP_WALK_ROWS = 100_000
_Walk = tuple[WalkedRows, int]  # a walk and the chunk row that is its row 0
# About the most chunks ``settle`` makes of a window: each keeps its own sums (a few KB) and a
# rebuild merges them all (~2 us each), so 4096 chunks cost ~16 MB and ~8 ms per window turnover.
_MAX_CHUNKS = 4096


@dataclass(slots=True)
class _Chunk:
    """Walked-side rows taken into the window in one step (views into the pushed batches)."""

    ts: NDArray[np.int64]  # (n,)
    px: NDArray[np.float64]  # (n, L)
    sz: NDArray[np.float64]  # (n, L)
    mid: NDArray[np.float64]  # (n,)
    w_ns: NDArray[np.int64]  # (n,) time weights in ns; the tail's is set by its successor
    lo: int = 0  # rows [0, lo) have left the window
    added: int = 0  # rows [0, added) are in the sums
    acc: CurveAccumulator | None = None  # this chunk's rows now in the sums (for a rebuild)
    last: CurveAccumulator | None = None  # what the last row (a tail) added, taken out as is
    walk: WalkedRows | None = None  # the rows walked once, summed in and out from it


class IncrementalCurve:
    """Rolling-window cost curve kept up to date row by row.

    Args:
        side: ``"buy"`` walks the asks, ``"sell"`` the bids.
        sizes: Size grid in shares, shape (G,), > 0, strictly increasing.
        policy: Beyond-depth policy.
        window_ns: Window length in ns of event time, > 0: a read at ``t`` sees the rows with
            ``t - window_ns < ts_event_ns <= t``.
        weighting: ``"time"`` (each row weighs how long it was in force, ``time_weights``) or
            ``"snapshot"`` (each row weighs 1).
    """

    def __init__(
        self,
        side: Side,
        sizes: ArrayLike,
        policy: DepthPolicy,
        window_ns: int,
        weighting: Weighting = "time",
    ) -> None:
        if weighting not in ("time", "snapshot"):
            raise ValueError(f"weighting must be 'time' or 'snapshot', got {weighting!r}")
        if int(window_ns) <= 0:
            raise ValueError(f"window_ns must be > 0, got {window_ns}")
        self._acc = CurveAccumulator(sizes, side, policy)
        self._proto = self._acc.empty_like()  # a checked grid: new accumulators are made from it
        self.side: Side = side
        self.sizes = self._acc.sizes
        self.policy = policy
        self.window_ns = int(window_ns)
        self.weighting: Weighting = weighting
        self._pending: deque[BookBatch] = deque()
        self._pending_rows = 0
        self._settled_ns = -(2**63)  # rows up to here are walked in (``settle``)
        self._chunks: deque[_Chunk] = deque()
        self._last_push_ns: int | None = None
        self._last_read_ns: int | None = None
        self._left_since_rebuild = 0
        self._n_rows = 0
        self.n_rebuilds = 0
        # Time weighting: the past-depth share in exact integer ns (a float sum that rows enter
        # and leave keeps a residue much larger than a small share itself).
        self._beyond_ns = np.zeros(self.sizes.size + 1, dtype=np.int64)
        self._weight_ns = 0
        self._tail_part = self._proto.empty_like()  # the newest row, weight 1
        self._tail_bin = -1
        self._cached: tuple[int, CostCurve] | None = None  # the last read, until a push

    # -- input --------------------------------------------------------------------------------
    def push(self, batch: BookBatch) -> None:
        """Queue newer rows (event times non-decreasing, never before the last row pushed)."""
        if not len(batch):
            return
        ts = batch.ts_event_ns
        first = int(ts[0])
        if self._last_push_ns is not None and first < self._last_push_ns:
            raise ValueError(
                f"rows must arrive in event-time order: {first} after {self._last_push_ns}"
            )
        self._pending.append(batch)
        self._pending_rows += len(batch)
        self._last_push_ns = int(ts[-1])
        self._cached = None

    def settle(self, t_ns: int, min_rows: int = 64) -> bool:
        """Walk the queued rows up to ``t_ns`` into the window now, if at least ``min_rows``
        (and ``1 / _MAX_CHUNKS`` of the window's rows: chunks stay few) wait; return True if it
        did.

        The work a read at ``t_ns`` would do, done before it: the read at ``t_ns`` or later
        that follows finds the rows walked. A read earlier than ``t_ns`` (a parent added late,
        deciding an instant whose books are already in) is read at ``t_ns``: those books cannot
        be taken out again, and they were known when it decides.
        """
        t = int(t_ns)
        if self._pending_rows < max(min_rows, self._n_rows // _MAX_CHUNKS):
            return False
        if self._last_read_ns is not None and t < self._last_read_ns:
            # A decision ahead of its period read the window at the period's start; books from
            # before that instant still come in. They are walked in as of that read: the window
            # already left its old rows behind there.
            t = self._last_read_ns
        self._settled_ns = max(self._settled_ns, t)
        self._cached = None
        self._absorb(t)
        self._evict(t - self.window_ns)
        if self._left_since_rebuild and self._left_since_rebuild >= self.n_rows:
            self._rebuild()
        return True

    # -- output -------------------------------------------------------------------------------
    def curve(self, t_ns: int) -> CostCurve:
        """Return the window's curve at ``t_ns`` (reads must not go back in time; a read before
        the last ``settle`` is read at the settle's time)."""
        t = max(int(t_ns), self._settled_ns)
        if self._last_read_ns is not None and t < self._last_read_ns:
            raise ValueError(f"curve read at {t} after a read at {self._last_read_ns}")
        if self._cached is not None and self._cached[0] == t:
            return self._cached[1]  # parents deciding at one instant: one read
        self._last_read_ns = t
        self._absorb(t)
        self._evict(t - self.window_ns)
        if self._left_since_rebuild and self._left_since_rebuild >= self.n_rows:
            self._rebuild()
        acc = self._acc
        beyond_ns, weight_ns = self._beyond_ns, self._weight_ns
        if self._has_tail():  # the newest row weighs t - ts under time weighting
            c = self._chunks[-1]
            w_ns = max(t - int(c.ts[-1]), 0)
            acc = acc.copy()
            acc.merge(self._tail_part.scaled(w_ns / _NS_INT))
            if self._tail_bin >= 0:
                beyond_ns = beyond_ns.copy()
                beyond_ns[self._tail_bin] += w_ns
                weight_ns += w_ns
        out = acc.result()
        if self.weighting == "time" and weight_ns > 0:
            frac = np.cumsum(beyond_ns[:-1]).astype(np.float64) / float(weight_ns)
            out = replace(out, frac_beyond_depth=frac)
        self._cached = (t, out)
        return out

    @property
    def n_rows(self) -> int:
        """Rows in the window at the last read, dropped ones included (``len(view(t))``)."""
        return self._n_rows

    # -- internals ----------------------------------------------------------------------------
    def _has_tail(self) -> bool:
        """Return True when the newest row is in the window but not in the sums."""
        if not self._chunks:
            return False
        c = self._chunks[-1]
        n = len(c.ts)
        return c.added < n and c.lo < n

    def _walked(self, c: _Chunk, a: int, b: int) -> _Walk:
        """Return rows ``a:b`` of chunk ``c`` walked on the grid, and the chunk row that is the
        walk's row 0.

        A small window keeps each chunk's walk (the rows are summed in and out from it); past
        ``_KEEP_WALK_ROWS`` rows a chunk's rows are walked again when they are summed (a walk
        is ~1 us a row compiled; kept, it is ~0.6 KB a row: 0.9 GB a side for a 600 s window
        at 2.5k books/s). A row's walk does not depend on the others walked with it, so the sums
        are the same bits either way.
        """
        if c.walk is not None:
            return c.walk, 0
        if self._n_rows <= _KEEP_WALK_ROWS:
            c.walk = self._acc.walk(c.px, c.sz, c.mid)
            return c.walk, 0
        return self._acc.walk(c.px[a:b], c.sz[a:b], c.mid[a:b]), a

    def _part(
        self,
        c: _Chunk,
        a: int,
        b: int,
        w_ns: NDArray[np.int64] | None = None,
        walked: _Walk | None = None,
    ) -> CurveAccumulator:
        """Sum rows ``a:b`` of chunk ``c`` into a fresh accumulator with their weights (ns, the
        chunk's own unless given; 1 each by snapshot)."""
        part = self._proto.empty_like()
        w = c.w_ns[a:b] if w_ns is None else w_ns
        wr, off = self._walked(c, a, b) if walked is None else walked
        if self.weighting == "time":
            part.add_walked(wr, a - off, b - off, w.astype(np.float64) / _NS)
        else:
            part.add_walked(wr, a - off, b - off, np.ones(b - a))
        return part

    def _beyond_of(
        self, c: _Chunk, a: int, b: int, walked: _Walk | None = None
    ) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """Return the first size past the visible depth of the kept rows of ``a:b`` and which
        rows were kept (the walk's, so the bins are the curve's)."""
        wr, off = self._walked(c, a, b) if walked is None else walked
        a, b = a - off, b - off
        return wr.jdx[wr.keep_at[a] : wr.keep_at[b]], wr.keep[a:b]

    def _add(self, c: _Chunk, a: int, b: int, sign: float) -> None:
        """Add (sign +1) or take out (sign -1) rows ``a:b`` of chunk ``c``."""
        if b <= a:
            return
        walked = self._walked(c, a, b)
        part = self._part(c, a, b, walked=walked)
        self._acc.merge(part, sign)
        self._chunk_acc(c).merge(part, sign)
        if self.weighting == "time":
            jdx, ok = self._beyond_of(c, a, b, walked)
            w_ok = c.w_ns[a:b][ok] if sign > 0 else -c.w_ns[a:b][ok]
            np.add.at(self._beyond_ns, jdx, w_ok)
            self._weight_ns += int(w_ok.sum())

    def _chunk_acc(self, c: _Chunk) -> CurveAccumulator:
        if c.acc is None:
            c.acc = self._proto.empty_like()
        return c.acc

    def _absorb(self, t: int) -> None:
        """Walk the queued rows with ``ts <= t`` into the window, as one chunk."""
        ready: list[BookBatch] = []
        pending = self._pending
        while pending:
            batch = pending[0]
            ts = batch.ts_event_ns
            if int(ts[-1]) <= t:  # the usual case: the whole batch (often one row) is due
                pending.popleft()
                ready.append(batch)
                self._pending_rows -= len(ts)
                continue
            k = int(np.searchsorted(ts, t, side="right"))
            if k:
                pending[0] = batch.slice(k, len(ts))
                ready.append(batch.slice(0, k))
                self._pending_rows -= k
            break
        if ready:
            self._take(ready)

    def _take(self, batches: list[BookBatch]) -> None:
        if len(batches) == 1:
            px, sz, mid = side_arrays(batches[0], self.side)
            ts = batches[0].ts_event_ns
        else:  # one concatenation of the walked side only, and one mid for all rows
            buy = self.side == "buy"
            px = np.concatenate([b.ask_px if buy else b.bid_px for b in batches])
            sz = np.concatenate([b.ask_sz if buy else b.bid_sz for b in batches])
            bid0 = np.concatenate([b.bid_px[:, 0] for b in batches])
            ask0 = np.concatenate([b.ask_px[:, 0] for b in batches])
            mid = 0.5 * (bid0 + ask0)  # BookBatch.mid, row by row
            ts = np.concatenate([b.ts_event_ns for b in batches])
        n = len(ts)
        self._n_rows += n
        w = np.zeros(n, dtype=np.int64)  # unused under snapshot weighting: every row weighs 1
        if self.weighting == "snapshot":
            c = _Chunk(ts, px, sz, mid, w, added=n)
            self._add(c, 0, n, 1.0)
            self._chunks.append(c)
            return
        w[:-1] = np.diff(ts)
        w[-1] = -1  # the new tail: set when its successor arrives
        c = _Chunk(ts, px, sz, mid, w, added=n - 1)
        prev = self._chunks[-1] if self._chunks else None
        m = len(prev.ts) if prev is not None else 0
        if prev is not None and prev.added < m:  # the previous tail now has its successor
            w_prev = int(ts[0]) - int(prev.ts[m - 1])
            prev.w_ns[m - 1] = w_prev
            prev.added = m
            if prev.lo < m:  # still in the window: its walk at weight 1, scaled (no re-walk)
                part = self._tail_part.scaled(w_prev / _NS_INT)
                self._acc.merge(part)
                self._chunk_acc(prev).merge(part)
                prev.last = part
                if self._tail_bin >= 0:
                    self._beyond_ns[self._tail_bin] += w_prev
                    self._weight_ns += w_prev
        self._add(c, 0, n - 1, 1.0)
        self._chunks.append(c)
        self._new_tail(c)

    def _new_tail(self, c: _Chunk) -> None:
        """Walk the newest row once, at weight 1; each read scales it by its age."""
        i = len(c.ts) - 1
        walked = self._walked(c, i, i + 1)
        self._tail_part = self._part(c, i, i + 1, np.array([_NS_INT]), walked)
        jdx, ok = self._beyond_of(c, i, i + 1, walked)
        self._tail_bin = int(jdx[0]) if ok[0] else -1

    def _evict(self, lo_ns: int) -> None:
        """Take the rows with ``ts <= lo_ns`` out of the window."""
        while self._chunks:
            c = self._chunks[0]
            n = len(c.ts)
            k = int(np.searchsorted(c.ts, lo_ns, side="right"))
            if k > c.lo:
                b = min(k, c.added)
                if c.last is not None and b == n:  # the scaled tail leaves as it came
                    self._add(c, c.lo, n - 1, -1.0)
                    self._take_out_last(c, c.last)
                else:
                    self._add(c, c.lo, b, -1.0)
                self._left_since_rebuild += k - c.lo
                self._n_rows -= k - c.lo
                c.lo = k
            if c.lo < n:
                return
            if len(self._chunks) == 1 and c.added < n:
                return  # keep the (left) tail: its weight is set when its successor arrives
            self._chunks.popleft()

    def _refresh(self, c: _Chunk) -> None:
        """Recompute a chunk's own sums from its rows still in the window (one chunk's walk)."""
        n = len(c.ts)
        stop = n - 1 if c.last is not None else c.added
        acc = self._proto.empty_like()
        if stop > c.lo:
            acc.merge(self._part(c, c.lo, stop))
        if c.last is not None:
            acc.merge(c.last)
        c.acc = acc

    def _take_out_last(self, c: _Chunk, last: CurveAccumulator) -> None:
        """Subtract a chunk's scaled tail ``last`` exactly as it was added (no residue)."""
        n = len(c.ts)
        self._acc.merge(last, -1.0)
        self._chunk_acc(c).merge(last, -1.0)
        jdx, ok = self._beyond_of(c, n - 1, n)
        if ok[0]:
            w = int(c.w_ns[n - 1])
            self._beyond_ns[jdx[0]] -= w
            self._weight_ns -= w
        c.last = None

    def _rebuild(self) -> None:
        """Re-sum the window from its chunks' own sums (bounds the rounding drift).

        A chunk's sums saw only its own rows leave, so their residue is of the size of that
        chunk, not of everything that went through the window; summing them is O(chunks x
        sizes), with no row walked again (no stall however long the window). The integer
        time sums are exact and need none of this.
        """
        self._acc = self._proto.empty_like()
        for c in self._chunks:
            if c.lo and c.lo < len(c.ts):  # the one chunk rows left from: walk what is left
                self._refresh(c)
            if c.acc is not None:
                self._acc.merge(c.acc)
        self._left_since_rebuild = 0
        self.n_rebuilds += 1


# What makes two estimates the same: symbol, side, size grid (bytes), policy, window, weighting.
_CurveKey = tuple[str, Side, bytes, DepthPolicy, int, Weighting]


class CurveBank:
    """The incremental curves of every parent, one per distinct estimate, fed once per book.

    Parents on one symbol and side with the same size grid, policy, window and weighting get the
    same ``IncrementalCurve``, so a book is walked once per distinct estimate, not per parent.
    """

    def __init__(self) -> None:
        self._curves: dict[_CurveKey, IncrementalCurve] = {}
        self._by_symbol: dict[str, list[IncrementalCurve]] = {}

    def curve_for(
        self,
        symbol: str,
        side: Side,
        sizes: ArrayLike,
        policy: DepthPolicy,
        window_ns: int,
        weighting: Weighting = "time",
    ) -> IncrementalCurve:
        """Return the shared curve for this estimate, made on first use.

        A curve made after books were pushed starts empty: register parents before their
        symbol's books arrive, or accept a window that fills from now on.
        """
        x = np.asarray(sizes, dtype=np.float64)
        key = (symbol, side, x.tobytes(), policy, int(window_ns), weighting)
        c = self._curves.get(key)
        if c is None:
            c = IncrementalCurve(side, x, policy, window_ns, weighting)
            self._curves[key] = c
            self._by_symbol.setdefault(symbol, []).append(c)
        return c

    def push(self, batch: BookBatch) -> None:
        """Queue a batch of the symbol's books on every curve of that symbol (O(1) each)."""
        for c in self._by_symbol.get(batch.symbol, ()):
            c.push(batch)

    def __len__(self) -> int:
        return len(self._curves)


class CurveView:
    """One parent's size grid read from a curve kept on a grid that contains it.

    The curve's value at a size is summed from the coefficient changes of the kinks below that
    size, whatever other sizes the grid holds, so the view's numbers are those of a curve on its
    own grid (to the rounding of the cumulative sums, about 1e-16 relative). Made by
    ``SharedCurves.view``.
    """

    def __init__(self, source: SharedCurves, sizes: ArrayLike) -> None:
        self.source = source
        self.sizes = np.asarray(sizes, dtype=np.float64)
        self._curve: IncrementalCurve | None = None
        self._idx: NDArray[np.intp] | None = None

    def _bind(self, curve: IncrementalCurve) -> None:
        self._curve = curve
        idx = np.searchsorted(curve.sizes, self.sizes)
        same = idx.size == curve.sizes.size
        self._idx = None if same else idx

    def _get(self) -> IncrementalCurve:
        if self._curve is None:
            self.source.build()
        assert self._curve is not None
        return self._curve

    def push(self, batch: BookBatch) -> None:
        """Queue newer rows on the shared curve (every view of it sees them)."""
        self.source.push(batch)

    def curve(self, t_ns: int) -> CostCurve:
        """Return the window's curve at ``t_ns`` on this view's sizes."""
        c = self._get().curve(t_ns)
        idx = self._idx
        if idx is None:
            return c
        return CostCurve(
            self.sizes,
            c.mean_cost[idx],
            c.std_cost[idx],
            c.n_snapshots,
            c.frac_beyond_depth[idx],
            c.policy,
            c.side,
            c.n_dropped,
        )

    @property
    def n_rows(self) -> int:
        """Rows in the window at the last read (``IncrementalCurve.n_rows``)."""
        return self._get().n_rows


class SharedCurves:
    """The window curves of every parent on one symbol and side, walked once per book.

    Parents differ in their size grids (the grid is sized to each order); the walk of a book
    does not depend on the grid, only its binning does, and binning onto the union of the grids
    serves each of them exactly (``CurveView``). The union is fixed when the first book arrives
    (or at the first read): a view asked for later whose sizes are not in it gets a curve of
    its own, which starts empty, as any estimator made after books were pushed.

    Args:
        side, policy, window_ns, weighting: As ``IncrementalCurve``'s.
    """

    def __init__(
        self, side: Side, policy: DepthPolicy, window_ns: int, weighting: Weighting = "time"
    ) -> None:
        self.side: Side = side
        self.policy = policy
        self.window_ns = int(window_ns)
        self.weighting: Weighting = weighting
        self._views: list[CurveView] = []
        self._curves: list[IncrementalCurve] = []

    def view(self, sizes: ArrayLike) -> CurveView:
        """Return a view of ``sizes`` (finite, > 0, strictly increasing)."""
        v = CurveView(self, CurveAccumulator(sizes, self.side, self.policy).sizes)
        self._views.append(v)
        if self._curves:
            for c in self._curves:
                if np.isin(v.sizes, c.sizes).all():
                    v._bind(c)
                    return v
            c = IncrementalCurve(self.side, v.sizes, self.policy, self.window_ns, self.weighting)
            self._curves.append(c)
            v._bind(c)
        return v

    def build(self) -> None:
        """Fix the union grid of the views asked for so far (idempotent)."""
        if self._curves:
            return
        sizes = [v.sizes for v in self._views]
        grid = np.unique(np.concatenate(sizes)) if sizes else np.ones(1)
        c = IncrementalCurve(self.side, grid, self.policy, self.window_ns, self.weighting)
        self._curves.append(c)
        for v in self._views:
            v._bind(c)

    def push(self, batch: BookBatch) -> None:
        """Queue newer rows on every curve (O(1) each)."""
        self.build()
        for c in self._curves:
            c.push(batch)

    def settle(self, t_ns: int, min_rows: int = 64) -> None:
        """``IncrementalCurve.settle`` on every curve."""
        for c in self._curves:
            c.settle(t_ns, min_rows)

    @property
    def curves(self) -> list[IncrementalCurve]:
        """Return the curves kept (one unless views were asked for after the first book)."""
        return list(self._curves)
