"""Walk-the-book temporary impact cost of MBP-10 snapshots (pure numpy).

Symbols (as in ``docs/execution-math.md`` sections 1 and 4):
    x       order size in shares, x > 0
    C_i(x)  total cost of executing x shares against snapshot i, in currency, against the mid:
            buy  ``sum_l take_l * (ask_px_l - mid)``, sell ``sum_l take_l * (mid - bid_px_l)``,
            ``take_l = min(remaining, sz_l)``
    d_l     distance of level l from the mid, currency per share (``ask_px_l - mid`` for a
            buy, ``mid - bid_px_l`` for a sell)
    Q_l     cumulative visible depth through level l, shares; ``D = Q_{L-1}`` is the visible depth
    g(x)    the window mean of C_i(x): the nonparametric impact curve the solver consumes

Invariants and conventions:
- ``C_i`` is piecewise linear, continuous, with ``C_i(0) = 0`` and a kink at every ``Q_l``; when
  the levels are ordered (asks rising, bids falling) its slope ``d_l`` is non-decreasing, so
  ``C_i`` and the window mean are convex.
- A row whose mid is not finite (one side of the book empty) says nothing about the cost against
  the mid: it is dropped and counted in ``CostCurve.n_dropped``.
- An empty level (NaN price or size 0) contributes no shares. Levels behind an empty one are still
  walked (MBP-10 never produces such holes, but nothing breaks if it does).
- Past the visible depth ``D`` the book says nothing: what happens there is the explicit
  ``DepthPolicy`` (see ``BeyondDepth``), and ``frac_beyond_depth`` reports how often it was used.

The window mean is accumulated from the kinks (section 4 of the design note): every row's curve
is a polynomial of degree <= 2 on each of ``L + 1`` pieces, so its coefficient *changes* at the
kinks are binned onto the size grid and cumulated. The first and second moments of ``C_i(x)`` at
every grid size then cost O(rows x levels) without the (rows x sizes) matrix. ``walk_cost``
builds that matrix level by level and is the reference the accumulation is tested against.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent import accel
from agent.accel import pairwise_sum
from feeds.model import BookBatch

__all__ = [
    "BeyondDepth",
    "CostCurve",
    "CurveAccumulator",
    "DepthPolicy",
    "Side",
    "WalkedRows",
    "book_curve",
    "cost_curve",
    "side_arrays",
    "time_weights",
    "walk_cost",
]

Side = Literal["buy", "sell"]

# Rows processed per step of the accumulation: small enough that the (levels, rows) temporaries
# stay in cache and are recycled by the allocator (measured: 2x faster than 64k-row chunks).
_CHUNK_ROWS = 2048
_FEW_ROWS = 2  # rows a walk takes in plain floats (``CurveAccumulator._walk_few``)
_MAX_CELLS = 1 << 16  # cells of the bin table of a non-arithmetic grid, at most
_MAX_CHECKS = 6  # sizes checked after the table (more: a binary search instead)
# Accumulator columns (a, b, c, C**2 powers 0..4) that the visible, linear pieces change.
_VIS_COLS = np.array([0, 1, 3, 4, 5])


class BeyondDepth(StrEnum):
    """What the cost of the shares past the visible depth ``D`` of a snapshot is.

    With ``r = x - D > 0`` shares left after the last visible level (distance ``d_last`` from the
    mid, price ``p_last``):

    - ``EXTRAPOLATE``: the hidden book continues the snapshot's own price-depth line. The line
      passes through (mid-depth of level 0, ``d_0``) and (mid-depth of the last visible level,
      ``d_last``) with slope ``k = max(0, (d_last - d_0) / (D - s_last/2 - s_0/2))`` currency per
      share per share (``k = 0`` when only one level is visible). The extra cost is
      ``e*r + k*r**2/2`` with ``e = d_last + k*s_last/2``: quadratic in ``r``, convex.
    - ``PENALTY``: the remaining shares trade at the last visible price worsened by
      ``penalty_bps`` (buy ``p_last*(1 + bps/1e4)``, sell ``p_last*(1 - bps/1e4)``), so the extra
      cost is ``(d_last + p_last*bps/1e4)*r``. With 100 bps this is the specification's ``1.01``
      rule, with the sell side corrected (the prototype *adds* 1 % to a sell price).
    - ``REFUSE``: the cost is unknown: ``walk_cost`` returns NaN, and the curve's mean and std are
      NaN at every size that some snapshot of the window could not fill.
    """

    EXTRAPOLATE = "extrapolate"
    PENALTY = "penalty"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class DepthPolicy:
    """Beyond-depth policy (see ``BeyondDepth`` for the exact formulas).

    Attributes:
        kind: Which rule prices the shares past the visible depth.
        penalty_bps: Price penalty of ``PENALTY`` in basis points of the last visible price, >= 0.
    """

    kind: BeyondDepth = BeyondDepth.EXTRAPOLATE
    penalty_bps: float = 100.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", BeyondDepth(self.kind))
        if not (np.isfinite(self.penalty_bps) and self.penalty_bps >= 0):
            raise ValueError(f"penalty_bps must be finite and >= 0, got {self.penalty_bps}")

    def describe(self) -> str:
        """Return a one-line description for logs and reports."""
        if self.kind is BeyondDepth.PENALTY:
            return f"penalty: last visible price worsened by {self.penalty_bps:g} bps"
        if self.kind is BeyondDepth.EXTRAPOLATE:
            return "extrapolate: continue each snapshot's price-depth line past the last level"
        return "refuse: cost unknown (NaN) past the visible depth"


@dataclass(frozen=True, slots=True)
class CostCurve:
    """Window mean of the walk-the-book total cost against the mid, per order size.

    Attributes:
        sizes: Order sizes in shares, shape (G,), strictly increasing, > 0.
        mean_cost: Mean total cost ``g(x)`` in currency, shape (G,); NaN when the window is empty
            (or, under ``REFUSE``, at sizes some snapshot could not fill).
        std_cost: Population standard deviation (ddof=0) of the per-snapshot cost in currency,
            shape (G,); NaN where ``mean_cost`` is.
        n_snapshots: Snapshots used (rows with a finite mid).
        frac_beyond_depth: Share of the snapshots whose visible depth is < size, shape (G,);
            NaN for an empty window.
        policy: The beyond-depth policy that priced those shares.
        side: ``"buy"`` (walks the asks) or ``"sell"`` (walks the bids).
        n_dropped: Rows dropped because their mid was not finite.
    """

    sizes: NDArray[np.float64]
    mean_cost: NDArray[np.float64]
    std_cost: NDArray[np.float64]
    n_snapshots: int
    frac_beyond_depth: NDArray[np.float64]
    policy: DepthPolicy = field(default_factory=DepthPolicy)
    side: Side = "buy"
    n_dropped: int = 0

    @property
    def mean_slippage(self) -> NDArray[np.float64]:
        """Mean per-share slippage ``g(x)/x`` in currency per share, shape (G,)."""
        return self.mean_cost / self.sizes

    @property
    def policy_used(self) -> bool:
        """Return True when some snapshot needed the beyond-depth policy at some size."""
        return bool((self.frac_beyond_depth > 0).any())  # NaN compares False

    def segments(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return the curve as a piecewise-linear cost for the solver.

        The knots are ``0`` followed by the sizes where the mean cost is known; between knots the
        cost is linear. The mean of convex curves is convex, so the slopes are non-decreasing up
        to rounding; they are made exactly monotone with a running maximum (a change of the order
        of the rounding error).

        Returns:
            ``(knots, slopes)``: knots in shares, shape (K+1,), starting at 0; slopes in currency
            per share, shape (K,), slope ``j`` applying on ``(knots[j], knots[j+1]]``. Empty
            (shapes (1,) and (0,)) when nothing is known.
        """
        ok = np.isfinite(self.mean_cost)
        # Stop at the first unknown size: the cost past it is not defined.
        k = int(np.argmin(ok)) if not ok.all() else ok.size
        knots = np.concatenate([[0.0], self.sizes[:k]])
        cost = np.concatenate([[0.0], self.mean_cost[:k]])
        slopes = np.diff(cost) / np.diff(knots)
        return knots, np.maximum.accumulate(slopes) if slopes.size else slopes


