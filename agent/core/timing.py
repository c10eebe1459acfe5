"""Timing inside the period: send the period's child now, or wait for a cheaper book (pure).

Symbols (``docs/forecast.md``):
    x          the child's quantity, shares
    c_i(x)     per-share walk-the-book cost of x against book i, in bps of the mid
    Q_q(x)     the q-quantile of ``c(x)`` over the books of the day so far, each weighted by the
               time it was in force (what a waiting child would meet)
    T_end      the latest send time of the period (its end less a guard the caller sets)

Rule, at every book while the child waits: send when ``c_now(x) <= Q_q(x)`` (cheap against
the day so far), or when ``t >= T_end`` (forced), or while the day has shown less than
``min_history_ns`` of books (no basis to wait: send at once, which is the rule without timing).
One rule for every strategy, so TWAP with timing is a benchmark too.

The quantiles are kept online in O(G x bins) memory: a histogram of ``log10 c(x)`` per grid size
``x_g`` (``sizes``), updated from every observed book (one vectorised walk of the G sizes);
the threshold is the upper edge of the bin where the cumulative weight reaches q (2.3 % bins),
and ``Q_q(x)`` interpolates in ``log x`` between grid sizes (clamped at the ends). An optional
half-life forgets old books.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent.errors import InvariantViolation
from agent.impact.book_walk import DepthPolicy, Side, side_arrays, walk_cost
from feeds.model import BookBatch

__all__ = ["TimingDecision", "TimingRule"]

_CHUNK = 65_536  # rows walked at once
_LOG_LO, _LOG_HI, _N_BINS = -3.0, 4.0, 700  # log10 bps: 0.001 to 10,000 bps, 2.3 % bins


@dataclass(frozen=True, slots=True)
class TimingDecision:
    """Whether to send the child at this book.

    Attributes:
        send: True to send now.
        reason: ``"cheap"`` (cost at or below the threshold), ``"deadline"`` (the period's
            latest send time), ``"warmup"`` (too little history to judge: send),
            ``"no_book"`` (no usable book yet: send, the venue prices it), ``"wait"``.
        cost_bps: Per-share cost of the child against the book in force, bps of the mid.
        threshold_bps: ``Q_q(x)``, bps (NaN during warm-up).
        history_ns: Time covered by the books in the history, ns.
    """

    send: bool
    reason: str
    cost_bps: float
    threshold_bps: float
    history_ns: float


class TimingRule:
    """The online send-or-wait rule of one parent (see the module docstring).

    Args:
        side: ``"buy"`` or ``"sell"``.
        sizes: Grid of child sizes, shares, shape (G,), increasing (e.g. ``geomspace(lot,
            parent_qty, 12)``).
        quantile: ``q`` in (0, 1): lower waits longer for a cheaper book.
        min_history_ns: History (in force time) needed before the rule waits at all.
        half_life_ns: Forget books with this half-life (None: the whole day weighs the same).
        policy: Beyond-depth policy of the walk.
    """

    def __init__(
        self,
        side: Side,
        sizes: ArrayLike,
        *,
        quantile: float = 0.25,
        min_history_ns: int = 600 * 10**9,
        half_life_ns: int | None = None,
        policy: DepthPolicy = DepthPolicy(),  # noqa: B008 (frozen, immutable default)
    ) -> None:
        if not (0.0 < quantile < 1.0):
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        side_arrays(BookBatch.empty("check"), side)  # validates side
        self.side: Side = side
        self.sizes = np.asarray(sizes, dtype=np.float64)
        if self.sizes.ndim != 1 or self.sizes.size == 0 or np.any(np.diff(self.sizes) <= 0):
            raise ValueError("sizes must be a non-empty increasing 1-d array")
        self.quantile = float(quantile)
        self.min_history_ns = int(min_history_ns)
        self.half_life_ns = half_life_ns
        self.policy = policy
        self._hist = np.zeros((self.sizes.size, _N_BINS))
        self._w = 0.0  # total weight (ns, decayed)
        self._span = 0.0  # in force time covered, ns (not decayed)
        self._last_ts: int | None = None
        self._last_cost: NDArray[np.float64] | None = None  # (G,) bps of the book in force
        self._last_book: BookBatch | None = None
        self._last_seen: int | None = None
        self._unwalked: list[BookBatch] = []
        self._unwalked_rows = 0
        self._n_walked = 0  # books walked so far: names the book in force for the cache
        self._cached: tuple[int, float, float] | None = None  # (book number, qty, cost bps)

    def _cost_bps(self, book: BookBatch, sizes: NDArray[np.float64]) -> NDArray[np.float64]:
        px, sz, mid = side_arrays(book, self.side)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = walk_cost(px, sz, mid, sizes, self.policy, side=self.side)
            return c / sizes[None, :] / mid[:, None] * 1e4

    def costs_bps(self, batch: BookBatch, qty: float) -> NDArray[np.float64]:
        """Return the per-share cost of ``qty`` against every row of ``batch``, bps, shape (n,)."""
        return self._cost_bps(batch, np.array([float(qty)]))[:, 0]

    def observe(self, batch: BookBatch) -> None:
        """Take in newer books; they are walked (vectorised) at the next decision or every
        ``_CHUNK`` rows, so a live feed's one-book batches cost an append each.

        Raises:
            ValueError: If the batch starts before the newest book already seen.
        """
        n = len(batch)
        if n == 0:
            return
        first = int(batch.ts_event_ns[0])
        if self._last_seen is not None and first < self._last_seen:
            raise ValueError(f"books out of order: {first} after {self._last_seen}")
        self._last_seen = int(batch.ts_event_ns[-1])
        self._unwalked.append(batch)
        self._unwalked_rows += n
        if self._unwalked_rows >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        """Walk the books taken in since the last flush into the histograms."""
        if not self._unwalked:
            return
        batch = BookBatch.concat(self._unwalked)
        self._unwalked, self._unwalked_rows = [], 0
        n = len(batch)
        ts = np.asarray(batch.ts_event_ns, dtype=np.int64)
        cost = np.concatenate(  # (n, G), in chunks so the walk's temporaries stay small
            [self._cost_bps(batch.slice(lo, lo + _CHUNK), self.sizes) for lo in range(0, n, _CHUNK)]
        )
        if self._last_ts is not None and self._last_cost is not None:
            t_all = np.r_[np.int64(self._last_ts), ts]
            c_all = np.vstack([self._last_cost[None, :], cost])
        else:
            t_all, c_all = ts, cost
        w = np.diff(t_all).astype(np.float64)  # each book's time in force, to the next book
        self._add(c_all[:-1], w, int(t_all[-1]))
        self._last_ts = int(ts[-1])
        self._last_cost = cost[-1]
        self._last_book = batch.slice(n - 1, n)
        self._n_walked += n

    def _add(self, cost: NDArray[np.float64], w: NDArray[np.float64], t_end: int) -> None:
        if cost.shape[0] == 0:
            return
        if self.half_life_ns:
            total = float(w.sum())
            decay = 0.5 ** (total / self.half_life_ns)
            self._hist *= decay
            self._w *= decay
            # weight of each book decays with its age at t_end
            age = np.cumsum(w[::-1])[::-1] - w
            w = w * 0.5 ** (age / self.half_life_ns)
        with np.errstate(invalid="ignore", divide="ignore"):
            lc = np.log10(cost)
        ok = np.isfinite(lc)
        b = np.clip(
            ((lc - _LOG_LO) / (_LOG_HI - _LOG_LO) * _N_BINS).astype(np.int64), 0, _N_BINS - 1
        )
        G = self.sizes.size
        flat = (np.arange(G)[None, :] * _N_BINS + np.where(ok, b, 0)).ravel()
        ww = (w[:, None] * ok).ravel()
        self._hist += np.bincount(flat, weights=ww, minlength=G * _N_BINS).reshape(G, _N_BINS)
        self._w += float(w.sum())
        self._span += float(w.sum())

    def threshold_bps(self, qty: float) -> float:
        """Return ``Q_q(qty)`` in bps from the history (NaN when empty)."""
        self._flush()
        tot = self._hist.sum(axis=1)
        if not np.any(tot > 0):
            return math.nan
        cdf = np.cumsum(self._hist, axis=1) / np.where(tot > 0, tot, 1.0)[:, None]
        # the bin where the cdf reaches q, per grid size; its upper edge is the threshold, so a
        # book as cheap as the quantile's own bin counts as cheap
        j = np.minimum((cdf < self.quantile - 1e-12).sum(axis=1), _N_BINS - 1)
        q_log = _LOG_LO + (j + 1.0) / _N_BINS * (_LOG_HI - _LOG_LO)
        good = tot > 0
        lx = np.log(self.sizes[good])
        return float(10 ** np.interp(math.log(max(qty, 1e-12)), lx, q_log[good]))

    def decide(self, t_ns: int, qty: float, latest_send_ns: int) -> TimingDecision:
        """Decide, at time ``t``, whether to send a child of ``qty`` shares now.

        Args:
            t_ns: Now, ns; no book later than it may have been observed.
            qty: The child's quantity, shares, > 0.
            latest_send_ns: The period's latest send time (its end less the caller's guard).

        Raises:
            InvariantViolation: If a book later than ``t_ns`` was observed (look-ahead).
        """
        if self._last_seen is not None and self._last_seen > t_ns:
            raise InvariantViolation(
                f"timing decision at {t_ns} after observing a book at {self._last_seen}"
            )
        if not qty > 0:
            raise ValueError(f"qty must be > 0, got {qty}")
        self._flush()
        span = self._span + (t_ns - self._last_ts if self._last_ts is not None else 0)
        if self._last_book is None or self._last_ts is None:
            return TimingDecision(True, "no_book", math.nan, math.nan, 0.0)
        key = (self._n_walked, float(qty))
        if self._cached is not None and self._cached[:2] == key:
            cost = self._cached[2]  # same book, same child: no second walk
        else:
            cost = float(self._cost_bps(self._last_book, np.array([float(qty)]))[0, 0])
            self._cached = (*key, cost)
        if t_ns >= latest_send_ns:
            return TimingDecision(True, "deadline", cost, self.threshold_bps(qty), span)
        if span < self.min_history_ns:
            return TimingDecision(True, "warmup", cost, math.nan, span)
        thr = self.threshold_bps(qty)
        if not math.isfinite(cost):
            return TimingDecision(False, "wait", cost, thr, span)
        if not math.isfinite(thr) or cost <= thr:
            return TimingDecision(True, "cheap", cost, thr, span)
        return TimingDecision(False, "wait", cost, thr, span)
