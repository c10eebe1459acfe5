"""Per-book liquidity features and their time-weighted means by period (pure numpy).

Symbols (``docs/forecast.md``):
    h_i     half-spread of book i, ``(ask_px_0 - bid_px_0) / 2``, currency per share
    Q_i     visible depth of the side walked through its first ``K`` levels, shares
    e_i     mean distance from the best price of the shares in those levels, currency per share
    c_i     ``e_i / Q_i``: the depth slope, the chord of the per-share cost ``s(x) - s(0+)`` over
            ``x`` at ``x = Q_i``, the book's proxy of gamma (currency per share squared)
    z_i     ``(log h_i, log c_i)``: the two state variables of the forecast

A book is *in force* from its own timestamp to the next book's: its weight in a period is the
time it was in force inside that period. ``K = 5`` by default so that LOBSTER's 5-level files
and MBP-10's 10 levels give comparable figures.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent import accel
from feeds.model import BookBatch

__all__ = [
    "N_FEATURES",
    "FeatureMemo",
    "PeriodMeans",
    "Tail",
    "book_features",
    "credit_values",
    "trailing_mean",
]

N_FEATURES = 2  # log half-spread, log depth slope


def book_features(batch: BookBatch, side: str, levels: int = 5) -> NDArray[np.float64]:
    """Return ``z_i = (log h_i, log c_i)`` of every book, shape (n, 2); NaN where undefined.

    Args:
        batch: Snapshots.
        side: ``"buy"`` (asks are walked), ``"sell"`` (bids) or ``"both"`` (mean of the two
            sides' ``log c``).
        levels: ``K``, the levels of the side counted in the depth.

    A crossed, locked or one-sided book has no half-spread (NaN); a side with fewer than two
    filled levels has no slope (NaN).
    """
    if side not in ("buy", "sell", "both"):
        raise ValueError(f"side must be 'buy', 'sell' or 'both', got {side!r}")
    n = len(batch)
    out = np.full((n, N_FEATURES), np.nan)
    if n == 0:
        return out
    if _features_rows is not None and 0 < levels <= 7:
        return _features_compiled(batch, side, levels, out)
    with np.errstate(invalid="ignore", divide="ignore"):
        hs = 0.5 * (batch.ask_px[:, 0] - batch.bid_px[:, 0])
        out[:, 0] = np.where(hs > 0, np.log(np.where(hs > 0, hs, 1.0)), np.nan)
        sides = ("buy", "sell") if side == "both" else (side,)
        logs = [_log_slope(batch, s, levels) for s in sides]
        out[:, 1] = logs[0] if len(logs) == 1 else 0.5 * (logs[0] + logs[1])
    return out


def _features_rows_py(
    ask_px: NDArray[np.float64],
    ask_sz: NDArray[np.float64],
    bid_px: NDArray[np.float64],
    bid_sz: NDArray[np.float64],
    k: int,
    want_buy: bool,
    want_sell: bool,
    hs_arg: NDArray[np.float64],
    c_arg: NDArray[np.float64],
    good: NDArray[np.bool_],
) -> None:
    """``book_features`` up to the logs, row by row: ``hs_arg`` the half-spread (1 where not
    > 0, ``good[0]`` where it is), ``c_arg[s]`` the depth slope of the asks (s = 0) and the
    bids (s = 1) through ``k`` levels (1 where undefined, ``good[1 + s]`` where defined).

    ``_log_slope``'s operations in its order; its sums over at most 7 levels are sequential
    (numpy sums 8 or more pairwise), so these are its bits and numpy's log finishes them.
    """
    n = ask_px.shape[0]
    for i in range(n):
        hs = 0.5 * (ask_px[i, 0] - bid_px[i, 0])
        good[0, i] = hs > 0
        hs_arg[i] = hs if hs > 0 else 1.0
        for s in range(2):
            if (s == 0 and not want_buy) or (s == 1 and not want_sell):
                continue
            px = ask_px if s == 0 else bid_px
            sz = ask_sz if s == 0 else bid_sz
            sign = 1.0 if s == 0 else -1.0
            p0 = px[i, 0]
            q = 0.0
            num = 0.0
            for lev in range(k):
                p = px[i, lev]
                z = sz[i, lev]
                if math.isfinite(p) and z > 0:
                    q += z
                    num += z * (sign * (p - p0))
                else:
                    q += 0.0
                    num += 0.0 * 0.0
            qd = q if q > 0 else 1.0
            e = num / qd
            c = e / qd
            ok = q > 0 and e > 0 and math.isfinite(c)
            good[1 + s, i] = ok
            c_arg[s, i] = c if ok else 1.0


_features_rows = accel.compiled(
    _features_rows_py,
    "void(float64[:, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], int64, boolean,"
    " boolean, float64[::1], float64[:, ::1], boolean[:, ::1])",
)


def _features_compiled(
    batch: BookBatch, side: str, levels: int, out: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``book_features`` by the kernel ``_features_rows`` and numpy's log: the same bits."""
    n = len(batch)
    c = np.ascontiguousarray
    hs_arg, c_arg = np.empty(n), np.ones((2, n))  # a side not asked for stays 1
    good = np.zeros((3, n), dtype=np.bool_)
    assert _features_rows is not None
    k = min(int(levels), batch.ask_px.shape[1], batch.bid_px.shape[1])
    _features_rows(
        c(batch.ask_px),
        c(batch.ask_sz),
        c(batch.bid_px),
        c(batch.bid_sz),
        k,
        side in ("buy", "both"),
        side in ("sell", "both"),
        hs_arg,
        c_arg,
        good,
    )
    out[:, 0] = np.where(good[0], np.log(hs_arg), np.nan)
    logs = np.where(good[1:], np.log(c_arg), np.nan)
    if side == "both":
        out[:, 1] = 0.5 * (logs[0] + logs[1])
    else:
        out[:, 1] = logs[0 if side == "buy" else 1]
    return out


class FeatureMemo:
    """The books' features and their running means, computed once for every parent on a symbol.

    The parents on a symbol observe the same batch objects (``SymbolSession``). ``of(batch)``
    gives a batch's ``book_features``, known by identity (the memo holds the batch, so its id is
    not reused while kept; one not kept any more is computed again); the features are row by
    row, so the values are those of one call on the concatenation. The session also ``push``es
    every batch, in order: they go into one ``Tail`` that every forecast of the side reads its
    trailing means from, instead of keeping a copy of its own.

    Args:
        side, levels: As ``book_features``'s.
        keep: Batches kept (the oldest goes first).
    """

    def __init__(self, side: str, levels: int = 5, keep: int = 512) -> None:
        book_features(BookBatch.empty("check"), side, levels)  # validates side early
        self.side = side
        self.levels = int(levels)
        self.keep = int(keep)
        self._memo: OrderedDict[int, tuple[BookBatch, NDArray[np.float64]]] = OrderedDict()
        self._inner: OrderedDict[int, _Inner] = OrderedDict()  # see ``_inner_of``
        self.n_computed = 0  # batches computed (the rest came from the memo)
        self._queue: list[BookBatch] = []
        self._queued_rows = 0  # rows in ``_queue`` (``settle`` asks at every segment)
        self._tail = Tail(N_FEATURES)
        self.keep_ns = 0  # the longest trailing window a reader needs (``need``)
        self.last_ns: int | None = None

    def _known(self, batch: BookBatch) -> NDArray[np.float64] | None:
        hit = self._memo.get(id(batch))
        return hit[1] if hit is not None and hit[0] is batch else None

    def of(self, batch: BookBatch) -> NDArray[np.float64]:
        """Return the features of ``batch``, shape (n, 2) (do not write into it).

        A batch still queued for the tail is computed together with the other queued batches
        not computed yet, in one call: a live feed's batches are a few rows each, and a call
        per batch cost more than its rows.
        """
        z = self._known(batch)
        if z is not None:
            return z
        todo = [b for b in self._queue if self._known(b) is None]
        if not any(b is batch for b in todo):
            todo = [batch]
        z_all = book_features(BookBatch.concat(todo), self.side, self.levels)
        self.n_computed += 1
        at = 0
        for b in todo:
            n = len(b)
            zb = z_all[at : at + n]
            at += n
            self._memo[id(b)] = (b, zb)
            if b is batch:
                z = zb
        while len(self._memo) > self.keep:
            self._memo.popitem(last=False)
        assert z is not None
        return z

    def _inner_of(self, batch: BookBatch) -> _Inner:
        """Return the batch's inner credits (the intervals between its own rows), computed
        once for every parent: the rows, and on demand their column sums and row-order sum."""
        hit = self._inner.get(id(batch))
        if hit is not None and hit.batch is batch:
            return hit
        ts = np.asarray(batch.ts_event_ns, dtype=np.int64)
        got = _Inner(batch, credit_values(np.diff(ts).astype(np.float64), self.of(batch)[:-1]))
        self._inner[id(batch)] = got
        while len(self._inner) > self.keep:
            self._inner.popitem(last=False)
        return got

    def credits(
        self, batch: BookBatch, last: tuple[int, NDArray[np.float64]] | None
    ) -> NDArray[np.float64]:
        """Return the ``credit_values`` of the intervals ``batch`` closes after the book ``last``
        (its time and features; None: the first book): ``PeriodMeans.add``'s ``vals``.

        A replay's segment is seen by every parent: the intervals inside it are computed once
        for all of them, the one after ``last`` here.
        """
        inner = self._inner_of(batch).rows
        if last is None:
            return inner
        ts0 = int(batch.ts_event_ns[0])
        edge = credit_values(np.array([float(ts0 - last[0])]), last[1][None, :])
        return np.concatenate((edge, inner))

    def credit_run(self, batch: BookBatch) -> NDArray[np.float64]:
        """Return the row-order sum of the batch's inner credits, shape (2k,) (do not write
        into it): what ``PeriodMeans.add`` credits the batch's period when only the interval
        before the batch crosses a period edge (``inner_run``), the bits of its own sum."""
        return self._inner_of(batch).run()

    def credit_total(
        self, batch: BookBatch, last: tuple[int, NDArray[np.float64]] | None
    ) -> NDArray[np.float64]:
        """Return the column sums of ``credits(batch, last)``, shape (2k,) (do not write into
        it): what the batch credits a period that holds all of it (``PeriodMeans.add``'s
        ``total``). The inner rows are summed once for every parent; a parent adds its own
        interval after ``last`` in plain floats (the same products as ``credit_values``).
        """
        inner = self._inner_of(batch).total()
        return _with_edge(inner, last, int(batch.ts_event_ns[0]))

    def need(self, window_ns: int) -> None:
        """Keep at least ``window_ns`` of books in the tail (a reader's longest window)."""
        self.keep_ns = max(self.keep_ns, int(window_ns))

    def push(self, batch: BookBatch) -> None:
        """Queue newer books for the tail (O(1); taken in at the next read)."""
        if len(batch):
            if self.last_ns is not None and int(batch.ts_event_ns[0]) < self.last_ns:
                raise ValueError("books must be pushed in event-time order")
            self.last_ns = int(batch.ts_event_ns[-1])
            self._queue.append(batch)
            self._queued_rows += len(batch)

    def settle(self, min_rows: int = 64) -> None:
        """Take the queued books into the tail now if at least ``min_rows`` wait (live: between
        decisions, so a decision's read finds them in)."""
        if self._queued_rows >= min_rows:
            self.tail  # noqa: B018  (the read takes them in)

    @property
    def tail(self) -> Tail:
        """Return the tail of every book pushed so far (trimmed to the longest window)."""
        if self._queue:
            q = self._queue
            ts = [np.asarray(b.ts_event_ns, dtype=np.int64) for b in q]
            zs = [self.of(b) for b in q]
            # One append of them all (the running sums are the same bits however rows come).
            if len(q) == 1:
                self._tail.append(ts[0], zs[0])
            else:
                self._tail.append(np.concatenate(ts), np.concatenate(zs))
            self._queue, self._queued_rows = [], 0
            assert self.last_ns is not None
            self._tail.trim(self.last_ns - self.keep_ns)
        return self._tail


class _Inner:
    """A batch's inner credits (``FeatureMemo._inner_of``) and the two sums of them that
    ``PeriodMeans.add`` credits, each computed once."""

    __slots__ = ("_run", "_total", "batch", "rows")

    def __init__(self, batch: BookBatch, rows: NDArray[np.float64]) -> None:
        self.batch = batch  # held, so its id is not reused while kept
        self.rows = rows
        self._total: NDArray[np.float64] | None = None
        self._run: NDArray[np.float64] | None = None

    def total(self) -> NDArray[np.float64]:
        """Column sums (numpy's ``sum``, as ``PeriodMeans.add`` sums a batch of one period)."""
        if self._total is None:
            self._total = self.rows.sum(axis=0)
        return self._total

    def run(self) -> NDArray[np.float64]:
        """Row-order sum (``_run_sum``, as ``PeriodMeans._credit_run`` sums a run)."""
        if self._run is None:
            self._run = _run_sum(self.rows)
        return self._run


def _run_sum(vals: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return the sum of ``vals``' rows in row order (one ``reduceat``; numpy's ``sum`` over
    rows pairs them up, so its last bits differ)."""
    return np.asarray(np.add.reduceat(vals, np.zeros(1, dtype=np.intp), axis=0)[0], np.float64)


def _with_edge(
    inner: NDArray[np.float64], last: tuple[int, NDArray[np.float64]] | None, t0: int
) -> NDArray[np.float64]:
    """Return ``inner`` (the column sums of a batch's inner credits) plus what the book
    ``last`` credits up to the batch's first time ``t0``: ``credit_values``' products in plain
    floats. One function for the shared and the own sums, so the two are the same bits."""
    if last is None:
        return inner
    return np.asarray(_credit_row(float(t0 - last[0]), last[1].tolist())) + inner


def _credit_row(w: float, zl: list[float]) -> list[float]:
    """``credit_values`` of one book in force ``w`` ns with features ``zl``, in plain floats:
    the same products, so the same bits (``_with_edge``, ``PeriodMeans._credit_span``)."""
    ww = [w if math.isfinite(v) else 0.0 for v in zl]
    return ww + [a * (v if math.isfinite(v) else 0.0) for a, v in zip(ww, zl, strict=True)]


def _log_slope(batch: BookBatch, side: str, levels: int) -> NDArray[np.float64]:
    if side == "buy":
        px, sz, sign = batch.ask_px[:, :levels], batch.ask_sz[:, :levels], 1.0
    else:
        px, sz, sign = batch.bid_px[:, :levels], batch.bid_sz[:, :levels], -1.0
    ok = np.isfinite(px) & (sz > 0)
    w = np.where(ok, sz, 0.0)
    q = w.sum(axis=1)
    dist = np.where(ok, sign * (px - px[:, :1]), 0.0)
    e = (w * dist).sum(axis=1) / np.where(q > 0, q, 1.0)
    c = e / np.where(q > 0, q, 1.0)
    good = (q > 0) & (e > 0) & np.isfinite(c)
    return np.where(good, np.log(np.where(good, c, 1.0)), np.nan)


def trailing_mean(
    ts: NDArray[np.int64], z: NDArray[np.float64], t_ns: int, window_ns: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return the time-weighted mean of ``z`` over ``(t - window, t]`` and the book in force at t.

    Args:
        ts: Book times, ns, shape (n,), non-decreasing.
        z: Features, shape (n, k).
        t_ns: Decision time; rows after it are ignored.
        window_ns: Window length; ``0`` gives the book in force.

    Returns:
        ``(mean, in_force)``, each shape (k,), NaN where no finite value is in the window.
    """
    k = z.shape[1]
    b = int(np.searchsorted(ts, t_ns, side="right"))
    if b == 0:
        nan = np.full(k, np.nan)
        return nan, nan.copy()
    in_force = z[b - 1].copy()
    if window_ns <= 0:
        return in_force.copy(), in_force
    lo = t_ns - window_ns
    a = max(int(np.searchsorted(ts, lo, side="right")) - 1, 0)
    starts = np.maximum(ts[a:b], lo).astype(np.float64)
    ends = np.r_[ts[a + 1 : b], t_ns].astype(np.float64)
    w = np.maximum(ends - starts, 0.0)
    zz = z[a:b]
    fin = np.isfinite(zz)
    ww = w[:, None] * fin
    tot = ww.sum(axis=0)
    s = (ww * np.where(fin, zz, 0.0)).sum(axis=0)
    mean = np.where(tot > 0, s / np.where(tot > 0, tot, 1.0), in_force)
    return mean, in_force


def credit_values(w: NDArray[np.float64], z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return what books credit a period: ``(w fin, w fin z)`` per book, shape (n, 2k), for
    books in force ``w`` ns with features ``z`` (``fin``: where z is finite)."""
    fin = np.isfinite(z)
    ww = w[:, None] * fin
    return np.concatenate([ww, ww * np.where(fin, z, 0.0)], axis=1)


@dataclass(frozen=True, slots=True)
class PeriodMean:
    """The time-weighted mean of the features over one finished period.

    Attributes:
        period: Period index ``(t - origin) // period_ns``.
        mean: Mean features, shape (k,), NaN where no finite value was in force.
        weight_ns: Time covered by a book with a finite value, ns, shape (k,).
    """

    period: int
    mean: NDArray[np.float64]
    weight_ns: NDArray[np.float64]


class PeriodMeans:
    """Accumulate time-weighted feature means per period, online, in O(rows) per batch.

    A period is *finished* once a book with a later period's timestamp has been seen: no later
    row can change it. ``add`` returns the periods it finished, in order. Interior periods of a
    gap longer than ``max_gap_periods`` get no weight (an overnight book in force says nothing).

    Args:
        period_ns: Period length, ns, > 0.
        origin_ns: Start of period 0, ns.
        n_features: ``k``.
        max_gap_periods: Longest run of whole periods one book is credited with.
    """

    def __init__(
        self,
        period_ns: int,
        origin_ns: int = 0,
        n_features: int = N_FEATURES,
        max_gap_periods: int = 4,
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = int(period_ns)
        self.origin_ns = int(origin_ns)
        self.k = int(n_features)
        self.max_gap_periods = int(max_gap_periods)
        self._sums: dict[int, NDArray[np.float64]] = {}  # period -> (W_0..W_k-1, S_0..S_k-1)
        self._last_ts: int | None = None
        self._last_z: NDArray[np.float64] | None = None

    @property
    def last_ts(self) -> int | None:
        """Timestamp of the newest book seen, ns (None before the first)."""
        return self._last_ts

    @property
    def last_book(self) -> tuple[int, NDArray[np.float64]] | None:
        """Return the newest book's time and features (None before the first)."""
        if self._last_ts is None or self._last_z is None:
            return None
        return self._last_ts, self._last_z

    def period_of(self, t_ns: int) -> int:
        """Return the period index of a time."""
        return (int(t_ns) - self.origin_ns) // self.period_ns

    def add(
        self,
        ts: NDArray[np.int64],
        z: NDArray[np.float64],
        vals: NDArray[np.float64] | Callable[[], NDArray[np.float64]] | None = None,
        total: NDArray[np.float64] | None = None,
        inner_run: Callable[[], NDArray[np.float64]] | None = None,
    ) -> list[PeriodMean]:
        """Add books (non-decreasing times, after every earlier one); return finished periods.

        ``vals``: the ``credit_values`` of the books in force over the intervals these books
        close (the last book seen before them, then all but the newest), when the caller has
        them already (``FeatureMemo.credits``, shared by the parents; or a function that
        returns them, called only if needed): the same sums. ``total``: their column sums
        (``FeatureMemo.credit_total``), credited as they are when every interval lies in one
        period (the usual batch: no per-row work; the sums to their rounding, ~1e-16).
        ``inner_run``: a function returning the row-order sum of ``vals``' rows after the
        first (``FeatureMemo.credit_run``): credited as it is when the interval before these
        books is the only one across a period edge (a parent's first batch of a period), the
        bits of the run's own sum, so ``vals`` is not needed.
        """
        n = int(ts.shape[0])
        if n == 0:
            return []
        if self._last_ts is not None and int(ts[0]) < self._last_ts:
            raise ValueError(f"books out of order: {int(ts[0])} after {self._last_ts}")
        first = int(ts[0]) if self._last_ts is None else self._last_ts
        p_last = self.period_of(int(ts[-1]))
        if self.period_of(first) == p_last and (total is not None or vals is None):
            if total is None:  # as ``FeatureMemo.credit_total`` sums them: the same bits
                inner = credit_values(np.diff(ts).astype(np.float64), z[:-1]).sum(axis=0)
                total = _with_edge(inner, self.last_book, int(ts[0]))
            if n > 1 or self._last_ts is not None:  # some interval closed
                acc = self._sums.get(p_last)
                self._sums[p_last] = total.copy() if acc is None else acc + total
            return self._finish(p_last, z[-1], int(ts[-1]))
        last_z = self._last_z if self._last_ts is not None else None
        last = last_z is not None
        if inner_run is not None and last_z is not None and n > 1:
            p_0 = self.period_of(int(ts[0]))
            if p_0 == p_last and self.period_of(first) < p_0:
                # Only the interval from the last book to ts[0] crosses an edge: the run after
                # it is every inner interval (the loop below, its single run, in its order).
                acc = self._sums.get(p_0)
                run = inner_run()
                self._sums[p_0] = run.copy() if acc is None else acc + run
                self._credit_span(first, int(ts[0]), last_z)
                return self._finish(p_last, z[-1], int(ts[-1]))
        if callable(vals):
            vals = vals()
        t_all = np.concatenate((np.array([self._last_ts], dtype=np.int64), ts)) if last else ts
        if vals is None:
            z_all = np.concatenate((last_z[None, :], z)) if last_z is not None else z
            vals = credit_values(np.diff(t_all).astype(np.float64), z_all[:-1])
        m = t_all.shape[0] - 1  # intervals closed (vals' rows)
        p_a, p_b = self.period_of(int(t_all[0])), self.period_of(int(t_all[-1]))
        if p_a == p_b:  # the usual batch: no period edge inside it
            if m:
                self._credit_run(p_a, vals)
            return self._finish(p_b, z[-1], int(t_all[-1]))
        # The intervals across a period edge: t_j < edge <= t_j+1 (the times are sorted, so a
        # search per edge, not a period per row). The runs between them are credited first,
        # in order, then the crossings, as a period per row and one sum per run did.
        edges = self.origin_ns + np.arange(p_a + 1, p_b + 1, dtype=np.int64) * self.period_ns
        cross = np.unique(np.searchsorted(t_all, edges, side="left") - 1).tolist()
        start = 0
        for j in [*cross, m]:
            if j > start:
                self._credit_run(self.period_of(int(t_all[start])), vals[start:j])
            start = j + 1
        off = 1 if last else 0
        for j in cross:  # books in force across a boundary: one per period edge
            zj = last_z if j < off and last_z is not None else z[j - off]
            self._credit_span(int(t_all[j]), int(t_all[j + 1]), zj)
        return self._finish(p_b, z[-1], int(t_all[-1]))

    def _credit_run(self, per: int, vals: NDArray[np.float64]) -> None:
        """Credit period ``per`` with the sum of ``vals``' rows (in row order)."""
        row = _run_sum(vals)
        acc = self._sums.get(per)
        self._sums[per] = row if acc is None else acc + row

    def _credit_span(self, t0: int, t1: int, z: NDArray[np.float64]) -> None:
        """Credit one book in force from ``t0`` to ``t1`` across period edges: each period its
        part (whole periods of a gap up to ``max_gap_periods``).

        ``credit_values``' products in plain floats, one row a period (the parts are in
        distinct periods, so each is its own run): the bits of ``credit_values`` of the parts
        and a row sum per period, without numpy calls on rows of a few numbers."""
        pa, pb = self.period_of(t0), self.period_of(t1)
        edge = self.origin_ns + (pa + 1) * self.period_ns
        parts = [(pa, edge - t0)]
        if pb - pa - 1 <= self.max_gap_periods:
            parts += [(p, self.period_ns) for p in range(pa + 1, pb)]
        parts.append((pb, t1 - (self.origin_ns + pb * self.period_ns)))
        zl = z.tolist()
        for per, d in parts:
            row = np.array(_credit_row(float(d), zl))
            acc = self._sums.get(per)
            self._sums[per] = row if acc is None else acc + row

    def _finish(self, current: int, last_z: NDArray[np.float64], last_ts: int) -> list[PeriodMean]:
        self._last_ts = last_ts
        self._last_z = last_z.copy()
        done = sorted(p for p in self._sums if p < current)
        out = []
        for p in done:
            row = self._sums.pop(p)
            w, s = row[: self.k], row[self.k :]
            mean = np.where(w > 0, s / np.where(w > 0, w, 1.0), np.nan)
            out.append(PeriodMean(p, mean, w))
        return out


class Tail:
    """The newest rows of ``(ts, z)`` in one growable array pair (amortised O(rows) appends).

    ``trim(lo)`` drops rows older than ``lo`` but keeps the last row at or before it: that
    book is still in force at ``lo``. Running integrals of each row's value over the time it
    was in force (the finite values only; their durations in exact integer ns) make
    ``trailing_mean`` O(log rows) whatever the window: the mean of ``trailing_mean`` above, to
    the rounding of the running sums.
    """

    def __init__(self, k: int = N_FEATURES, capacity: int = 1024) -> None:
        self._ts = np.empty(capacity, dtype=np.int64)
        self._z = np.empty((capacity, k))
        # Integrals over the closed intervals of rows before i: value x ns, finite ns.
        self._cs = np.zeros((capacity, k))
        self._cw = np.zeros((capacity, k), dtype=np.int64)
        self._a = 0
        self._b = 0

    def __len__(self) -> int:
        return self._b - self._a

    def append(self, ts: NDArray[np.int64], z: NDArray[np.float64]) -> None:
        n = int(ts.shape[0])
        if n == 0:
            return
        if self._b + n > self._ts.shape[0]:
            keep = self._b - self._a
            cap = max(self._ts.shape[0], 2 * (keep + n))
            grown = []
            for arr in (self._ts, self._z, self._cs, self._cw):
                new = np.empty((cap, *arr.shape[1:]), dtype=arr.dtype)
                new[:keep] = arr[self._a : self._b]
                grown.append(new)
            self._ts, self._z, self._cs, self._cw = grown
            self._a, self._b = 0, keep
        b = self._b
        self._ts[b : b + n] = ts
        self._z[b : b + n] = z
        if b == 0:
            self._cs[0] = 0.0
            self._cw[0] = 0
        # Close the intervals of the rows b-1 .. b+n-2 (the previous last row's and the new).
        lo = max(b - 1, 0)
        if lo < b + n - 1:
            dt = np.diff(self._ts[lo : b + n])[:, None]
            zz = self._z[lo : b + n - 1]
            fin = np.isfinite(zz)
            w = np.where(fin, dt, 0)
            v = w * np.where(fin, zz, 0.0)
            # One running sum from the kept value on: the same bits however the rows come in.
            self._cs[lo + 1 : b + n] = np.cumsum(np.vstack([self._cs[lo : lo + 1], v]), axis=0)[1:]
            self._cw[lo + 1 : b + n] = self._cw[lo] + np.cumsum(w, axis=0)
        self._b += n

    def trim(self, lo_ns: int) -> None:
        i = int(np.searchsorted(self._ts[self._a : self._b], lo_ns, side="right")) - 1
        self._a += max(i, 0)

    def view(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Return the kept rows (views, valid until the next ``append``)."""
        return self._ts[self._a : self._b], self._z[self._a : self._b]

    def trailing_mean(
        self, t_ns: int, window_ns: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``trailing_mean(ts, z, t_ns, window_ns)`` of the kept rows, in O(log rows)."""
        k = self._z.shape[1]
        ts = self._ts[self._a : self._b]
        b = int(np.searchsorted(ts, t_ns, side="right"))
        if b == 0:
            nan = np.full(k, np.nan)
            return nan, nan.copy()
        off = self._a
        last = off + b - 1
        in_force = self._z[last].copy()
        if window_ns <= 0:
            return in_force.copy(), in_force
        lo = t_ns - window_ns
        a = off + max(int(np.searchsorted(ts, lo, side="right")) - 1, 0)
        z_a, z_l = self._z[a], self._z[last]
        fin_a, fin_l = np.isfinite(z_a), np.isfinite(z_l)
        # Rows a .. last-1 over their whole intervals, less row a's part before lo, plus the
        # row in force at t from its start (or lo) to t.
        cut = max(lo - int(self._ts[a]), 0) if a < last else 0
        end = t_ns - max(int(self._ts[last]), lo)
        tot = self._cw[last] - self._cw[a] - np.where(fin_a, cut, 0) + np.where(fin_l, end, 0)
        s = (
            (self._cs[last] - self._cs[a])
            - np.where(fin_a, cut * np.where(fin_a, z_a, 0.0), 0.0)
            + np.where(fin_l, end * np.where(fin_l, z_l, 0.0), 0.0)
        )
        mean = np.where(tot > 0, s / np.where(tot > 0, tot, 1), in_force)
        return mean, in_force