def side_arrays(
    batch: BookBatch, side: Side
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return ``(px, sz, mid)`` of the book side a ``side`` order walks.

    Args:
        batch: Snapshots, n rows.
        side: ``"buy"`` walks the asks, ``"sell"`` the bids.

    Returns:
        Prices shape (n, L), sizes shape (n, L), mid prices shape (n,).
    """
    if side == "buy":
        return batch.ask_px, batch.ask_sz, batch.mid
    if side == "sell":
        return batch.bid_px, batch.bid_sz, batch.mid
    raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


def _check_sizes(sizes: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(sizes, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("sizes must be a non-empty 1-d array")
    if not np.all(np.isfinite(x)) or x[0] <= 0 or np.any(np.diff(x) <= 0):
        raise ValueError("sizes must be finite, > 0 and strictly increasing")
    return x


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Cleaned levels of the valid rows, level-major (L levels, m valid rows)."""

    d: NDArray[np.float64]  # distance from mid, ffilled over empty levels, (L, m)
    s: NDArray[np.float64]  # shares, 0 on empty levels, (L, m)
    q: NDArray[np.float64]  # cumulative depth Q_l, (L, m)
    c: NDArray[np.float64]  # cumulative cost to Q_l, (L, m)
    e: NDArray[np.float64]  # beyond-depth marginal cost just past D, (m,)
    k: NDArray[np.float64]  # beyond-depth marginal slope, (m,)
    n_dropped: int
    keep: NDArray[np.bool_]  # which input rows were kept, (n,)


def _prepare(
    px: NDArray[np.float64],
    sz: NDArray[np.float64],
    mid: NDArray[np.float64],
    policy: DepthPolicy,
    side: Side,
) -> _Prepared:
    px = np.asarray(px, dtype=np.float64)
    sz = np.asarray(sz, dtype=np.float64)
    mid = np.asarray(mid, dtype=np.float64)
    if px.ndim != 2 or px.shape != sz.shape or mid.shape != (px.shape[0],):
        raise ValueError(f"bad shapes: px {px.shape}, sz {sz.shape}, mid {mid.shape}")
    ok = np.isfinite(mid) & np.isfinite(px[:, 0])
    n_dropped = int(ok.size - np.count_nonzero(ok))
    if n_dropped:
        px, sz, mid = px[ok], sz[ok], mid[ok]
    # Level-major from here on: every per-level operation runs on a contiguous row vector.
    pxt = np.ascontiguousarray(px.T)
    n_lev, m = pxt.shape
    d = pxt - mid
    if side == "sell":
        np.negative(d, out=d)
    live = np.isfinite(pxt)
    live &= sz.T > 0  # NaN sizes compare False: treated as empty
    s = np.where(live, sz.T, 0.0)
    live[0] = True  # level 0 has a finite price on every kept row
    if live.all():
        last = np.full(m, n_lev - 1)
    else:
        # Forward-fill the distance over empty levels so that they change no slope.
        src = np.maximum.accumulate(np.where(live, np.arange(n_lev)[:, None], 0), axis=0)
        d = np.take_along_axis(d, src, axis=0)
        last = src[-1]
    q = np.cumsum(s, axis=0)
    c = np.cumsum(s * d, axis=0)
    cols = np.arange(m)
    d_last = d[-1]
    s_last = s[last, cols]
    if policy.kind is BeyondDepth.EXTRAPOLATE:
        span = q[-1] - 0.5 * s_last - 0.5 * s[0]
        pos_span = span > 0
        k = (d_last - d[0]) / np.where(pos_span, span, 1.0)
        k[~(pos_span & np.isfinite(k))] = 0.0  # no span, or not finite: no slope
        np.maximum(k, 0.0, out=k)
        e = d_last + 0.5 * k * s_last
    elif policy.kind is BeyondDepth.PENALTY:
        k = np.zeros(m)
        e = d_last + np.abs(pxt[last, cols]) * (policy.penalty_bps * 1e-4)
    else:  # REFUSE: any finite continuation; the caller masks it.
        k = np.zeros(m)
        e = d_last.copy()
    return _Prepared(d, s, q, c, e, k, n_dropped, ok)


def walk_cost(
    px: ArrayLike,
    sz: ArrayLike,
    mid: ArrayLike,
    sizes: ArrayLike,
    policy: DepthPolicy = DepthPolicy(),
    *,
    side: Side = "buy",
) -> NDArray[np.float64]:
    """Return the total walk-the-book cost of every row at every size.

    Vectorised over rows and sizes with one pass per level: ``C(x) = sum_l d_l *
    clip(x - Q_{l-1}, 0, s_l)`` plus the beyond-depth term. Memory is O(n x G); use
    ``cost_curve`` for the window mean of long windows.

    Args:
        px: Prices of the side walked (asks for a buy, bids for a sell), shape (n, L), NaN where
            empty.
        sz: Sizes in shares, shape (n, L), 0 where empty.
        mid: Mid prices, shape (n,).
        sizes: Order sizes in shares, shape (G,), > 0, increasing.
        policy: Beyond-depth policy.
        side: ``"buy"`` (cost ``px - mid`` per share) or ``"sell"`` (``mid - px``).

    Returns:
        Cost in currency against the mid, shape (n, G). Rows with a non-finite mid are NaN;
        under ``REFUSE`` so is every size past the row's visible depth.
    """
    x = _check_sizes(sizes)
    px = np.asarray(px, dtype=np.float64)
    mid = np.asarray(mid, dtype=np.float64)
    p = _prepare(px, np.asarray(sz, dtype=np.float64), mid, policy, side)
    n_lev, m = p.d.shape
    out = np.zeros((m, x.size))
    q_prev = np.zeros((m, 1))
    buf = np.empty((m, x.size))
    for lev in range(n_lev):  # loop over the 10 levels, vectorised over rows and sizes
        np.subtract(x[None, :], q_prev, out=buf)
        np.clip(buf, 0.0, p.s[lev][:, None], out=buf)
        buf *= p.d[lev][:, None]
        out += buf
        q_prev = p.q[lev][:, None]
    r = np.maximum(x[None, :] - p.q[-1][:, None], 0.0)
    if policy.kind is BeyondDepth.REFUSE:
        out[r > 0] = np.nan
    else:
        out += r * (p.e[:, None] + 0.5 * p.k[:, None] * r)
    if p.n_dropped:
        full = np.full((mid.size, x.size), np.nan)
        full[np.isfinite(mid) & np.isfinite(px[:, 0])] = out
        return full
    return out


def _pieces(
    p: _Prepared,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return the kinks of every row's curve and the coefficient changes there.

    Piece ``l < L`` covers ``(Q_{l-1}, Q_l]`` with ``C(x) = a_l + b_l*x``; piece ``L`` covers
    ``(D, inf)`` with ``C(x) = a + b*x + c*x**2``. ``C**2`` is then a polynomial in x of degree 2
    on the visible pieces and 4 on the last one. Coefficient rows, in order: (a, b, c) of ``C``,
    then the coefficients of powers 0..4 of x in ``C**2``.

    Returns:
        ``(pos, delta_vis, delta_last)``: kink positions in shares, shape (L+1, m) (row 0 is 0,
        row ``l`` is ``Q_{l-1}``); changes of the coefficients (a, b, C**2 powers 0..2) at the
        first ``L`` kinks, shape (5, L, m); changes of all 8 coefficients at ``D``, shape (8, m).
    """
    n_lev, m = p.d.shape
    pos = np.empty((n_lev + 1, m))
    pos[0] = 0.0
    pos[1:] = p.q
    coef = np.empty((5, n_lev, m))
    a, b = coef[0], coef[1]
    # a_l = C(Q_{l-1}) - d_l * Q_{l-1} on the visible pieces
    np.multiply(p.d, pos[:n_lev], out=a)
    np.subtract(p.c[:-1], a[1:], out=a[1:])
    np.negative(a[0], out=a[0])
    b[:] = p.d
    np.multiply(a, a, out=coef[2])
    np.multiply(a, b, out=coef[3])
    coef[3] *= 2.0
    np.multiply(b, b, out=coef[4])
    delta_vis = np.empty_like(coef)
    delta_vis[:, 0] = coef[:, 0]
    np.subtract(coef[:, 1:], coef[:, :-1], out=delta_vis[:, 1:])
    big_d = p.q[-1]
    half_k = 0.5 * p.k
    la = p.c[-1] - p.e * big_d + half_k * big_d * big_d
    lb = p.e - p.k * big_d
    delta_last = np.empty((8, m))
    delta_last[0] = la - a[-1]
    delta_last[1] = lb - b[-1]
    delta_last[2] = half_k
    delta_last[3] = la * la - coef[2, -1]
    delta_last[4] = 2.0 * la * lb - coef[3, -1]
    delta_last[5] = lb * lb + 2.0 * la * half_k - coef[4, -1]
    delta_last[6] = 2.0 * lb * half_k
    delta_last[7] = half_k * half_k
    return pos, delta_vis, delta_last


_Levels = tuple[list[float], list[float], list[float], list[float], float, float]


def _row_levels(
    prow: list[float], srow: list[float], m0: float, sell: bool, kind: BeyondDepth, pen: float
) -> _Levels | None:
    """``_prepare`` of one kept row in plain floats (the same operations in the same order):
    ``(d, s, q, c, e, k)``, or None for an infinite price or size (the vectorised walk then).

    ``pen`` is the penalty as a fraction (``penalty_bps * 1e-4``).
    """
    d: list[float] = []
    sh: list[float] = []
    q: list[float] = []
    c: list[float] = []
    qq = cc = 0.0
    last = 0
    dl = 0.0
    for lev, (p, z) in enumerate(zip(prow, srow, strict=True)):
        if math.isinf(p) or math.isinf(z):
            return None
        here = p == p and z > 0  # priced and sized: the level is there
        if here or not lev:  # level 0 is priced on every kept row
            last = lev
            dl = m0 - p if sell else p - m0
        # else: the distance forward-filled, so an empty level changes no slope
        sl = z if here else 0.0
        d.append(dl)
        sh.append(sl)
        qq += sl
        cc += sl * dl
        q.append(qq)
        c.append(cc)
    d_last, s_last = d[-1], sh[last]
    if kind is BeyondDepth.EXTRAPOLATE:
        span = q[-1] - 0.5 * s_last - 0.5 * sh[0]
        k = (d_last - d[0]) / span if span > 0 else 0.0
        k = k if math.isfinite(k) and k > 0 else 0.0
        e = d_last + 0.5 * k * s_last
    elif kind is BeyondDepth.PENALTY:
        k = 0.0
        e = d_last + abs(prow[last]) * pen
    else:
        k, e = 0.0, d_last
    return d, sh, q, c, e, k


# -- compiled kernels (``agent.accel``) -------------------------------------------------------
# Plain loops over the rows, compiled by numba when it is installed; without it (or with
# EXEC_AGENT_JIT=0) the vectorised numpy path above runs, and it is the reference: the walk
# kernel gives its arrays bit for bit, the sum kernel its bins bit for bit
# (``tests/unit/test_book_walk_kernels.py``). The kernels do ``_row_levels``', ``_pieces``' and
# ``_bin``'s operations in their order, so the rounding is the same.
_KINDS = {BeyondDepth.EXTRAPOLATE: 0, BeyondDepth.PENALTY: 1, BeyondDepth.REFUSE: 2}
_KCELLS: dict[bytes, tuple[float, NDArray[np.intp]]] = {}


def _kernel_cells(sizes: NDArray[np.float64]) -> tuple[float, NDArray[np.intp]]:
    """Return the walk kernel's table of a grid: cells of width ``h``, 4 a size on average
    (a few KB, in cache, where ``_bin_cells``' fine table is up to 512 KB of random reads),
    each giving the first size at or past its start; the kernel steps on from there."""
    key = sizes.tobytes()
    got = _KCELLS.get(key)
    if got is None:
        h = float(sizes[-1]) / (4 * sizes.size)
        table = np.searchsorted(sizes, np.arange(4 * sizes.size + 2) * h, side="left")
        got = (h, np.asarray(table, dtype=np.intp))
        if len(_KCELLS) >= 64:
            _KCELLS.pop(next(iter(_KCELLS)))
        _KCELLS[key] = got
    return got


_NO_WEIGHTS = np.zeros(1)  # ``_add_rows``' weights when it is told there are none


def _walk_rows_py(
    px: NDArray[np.float64],
    sz: NDArray[np.float64],
    mid: NDArray[np.float64],
    sell: bool,
    kind: int,
    pen: float,
    mode: int,
    s0: float,
    step: float,
    h: float,
    table: NDArray[np.int64],
    sizes: NDArray[np.float64],
    keep: NDArray[np.bool_],
    bins: NDArray[np.int64],
    dvis: NDArray[np.float64],
    dlast: NDArray[np.float64],
    jdx: NDArray[np.int64],
) -> int:
    """``CurveAccumulator.walk`` of rows ``px, sz, mid`` into the given arrays (the kept rows'
    columns, in order; ``bins`` each kink's bin once, ``WalkedRows.bins``); return the kept
    rows, or -1 at an infinite price or size (the numpy walk then).

    ``kind``: 0 extrapolate, 1 penalty (``pen`` a fraction), 2 refuse. ``mode`` bins a kink:
    0 by one division (an arithmetic grid: ``s0``, ``step``), 1 by a table of cells of width
    ``h`` (``_kernel_cells``) and steps up ``sizes`` from there.
    """
    n, n_lev = px.shape
    g = sizes.shape[0]
    top = table.shape[0] - 1
    d = np.empty(n_lev)
    s = np.empty(n_lev)
    q = np.empty(n_lev)
    c = np.empty(n_lev)
    pos_l = np.empty(n_lev + 1)
    kb = np.empty(n_lev + 1, dtype=np.int64)
    j = 0
    for i in range(n):
        m0 = mid[i]
        p0 = px[i, 0]
        if not (math.isfinite(m0) and math.isfinite(p0)):
            keep[i] = False
            continue
        keep[i] = True
        qq = 0.0
        cc = 0.0
        last = 0
        dl = 0.0
        for lev in range(n_lev):
            p = px[i, lev]
            z = sz[i, lev]
            if math.isinf(p) or math.isinf(z):
                return -1
            here = p == p and z > 0
            if here or lev == 0:
                last = lev
                dl = m0 - p if sell else p - m0
            sl = z if here else 0.0
            d[lev] = dl
            s[lev] = sl
            qq += sl
            cc += sl * dl
            q[lev] = qq
            c[lev] = cc
        d_last = d[n_lev - 1]
        s_last = s[last]
        if kind == 0:
            span = q[n_lev - 1] - 0.5 * s_last - 0.5 * s[0]
            k = (d_last - d[0]) / span if span > 0 else 0.0
            if not (math.isfinite(k) and k > 0):
                k = 0.0
            e = d_last + 0.5 * k * s_last
        elif kind == 1:
            k = 0.0
            e = d_last + abs(px[i, last]) * pen
        else:
            k = 0.0
            e = d_last
        pos_l[0] = 0.0
        for lev in range(n_lev):
            pos_l[lev + 1] = q[lev]
        for t in range(n_lev + 1):  # _bin of every kink of the row
            pos = pos_l[t]
            if mode == 0:
                b = math.ceil((pos - s0) / step)
                kb[t] = min(max(b, 0), g)
            else:
                # The first size >= pos (what ``_bin``'s table of cells gives, exactly): a
                # small table of its own (``_kernel_cells``) starts a step or two below it.
                cell = math.floor(pos / h) - 1.0  # a cell back: the floor may round up
                lo_i = table[int(min(max(cell, 0.0), float(top)))]
                while lo_i < g and sizes[lo_i] < pos:
                    lo_i += 1
                kb[t] = lo_i
        a_l = 0.0
        b_l = 0.0
        a2 = 0.0
        ab2 = 0.0
        b2 = 0.0
        for lev in range(n_lev):
            na = c[lev - 1] - d[lev] * pos_l[lev] if lev else -(d[0] * 0.0)
            nb = d[lev]
            na2 = na * na
            nab2 = na * nb * 2.0
            nb2 = nb * nb
            if lev:
                dvis[0, lev, j] = na - a_l
                dvis[1, lev, j] = nb - b_l
                dvis[2, lev, j] = na2 - a2
                dvis[3, lev, j] = nab2 - ab2
                dvis[4, lev, j] = nb2 - b2
            else:
                dvis[0, lev, j] = na
                dvis[1, lev, j] = nb
                dvis[2, lev, j] = na2
                dvis[3, lev, j] = nab2
                dvis[4, lev, j] = nb2
            a_l, b_l, a2, ab2, b2 = na, nb, na2, nab2, nb2
            bins[lev, j] = kb[lev]
        big_d = q[n_lev - 1]
        half_k = 0.5 * k
        la = c[n_lev - 1] - e * big_d + half_k * big_d * big_d
        lb = e - k * big_d
        dlast[0, j] = la - a_l
        dlast[1, j] = lb - b_l
        dlast[2, j] = half_k
        dlast[3, j] = la * la - a2
        dlast[4, j] = 2.0 * la * lb - ab2
        dlast[5, j] = lb * lb + 2.0 * la * half_k - b2
        dlast[6, j] = 2.0 * lb * half_k
        dlast[7, j] = half_k * half_k
        bins[n_lev, j] = kb[n_lev]
        lo_i, hi_i = 0, g
        while lo_i < hi_i:  # first size > D (searchsorted, side="right")
            mid_i = (lo_i + hi_i) // 2
            if big_d < sizes[mid_i]:
                hi_i = mid_i
            else:
                lo_i = mid_i + 1
        jdx[j] = lo_i
        j += 1
    return j


_walk_rows = accel.compiled(
    _walk_rows_py,
    "int64(float64[:, ::1], float64[:, ::1], float64[::1], boolean, int64, float64, int64,"
    " float64, float64, float64, int64[::1], float64[::1], boolean[::1],"
    " int64[:, ::1], float64[:, :, ::1], float64[:, ::1], int64[::1])",
)


def _add_rows_py(
    keep: NDArray[np.bool_],
    keep_at: NDArray[np.int64],
    bins: NDArray[np.int64],
    dvis: NDArray[np.float64],
    dlast: NDArray[np.float64],
    jdx: NDArray[np.int64],
    a: int,
    b: int,
    w: NDArray[np.float64],
    weighted: bool,
    chunk_rows: int,
    vis_cols: NDArray[np.int64],
    delta: NDArray[np.float64],
    beyond: NDArray[np.float64],
    n_beyond: NDArray[np.float64],
    stats: NDArray[np.float64],
) -> None:
    """``CurveAccumulator.add_walked`` of rows ``a:b`` of a walk (weights ``w`` of those rows
    when ``weighted``) into ``delta``, ``beyond`` and ``n_beyond``; ``stats`` gets the rows
    dropped, the snapshots, the weight (added to the total it holds) and the rows of positive
    weight added.

    Every bin sums its values in add_walked's order (its bincounts), chunk by chunk, and the
    weight of each chunk is numpy's pairwise sum (``accel.pairwise_sum``), so the sums are its bits.
    """
    g1 = delta.shape[0]
    n_vis = vis_cols.shape[0]
    n_lev = dvis.shape[1]
    tv = np.empty(n_vis * g1)
    tl = np.empty(8 * g1)
    tb = np.empty(g1)
    tn = np.empty(g1)
    wk = np.empty(min(chunk_rows, max(b - a, 0)))
    for lo in range(a, b, chunk_rows):
        hi = min(lo + chunk_rows, b)
        ka = keep_at[lo]
        kb = keep_at[hi]
        m = kb - ka
        stats[0] += (hi - lo) - m
        if m == 0:
            continue
        stats[1] += m
        if weighted:
            j = 0
            for i in range(lo, hi):
                if keep[i]:
                    wk[j] = w[i - a]
                    j += 1
        else:
            for j in range(m):
                wk[j] = 1.0
        n_pos = 0
        for j in range(m):
            if wk[j] > 0:
                n_pos += 1
        stats[2] += pairwise_sum(wk, 0, m) if weighted else float(m)
        stats[3] += n_pos if weighted else m
        tv[:] = 0.0
        for r in range(n_vis):
            for lev in range(n_lev):
                for j in range(m):
                    if weighted:
                        tv[bins[lev, ka + j] + r * g1] += dvis[r, lev, ka + j] * wk[j]
                    else:
                        tv[bins[lev, ka + j] + r * g1] += dvis[r, lev, ka + j]
        for r in range(n_vis):
            col = vis_cols[r]
            for gi in range(g1):
                delta[gi, col] += tv[r * g1 + gi]
        tl[:] = 0.0
        for r in range(8):
            for j in range(m):
                if weighted:
                    tl[bins[n_lev, ka + j] + r * g1] += dlast[r, ka + j] * wk[j]
                else:
                    tl[bins[n_lev, ka + j] + r * g1] += dlast[r, ka + j]
        for r in range(8):
            for gi in range(g1):
                delta[gi, r] += tl[r * g1 + gi]
        tb[:] = 0.0
        tn[:] = 0.0
        for j in range(m):
            jj = jdx[ka + j]
            tb[jj] += wk[j]
            if wk[j] > 0:
                tn[jj] += 1.0
        for gi in range(g1):
            beyond[gi] += tb[gi]
            n_beyond[gi] += tn[gi]


_add_rows = accel.compiled(
    _add_rows_py,
    "void(boolean[::1], int64[::1], int64[:, ::1], float64[:, :, ::1],"
    " float64[:, ::1], int64[::1], int64, int64, float64[::1], boolean, int64, int64[::1],"
    " float64[:, ::1], float64[::1], float64[::1], float64[::1])",
)


@dataclass(frozen=True, slots=True)
class WalkedRows:
    """Rows walked on one grid (``CurveAccumulator.walk``): their kinks' bins and coefficient
    changes before weighting, for the kept rows (finite mid and best price)."""

    keep: NDArray[np.bool_]  # (n,) which input rows were kept
    keep_at: NDArray[np.intp]  # (n + 1,) kept rows before each input row
    _ivis: NDArray[np.intp] | None  # (5, L, m) bins of the visible kinks, offset per row
    dvis: NDArray[np.float64]  # (5, L, m) their coefficient changes
    _ilast: NDArray[np.intp] | None  # (8, m) bins of the last kink (the depth D), offset alike
    dlast: NDArray[np.float64]  # (8, m) its coefficient changes
    jdx: NDArray[np.intp]  # (m,) first grid size past D
    # The compiled walk keeps each kink's bin once, (L + 1, m), not once per coefficient row:
    # a fifth of the memory it writes (the offset bins are derived when the numpy sums ask).
    bins: NDArray[np.intp] | None = None
    g1: int = 0  # grid sizes + 1: the offset between coefficient rows

    @property
    def ivis(self) -> NDArray[np.intp]:
        """Bins of the visible kinks offset by (G+1) per coefficient row, (5, L, m)."""
        if self._ivis is not None:
            return self._ivis
        assert self.bins is not None
        off = np.arange(len(_VIS_COLS), dtype=np.intp) * self.g1
        return np.asarray(self.bins[None, :-1, :] + off[:, None, None], dtype=np.intp)

    @property
    def ilast(self) -> NDArray[np.intp]:
        """Bins of the last kink offset alike, (8, m)."""
        if self._ilast is not None:
            return self._ilast
        assert self.bins is not None
        off = np.arange(8, dtype=np.intp) * self.g1
        return np.asarray(self.bins[None, -1, :] + off[:, None], dtype=np.intp)

    def kink_bins(self) -> NDArray[np.intp]:
        """Each kink's bin once, (L + 1, m): the visible kinks', then the last one's."""
        if self.bins is not None:
            return self.bins
        assert self._ivis is not None and self._ilast is not None
        return np.ascontiguousarray(np.vstack([self._ivis[0], self._ilast[:1]]))

    @property
    def n(self) -> int:
        """Input rows walked."""
        return int(self.keep.size)


_Cells = tuple[float, NDArray[np.intp], NDArray[np.float64], int]
_CELLS: dict[bytes, _Cells | None] = {}  # per grid: accumulators are made per chunk of rows


def _bin_cells(sizes: NDArray[np.float64]) -> _Cells | None:
    """Return the bin table of a grid that is not arithmetic (the union of several parents'
    grids), or None when a binary search is as good: cells give a kink's bin to within a few
    sizes, which are then checked one by one (``CurveAccumulator._bin``)."""
    key = sizes.tobytes()
    if key in _CELLS:
        return _CELLS[key]
    span = float(sizes[-1])
    h = max(float(np.diff(sizes).min()), span / _MAX_CELLS)
    n_cells = math.ceil(span / h) + 4
    table = np.searchsorted(sizes, np.arange(n_cells) * h, side="left")
    # Sizes between a cell's start and a position at most 3 cells later (the lookup steps one
    # cell back, for a floor rounded across an edge).
    n_check = int(np.max(table[3:] - table[:-3]))
    out: _Cells | None = None
    if n_check <= _MAX_CHECKS:
        out = (h, np.asarray(table, dtype=np.intp), np.append(sizes, np.inf), n_check)
    if len(_CELLS) >= 64:
        _CELLS.pop(next(iter(_CELLS)))
    _CELLS[key] = out
    return out


def _cat(parts: list[NDArray[Any]], axis: int, empty: NDArray[Any]) -> NDArray[Any]:
    """Concatenate ``parts`` along ``axis`` (one part as is, none: ``empty``)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts, axis=axis) if parts else empty


class CurveAccumulator:
    """Streaming accumulator of the walk-the-book cost curve (first and second moments).

    Feed it batches (``add``), merge accumulators of disjoint rows (``merge``), read the curve
    (``result``). Memory is O(G) plus one chunk of rows; the work is O(rows x levels + G).

    Args:
        sizes: Order sizes in shares, shape (G,), > 0, strictly increasing.
        side: ``"buy"`` walks the asks, ``"sell"`` the bids.
        policy: Beyond-depth policy.
    """

    def __init__(
        self,
        sizes: ArrayLike,
        side: Side,
        policy: DepthPolicy = DepthPolicy(),
    ) -> None:
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        self.sizes = _check_sizes(sizes)
        self.side: Side = side
        self.policy = policy
        g = self.sizes.size
        self._delta = np.zeros((g + 1, 8))  # coefficient changes binned by first size reached
        self._beyond = np.zeros(g + 1)  # rows whose depth D is first exceeded at size index
        self._offsets = np.arange(8, dtype=np.intp) * (g + 1)  # bin offset of each column
        # Counts of the rows of positive weight: exact zeros stay zeros when a sliding window
        # subtracts rows (agent.core.estimator), where the weighted sums keep a rounding residue.
        self._n_beyond = np.zeros(g + 1)
        self._n_pos = 0
        self.n_snapshots = 0
        self.n_dropped = 0
        self.weight = 0.0  # total row weight (= n_snapshots when unweighted)
        steps = np.diff(self.sizes)
        # On an arithmetic grid the bin of a kink is one division instead of a binary search.
        self._step = float(steps[0]) if steps.size and np.all(steps == steps[0]) else 0.0
        self._cells = _bin_cells(self.sizes) if self._step == 0 and steps.size else None
        self._py: tuple[Callable[[float], int], list[float]] | None = None  # see _py_bins

    def _bin(self, pos: NDArray[np.float64]) -> NDArray[np.intp]:
        """Return the index of the first grid size >= each kink position, in [0, G].

        A kink at ``Q`` applies from that size on. ``C`` is continuous at ``Q``, so a position
        within rounding of a grid size may land on either side without changing any value.
        """
        if self._step > 0:
            t = pos - self.sizes[0]
            t /= self._step
            np.ceil(t, out=t)
            np.clip(t, 0, self.sizes.size, out=t)
            return np.asarray(t.astype(np.intp), dtype=np.intp)
        if self._cells is not None:
            h, table, padded, n_check = self._cells
            c = pos / h
            np.floor(c, out=c)
            c -= 1.0  # one cell back: the floor may round across a cell's edge
            np.clip(c, 0, table.size - 1, out=c)
            idx = table[c.astype(np.intp)]
            for _ in range(n_check):  # step over the sizes below the position
                idx += padded[idx] < pos
            return idx
        return np.asarray(np.searchsorted(self.sizes, pos, side="left"), dtype=np.intp)

    def add_arrays(
        self, px: ArrayLike, sz: ArrayLike, mid: ArrayLike, weights: ArrayLike | None = None
    ) -> None:
        """Add rows given as the walked side's arrays (see ``walk_cost`` for shapes).

        Args:
            px: Prices of the walked side, shape (n, L).
            sz: Sizes in shares, shape (n, L).
            mid: Mid prices, shape (n,).
            weights: Optional row weights, shape (n,), >= 0 (e.g. ``time_weights``: how long
                each book was in force). ``None`` weighs every snapshot 1.
        """
        mid = np.asarray(mid, dtype=np.float64)
        w_all = None
        if weights is not None:
            w_all = np.asarray(weights, dtype=np.float64)
            if w_all.shape != mid.shape or not np.all(np.isfinite(w_all) & (w_all >= 0)):
                raise ValueError("weights must be finite, >= 0 and of shape (n,)")
        walked = self.walk(px, sz, mid)
        self.add_walked(walked, 0, walked.n, w_all)

    def walk(self, px: ArrayLike, sz: ArrayLike, mid: ArrayLike) -> WalkedRows:
        """Walk rows once on this grid (shapes as ``add_arrays``): what ``add_walked`` sums.

        A sliding window walks a row when it arrives and sums the walk in again when it
        leaves, instead of walking it twice (``agent.core.estimator``).
        """
        px = np.asarray(px, dtype=np.float64)
        sz = np.asarray(sz, dtype=np.float64)
        mid = np.asarray(mid, dtype=np.float64)
        if _walk_rows is not None and px.ndim == 2 and px.shape == sz.shape and px.shape[1]:
            got = self._walk_compiled(px, sz, mid)
            if got is not None:
                return got
        if 0 < px.shape[0] <= _FEW_ROWS and px.ndim == 2 and px.shape == sz.shape:
            few = self._walk_few(px, sz, mid)
            if few is not None:
                return few
        n_lev = px.shape[1] if px.ndim == 2 else 0
        keep, ivis, dvis, ilast, dlast, jdx = [], [], [], [], [], []
        for lo in range(0, px.shape[0], _CHUNK_ROWS):  # chunks of rows, not single rows
            hi = lo + _CHUNK_ROWS
            p = _prepare(px[lo:hi], sz[lo:hi], mid[lo:hi], self.policy, self.side)
            keep.append(p.keep)
            m = p.d.shape[1]
            if m == 0:
                continue
            pos, delta_vis, delta_last = _pieces(p)
            # A kink at Q applies from the first grid size >= Q (C is continuous at Q).
            # Bins offset by (G+1) per coefficient row: what the bincounts of add_walked take.
            iv = self._bin(pos[:-1].ravel()).reshape(n_lev, m)
            ivis.append(iv[None, :, :] + self._offsets[: len(_VIS_COLS), None, None])
            dvis.append(delta_vis)
            ilast.append(self._bin(pos[-1])[None, :] + self._offsets[:, None])
            dlast.append(delta_last)
            # Past depth at size x iff D < x: first such grid size.
            jdx.append(np.searchsorted(self.sizes, p.q[-1], side="right"))
        kept = _cat(keep, 0, np.zeros(0, dtype=bool))
        keep_at = np.zeros(kept.size + 1, dtype=np.intp)
        np.cumsum(kept, out=keep_at[1:])
        return WalkedRows(
            kept,
            keep_at,
            _cat(ivis, 2, np.zeros((5, n_lev, 0), dtype=np.intp)),
            _cat(dvis, 2, np.zeros((5, n_lev, 0))),
            _cat(ilast, 1, np.zeros((8, 0), dtype=np.intp)),
            _cat(dlast, 1, np.zeros((8, 0))),
            _cat(jdx, 0, np.zeros(0, dtype=np.intp)),
        )

    def _walk_compiled(
        self, px: NDArray[np.float64], sz: NDArray[np.float64], mid: NDArray[np.float64]
    ) -> WalkedRows | None:
        """``walk`` by the compiled kernel ``_walk_rows``: the same arrays, bit for bit.

        None (the numpy walk then) for a row with an infinite price or size, or bad shapes.
        """
        n, n_lev = px.shape
        if mid.shape != (n,):
            return None
        keep = np.empty(n, dtype=np.bool_)
        bins = np.empty((n_lev + 1, n), dtype=np.intp)
        dvis = np.empty((len(_VIS_COLS), n_lev, n))
        dlast = np.empty((8, n))
        jdx = np.empty(n, dtype=np.intp)
        assert _walk_rows is not None
        m = _walk_rows(
            np.ascontiguousarray(px),
            np.ascontiguousarray(sz),
            np.ascontiguousarray(mid),
            self.side == "sell",
            _KINDS[self.policy.kind],
            self.policy.penalty_bps * 1e-4,
            0 if self._step > 0 else 1,
            float(self.sizes[0]),
            self._step,
            *_kernel_cells(self.sizes),
            np.ascontiguousarray(self.sizes),
            keep,
            bins,
            dvis,
            dlast,
            jdx,
        )
        if m < 0:
            return None
        if m < n:  # dropped rows: the kept columns, contiguous again (rare: a one-sided book)
            bins = np.ascontiguousarray(bins[:, :m])
            dvis = np.ascontiguousarray(dvis[:, :, :m])
            dlast = np.ascontiguousarray(dlast[:, :m])
            jdx = jdx[:m]
        keep_at = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(keep, out=keep_at[1:])
        return WalkedRows(keep, keep_at, None, dvis, None, dlast, jdx, bins, self.sizes.size + 1)

    def _walk_few(
        self, px: NDArray[np.float64], sz: NDArray[np.float64], mid: NDArray[np.float64]
    ) -> WalkedRows | None:
        """``walk`` of a few rows in plain floats: the same numbers, bit for bit.

        A live window walks the one or few books that came since its last read; numpy's
        per-call cost is then most of a walk (about 60 calls), while the arithmetic is a few
        hundred float operations. The operations are ``_prepare``'s, ``_pieces``' and
        ``_bin``'s own, in the same order (``tests/unit/test_book_walk.py`` checks every array
        against the vectorised walk). None (the vectorised walk then) for a row with an
        infinite price or size.
        """
        n_lev = px.shape[1]
        if mid.shape != (px.shape[0],) or n_lev == 0:
            return None
        bin_of, sizes_l = self._py_bins()
        g1 = self.sizes.size + 1
        sell = self.side == "sell"
        kind, pen = self.policy.kind, self.policy.penalty_bps * 1e-4
        keep: list[bool] = []
        ivis: list[list[int]] = [[], [], [], [], []]  # each row-major (m, L)
        dvis: list[list[float]] = [[], [], [], [], []]
        ilast: list[list[int]] = [[], [], [], [], [], [], [], []]
        dlast: list[list[float]] = [[], [], [], [], [], [], [], []]
        jdx: list[int] = []
        for prow, srow, m0 in zip(px.tolist(), sz.tolist(), mid.tolist(), strict=True):
            p0 = prow[0]
            if not (math.isfinite(m0) and math.isfinite(p0)):
                keep.append(False)
                continue
            keep.append(True)
            lv = _row_levels(prow, srow, m0, sell, kind, pen)
            if lv is None:
                return None
            d, _, q, c, e, k = lv
            # _pieces: piece l is C(x) = a_l + b_l x on (Q_{l-1}, Q_l]; kinks binned as _bin.
            a_l = b_l = a2 = ab2 = b2 = 0.0
            for lev in range(n_lev):
                pos = q[lev - 1] if lev else 0.0
                na = c[lev - 1] - d[lev] * pos if lev else -(d[0] * 0.0)
                nb = d[lev]
                na2, nab2, nb2 = na * na, na * nb * 2.0, nb * nb
                if lev:
                    dvis[0].append(na - a_l)
                    dvis[1].append(nb - b_l)
                    dvis[2].append(na2 - a2)
                    dvis[3].append(nab2 - ab2)
                    dvis[4].append(nb2 - b2)
                else:
                    dvis[0].append(na)
                    dvis[1].append(nb)
                    dvis[2].append(na2)
                    dvis[3].append(nab2)
                    dvis[4].append(nb2)
                a_l, b_l, a2, ab2, b2 = na, nb, na2, nab2, nb2
                j = bin_of(pos)
                for r in range(5):
                    ivis[r].append(j + r * g1)
            big_d = q[-1]
            half_k = 0.5 * k
            la = c[-1] - e * big_d + half_k * big_d * big_d
            lb = e - k * big_d
            for row, v in zip(
                dlast,
                (
                    la - a_l,
                    lb - b_l,
                    half_k,
                    la * la - a2,
                    2.0 * la * lb - ab2,
                    lb * lb + 2.0 * la * half_k - b2,
                    2.0 * lb * half_k,
                    half_k * half_k,
                ),
                strict=True,
            ):
                row.append(v)
            j = bin_of(big_d)
            for r in range(8):
                ilast[r].append(j + r * g1)
            jdx.append(bisect.bisect_right(sizes_l, big_d))
        m = len(jdx)
        kept = np.array(keep, dtype=bool)
        keep_at = np.array([0, *itertools.accumulate(keep)], dtype=np.intp)
        if m == 0:
            return WalkedRows(
                kept,
                keep_at,
                np.zeros((5, n_lev, 0), dtype=np.intp),
                np.zeros((5, n_lev, 0)),
                np.zeros((8, 0), dtype=np.intp),
                np.zeros((8, 0)),
                np.zeros(0, dtype=np.intp),
            )
        # Level-major (5, L, m), as the vectorised walk lays them out.
        return WalkedRows(
            kept,
            keep_at,
            np.array(ivis, dtype=np.intp).reshape(5, m, n_lev).transpose(0, 2, 1),
            np.array(dvis).reshape(5, m, n_lev).transpose(0, 2, 1),
            np.array(ilast, dtype=np.intp),
            np.array(dlast),
            np.array(jdx, dtype=np.intp),
        )

    def _py_bins(self) -> tuple[Callable[[float], int], list[float]]:
        """Return ``_bin`` of one position in plain floats, and the sizes as a list."""
        got = self._py
        if got is not None:
            return got
        sizes_l = self.sizes.tolist()
        g = len(sizes_l)
        if self._step > 0:
            s0, step = sizes_l[0], self._step

            def bin_of(pos: float) -> int:
                return int(min(max(math.ceil((pos - s0) / step), 0), g))

        elif self._cells is not None:
            h, table, padded, n_check = self._cells
            table_l, padded_l, top = table.tolist(), padded.tolist(), table.size - 1

            def bin_of(pos: float) -> int:
                idx: int = table_l[min(max(math.floor(pos / h) - 1, 0), top)]
                for _ in range(n_check):
                    idx += padded_l[idx] < pos
                return idx

        else:

            def bin_of(pos: float) -> int:
                return bisect.bisect_left(sizes_l, pos)

        self._py = (bin_of, sizes_l)
        return self._py

    def add_walked(
        self, walked: WalkedRows, a: int, b: int, weights: NDArray[np.float64] | None = None
    ) -> None:
        """Add rows ``a:b`` of a walk (weights: of those rows, shape (b - a,); None: 1 each).

        The same sums, bit for bit, as ``add_arrays`` of those rows (by the compiled kernel
        ``_add_rows`` when there is one: the same bits).
        """
        if _add_rows is not None:
            self._add_walked_compiled(walked, a, b, weights)
            return
        g = self.sizes.size
        for lo in range(a, b, _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, b)
            ka, kb = int(walked.keep_at[lo]), int(walked.keep_at[hi])
            m = kb - ka
            self.n_dropped += (hi - lo) - m
            if m == 0:
                continue
            self.n_snapshots += m
            delta_vis = walked.dvis[:, :, ka:kb]
            delta_last = walked.dlast[:, ka:kb]
            w = None
            if weights is not None:
                w = weights[lo - a : hi - a][walked.keep[lo:hi]]
                delta_vis = delta_vis * w
                delta_last = delta_last * w
            self.weight += float(w.sum()) if w is not None else float(m)
            pos_w = None if w is None else (w > 0).astype(np.float64)
            self._n_pos += m if pos_w is None else int(np.count_nonzero(pos_w))
            # One bincount per kind of kink, the coefficient rows offset by (G+1) bins each: every
            # bin still sums its own column in row order, as one bincount per column would.
            idx5 = walked.ivis[:, :, ka:kb].ravel()
            vis = np.bincount(idx5, weights=delta_vis.ravel(), minlength=len(_VIS_COLS) * (g + 1))
            self._delta[:, _VIS_COLS] += vis.reshape(len(_VIS_COLS), g + 1).T
            idx8 = walked.ilast[:, ka:kb].ravel()
            last = np.bincount(idx8, weights=delta_last.ravel(), minlength=8 * (g + 1))
            self._delta += last.reshape(8, g + 1).T
            jdx = walked.jdx[ka:kb]
            self._beyond += np.bincount(jdx, weights=w, minlength=g + 1)
            self._n_beyond += np.bincount(jdx, weights=pos_w, minlength=g + 1)

    def _add_walked_compiled(
        self, walked: WalkedRows, a: int, b: int, weights: NDArray[np.float64] | None
    ) -> None:
        stats = np.array([0.0, 0.0, self.weight, 0.0])  # the weight summed on, chunk by chunk
        c = np.ascontiguousarray
        assert _add_rows is not None
        _add_rows(
            c(walked.keep),
            c(walked.keep_at),
            walked.kink_bins(),
            c(walked.dvis),
            c(walked.dlast),
            c(walked.jdx),
            int(a),
            int(b),
            _NO_WEIGHTS if weights is None else c(weights, dtype=np.float64),
            weights is not None,
            _CHUNK_ROWS,
            _VIS_COLS,
            self._delta,
            self._beyond,
            self._n_beyond,
            stats,
        )
        self.n_dropped += int(stats[0])
        self.n_snapshots += int(stats[1])
        self.weight = float(stats[2])
        self._n_pos += int(stats[3])

    def add(self, batch: BookBatch, weights: ArrayLike | None = None) -> None:
        """Add the rows of a batch (optionally weighted, see ``add_arrays``)."""
        self.add_arrays(*side_arrays(batch, self.side), weights)

    def merge(self, other: CurveAccumulator, sign: float = 1.0) -> None:
        """Add the rows accumulated by ``other`` (same sizes, side and policy).

        ``sign=-1`` takes them out again (see ``subtract``).
        """
        if (
            other.side != self.side
            or other.policy != self.policy
            or (other.sizes is not self.sizes and not np.array_equal(other.sizes, self.sizes))
        ):
            raise ValueError("can only merge accumulators with equal sizes, side and policy")
        if sign > 0:
            self._delta += other._delta
            self._beyond += other._beyond
            self._n_beyond += other._n_beyond
        else:
            self._delta -= other._delta
            self._beyond -= other._beyond
            self._n_beyond -= other._n_beyond
        n = 1 if sign > 0 else -1
        self._n_pos += n * other._n_pos
        self.n_snapshots += n * other.n_snapshots
        self.n_dropped += n * other.n_dropped
        self.weight += n * other.weight

    def subtract(self, other: CurveAccumulator) -> None:
        """Take out the rows accumulated by ``other``, which were added here before.

        The inverse of ``merge``: a sliding window adds the rows that arrive and subtracts the
        ones that leave (``agent.core.estimator``). Exact up to the rounding of the sums.
        """
        self.merge(other, sign=-1.0)

    def copy(self) -> CurveAccumulator:
        """Return an independent accumulator holding the same rows."""
        out = CurveAccumulator.__new__(CurveAccumulator)
        out.sizes, out.side, out.policy, out._step = self.sizes, self.side, self.policy, self._step
        out._cells = self._cells
        out._offsets = self._offsets
        out._py = self._py
        out._delta, out._beyond = self._delta.copy(), self._beyond.copy()
        out._n_beyond, out._n_pos = self._n_beyond.copy(), self._n_pos
        out.n_snapshots, out.n_dropped, out.weight = self.n_snapshots, self.n_dropped, self.weight
        return out

    def empty_like(self) -> CurveAccumulator:
        """Return an empty accumulator on the same grid, side and policy (no re-validation of
        the grid: a sliding window makes one per chunk of rows)."""
        out = CurveAccumulator.__new__(CurveAccumulator)
        out.sizes, out.side, out.policy, out._step = self.sizes, self.side, self.policy, self._step
        out._cells = self._cells
        out._offsets = self._offsets
        out._py = self._py
        out._delta = np.zeros_like(self._delta)
        out._beyond = np.zeros_like(self._beyond)
        out._n_beyond, out._n_pos = np.zeros_like(self._n_beyond), 0
        out.n_snapshots, out.n_dropped, out.weight = 0, 0, 0.0
        return out

    def scaled(self, factor: float) -> CurveAccumulator:
        """Return these rows with every weight multiplied by ``factor`` (>= 0).

        A row added with weight 1 and scaled by ``w`` counts as the row added with weight ``w``
        (to the rounding of one product): how a window weighs its newest row by its age.
        """
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"factor must be finite and >= 0, got {factor}")
        out = self.copy()
        out._delta *= factor
        out._beyond *= factor
        out.weight *= factor
        if factor == 0:
            out._n_beyond[:] = 0.0
            out._n_pos = 0
        return out

    def result(self) -> CostCurve:
        """Return the curve of every row added so far."""
        x = self.sizes
        n = self.n_snapshots
        if n == 0 or self._n_pos == 0:  # no row of positive weight: nothing to average
            nan = np.full(x.size, np.nan)
            return CostCurve(
                x, nan, nan.copy(), n, nan.copy(), self.policy, self.side, self.n_dropped
            )
        tot = np.cumsum(self._delta[:-1], axis=0)  # (G, 8) coefficient sums in force at x_g
        x2 = x * x
        s1 = tot[:, 0] + tot[:, 1] * x + tot[:, 2] * x2
        s2 = tot[:, 3] + x * (tot[:, 4] + x * (tot[:, 5] + x * (tot[:, 6] + x * tot[:, 7])))
        w = self.weight
        mean = s1 / w
        var = np.maximum(s2 / w - mean * mean, 0.0)
        std = np.sqrt(var)
        frac = np.cumsum(self._beyond[:-1]) / w
        frac[np.cumsum(self._n_beyond[:-1]) == 0] = 0.0  # no row (of weight > 0) past its depth
        if self.policy.kind is BeyondDepth.REFUSE:
            mean = np.where(frac > 0, np.nan, mean)
            std = np.where(frac > 0, np.nan, std)
        return CostCurve(x, mean, std, n, frac, self.policy, self.side, self.n_dropped)


def cost_curve(
    batch: BookBatch,
    side: Side,
    sizes: ArrayLike,
    policy: DepthPolicy = DepthPolicy(),
    weights: ArrayLike | None = None,
) -> CostCurve:
    """Return the window mean (and spread) of the walk-the-book total cost curve.

    Args:
        batch: The window's snapshots, n rows (any n, including 0).
        side: ``"buy"`` walks the asks, ``"sell"`` the bids.
        sizes: Order sizes in shares, shape (G,), > 0, strictly increasing.
        policy: Beyond-depth policy (see ``BeyondDepth``).
        weights: Optional row weights, shape (n,), >= 0; ``None`` weighs every snapshot 1 (the
            specification's estimator). ``time_weights`` gives the time-weighted mean.

    Returns:
        The curve; an empty window gives NaN mean and std and ``n_snapshots == 0``. With
        weights, mean, std and ``frac_beyond_depth`` are weighted.
    """
    acc = CurveAccumulator(sizes, side, policy)
    acc.add(batch, weights)
    return acc.result()


# The read-only grids book_curve validated, by id (each held, so no id is reused while kept)
_CHECKED: dict[int, NDArray[np.float64]] = {}


def _checked_grid(sizes: ArrayLike) -> NDArray[np.float64]:
    """``_check_sizes`` of a grid, once for a read-only array asked for again (each policy
    prices every decision's book on its own frozen grid: the check was a third of the walk)."""
    got = _CHECKED.get(id(sizes))
    if got is not None and got is sizes and not got.flags.writeable:
        return got
    x = _check_sizes(sizes)
    if x is sizes and not x.flags.writeable:
        if len(_CHECKED) >= 256:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[id(x)] = x
    return x


def _book_walk_py(
    prow: NDArray[np.float64],
    srow: NDArray[np.float64],
    m0: float,
    sell: bool,
    kind: int,
    pen: float,
    x: NDArray[np.float64],
    out: NDArray[np.float64],
) -> bool:
    """The walk of one book on the grid ``x`` into ``out`` (3, G): cost, std, depth share;
    False (``out`` untouched) for an infinite price or size (numpy's rules then).

    ``_row_levels``' operations on the row (``kind``: ``_KINDS``' code), then ``book_curve``'s
    numpy ones one size at a time, in their order (numpy's maximum/minimum, the levels summed
    from the first, the beyond-depth part added last): their bits.
    """
    n_lev = prow.shape[0]
    d = np.empty(n_lev)
    sh = np.empty(n_lev)
    q = np.empty(n_lev)
    qq = 0.0
    last = 0
    dl = 0.0
    for lev in range(n_lev):
        p, z = prow[lev], srow[lev]
        if math.isinf(p) or math.isinf(z):
            return False
        here = p == p and z > 0
        if here or lev == 0:
            last = lev
            dl = m0 - p if sell else p - m0
        sl = z if here else 0.0
        d[lev] = dl
        sh[lev] = sl
        qq += sl
        q[lev] = qq
    d_last, s_last = d[n_lev - 1], sh[last]
    k = 0.0
    if kind == 0:  # extrapolate
        span = q[n_lev - 1] - 0.5 * s_last - 0.5 * sh[0]
        k = (d_last - d[0]) / span if span > 0 else 0.0
        k = k if math.isfinite(k) and k > 0 else 0.0
        e = d_last + 0.5 * k * s_last
    elif kind == 1:  # penalty
        e = d_last + abs(prow[last]) * pen
    else:
        e = d_last
    half_k = 0.5 * k
    depth = q[n_lev - 1]
    refuse = kind == 2
    for j in range(x.shape[0]):
        xj = x[j]
        c = 0.0
        for lv in range(n_lev):
            t = xj - (q[lv - 1] if lv > 0 else 0.0)
            t = t if t >= 0.0 else 0.0
            t = t if t <= sh[lv] else sh[lv]
            t = t * d[lv]
            c = t if lv == 0 else c + t
        r = xj - depth
        r = r if r >= 0.0 else 0.0
        beyond = r > 0.0
        out[2, j] = 1.0 if beyond else 0.0
        if refuse and beyond:
            c = math.nan
        elif not refuse:
            c = c + r * (e + half_k * r)
        out[0, j] = c
        out[1, j] = math.nan if c != c else 0.0
    return True


_book_walk = accel.compiled(
    _book_walk_py,
    "boolean(float64[::1], float64[::1], float64, boolean, int64, float64, float64[::1], "
    "float64[:, ::1])",
)


def book_curve(batch: BookBatch, side: Side, sizes: ArrayLike, policy: DepthPolicy) -> CostCurve:
    """Return the curve of the last book of ``batch``: ``cost_curve`` of that one row, to the
    rounding (about 1e-16 relative), in a few operations on the grid.

    The current period is priced on the book in force at every decision; the accumulator's
    binning (some 60 array operations) is built for windows of many rows, not for one. The
    levels are ``_row_levels``', ``_prepare``'s twin in plain floats for one row (tested bit
    for bit against it; ``_prepare`` itself for an infinite price or size); the standard
    deviation of one snapshot is 0. A read-only ``sizes`` asked for again is validated once.
    """
    x = _checked_grid(sizes)
    n = len(batch)
    if n == 0:
        nan = np.full(x.size, np.nan)
        return CostCurve(x, nan, nan.copy(), 0, nan.copy(), policy, side, 0)
    px, sz, mid = side_arrays(batch, side)
    m0 = float(mid[n - 1])
    if not (math.isfinite(m0) and px.shape[1] and math.isfinite(px[n - 1, 0])):
        nan = np.full(x.size, np.nan)
        return CostCurve(x, nan, nan.copy(), 0, nan.copy(), policy, side, 1)
    pen = policy.penalty_bps * 1e-4
    if _book_walk is not None:  # compiled: the levels and the grid in one pass
        out = np.empty((3, x.size))
        c = np.ascontiguousarray
        prow, srow = c(px[n - 1], dtype=np.float64), c(sz[n - 1], dtype=np.float64)
        xc = c(x)  # (a strided grid would make numba compile another version)
        if _book_walk(prow, srow, m0, side == "sell", _KINDS[policy.kind], pen, xc, out):
            return CostCurve(x, out[0], out[1], 1, out[2], policy, side, 0)
    lv = _row_levels(px[n - 1].tolist(), sz[n - 1].tolist(), m0, side == "sell", policy.kind, pen)
    if lv is not None:  # the levels in plain floats, as _prepare gives them
        q = lv[2]
        # one array of (distance, shares, depth before the level), columns of the walk
        dsq = np.array([lv[0], lv[1], [0.0, *q[:-1]]]).T[:, :, None]
        depth, e, k = q[-1], lv[4], lv[5]
    else:  # an infinite price or size: numpy's own rules for it
        p = _prepare(px[n - 1 :], sz[n - 1 :], mid[n - 1 :], policy, side)
        qp = np.concatenate(([0.0], p.q[:-1, 0]))
        dsq = np.stack([p.d[:, 0], p.s[:, 0], qp], axis=1)[:, :, None]
        depth, e, k = p.q[-1, 0], float(p.e[0]), float(p.k[0])
    # np.clip(x - q_prev, 0, s) * d summed over the levels (axis 0, in level order), in place
    take = x - dsq[:, 2]
    np.maximum(take, 0.0, out=take)
    np.minimum(take, dsq[:, 1], out=take)
    take *= dsq[:, 0]
    cost = np.add.reduce(take, axis=0)
    r = x - depth
    np.maximum(r, 0.0, out=r)
    beyond = r > 0
    if policy.kind is BeyondDepth.REFUSE:
        cost[beyond] = np.nan
    else:
        cost += r * (e + 0.5 * k * r)
    std = np.where(np.isnan(cost), np.nan, 0.0)
    return CostCurve(x, cost, std, 1, beyond.astype(np.float64), policy, side, 0)


def time_weights(ts_ns: ArrayLike, end_ns: int | None = None) -> NDArray[np.float64]:
    """Return how long each snapshot was in force, in seconds, shape (n,).

    Snapshot ``i`` lasts until ``ts_ns[i+1]``; the last one until ``end_ns`` (0 when ``end_ns``
    is None or earlier). Timestamps must be non-decreasing.

    Args:
        ts_ns: Event times in ns, shape (n,).
        end_ns: End of the window in ns (e.g. the decision time).
    """
    t = np.asarray(ts_ns, dtype=np.int64)
    if t.size == 0:
        return np.empty(0)
    last = max(int(end_ns) - int(t[-1]), 0) if end_ns is not None else 0
    return np.diff(t, append=t[-1] + last).astype(np.float64) / 1e9
