"""Exact allocation of a parent order over periods (pure).

Problem (``execution-math.md`` section 2)::

    min  sum_t g_t(x_t)   s.t.  sum_t x_t = S,   0 <= x_t <= u_t

Symbols:
    S      shares to allocate (>= 0)
    H      number of periods
    x      shares per period, shape (H,)
    beta   linear cost per period, currency per share, shape (H,), >= 0
    gamma  quadratic cost per period, currency per share squared, shape (H,), >= 0
    u      per-period caps, shape (H,), may be +inf
    lam    the KKT multiplier: the common marginal cost g_t'(x_t) of every period strictly
           between its bounds

For ``g_t(x) = beta_t x + gamma_t x^2`` the KKT solution is
``x_t(lam) = clip((lam - beta_t) / (2 gamma_t), 0, u_t)``; periods with ``beta_t > lam`` get 0 (the
specification's closed form forgets this). ``sum_t x_t(lam)`` is piecewise linear and
non-decreasing in ``lam`` with breakpoints at ``beta_t`` and ``beta_t + 2 gamma_t u_t``: sorting
them finds ``lam`` exactly (no iterative solver). A period with ``gamma_t = 0`` is linear: it
takes nothing below ``lam = beta_t``, everything up to its cap above, and shares the remainder
with its ties at ``lam = beta_t``.

Integer lots: the continuous optimum is rounded down to lots, then the lots still missing are
handed out one at a time to the period whose cost rises least; for separable convex costs this
reaches the exact integer optimum. An odd-lot remainder ``S mod L`` goes to the period where it
adds least. The result sums to ``S`` exactly.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["SolveResult", "SolveStatus", "quadratic_cost", "solve_quadratic"]


class SolveStatus(enum.StrEnum):
    """Outcome of a solve."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    MAX_ITER = "max_iter"
    NUMERICAL = "numerical"


@dataclass(frozen=True, slots=True)
class SolveResult:
    """A schedule with its cost and status.

    Attributes:
        x: Shares per period, shape (H,).
        cost: Objective value at ``x``, currency.
        lam: KKT multiplier (marginal cost at the optimum); NaN when undefined.
        status: ``OPTIMAL`` when solved.
        message: Human-readable detail (why infeasible, etc.).
        n_iter: Iterations used (0 for exact methods).
    """

    x: NDArray[np.float64]
    cost: float
    lam: float
    status: SolveStatus
    message: str
    n_iter: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the status is OPTIMAL."""
        return self.status is SolveStatus.OPTIMAL


def quadratic_cost(
    x: NDArray[np.float64], beta: NDArray[np.float64], gamma: NDArray[np.float64]
) -> float:
    """Return ``sum_t beta_t x_t + gamma_t x_t**2`` (currency)."""
    return float(np.sum(beta * x + gamma * x * x))


def _x_of_lam(
    lam: float, beta: NDArray[np.float64], gamma: NDArray[np.float64], u: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return x(lam) for the quadratic periods and the linear ones strictly off ``lam``."""
    x = np.zeros_like(beta)
    q = gamma > 0
    x[q] = np.clip((lam - beta[q]) / (2.0 * gamma[q]), 0.0, u[q])
    lin_in = (~q) & (beta < lam)
    x[lin_in] = u[lin_in]
    return x


def _waterfill(
    beta: NDArray[np.float64], gamma: NDArray[np.float64], u: NDArray[np.float64], S: float
) -> tuple[NDArray[np.float64], float]:
    """Solve the continuous problem exactly; assumes ``0 < S <= sum(u)``."""
    q = gamma > 0
    lin = ~q
    # Events of f(lam) = sum_t x_t(lam): slope changes and jumps, by position.
    inv = np.where(q, 1.0 / np.where(q, 2.0 * gamma, 1.0), 0.0)
    pos = np.concatenate([beta[q], (beta + 2.0 * gamma * u)[q & np.isfinite(u)], beta[lin]])
    dslope = np.concatenate([inv[q], -inv[q & np.isfinite(u)], np.zeros(int(lin.sum()))])
    jump = np.concatenate(
        [np.zeros(int(q.sum())), np.zeros(int((q & np.isfinite(u)).sum())), u[lin]]
    )
    order = np.argsort(pos, kind="stable")
    pos, dslope, jump = pos[order], dslope[order], jump[order]
    # Merge equal positions so each breakpoint is evaluated once.
    uniq, first = np.unique(pos, return_index=True)
    ds = np.add.reduceat(dslope, first)
    dj = np.add.reduceat(jump, first)
    slope_after = np.cumsum(ds)  # slope on (p_i, p_{i+1})
    gaps = np.diff(uniq)
    with np.errstate(invalid="ignore"):
        ramp = np.concatenate(([0.0], np.cumsum(slope_after[:-1] * gaps)))
    cum_jump = np.cumsum(dj)
    f_right = ramp + cum_jump  # f(p_i+)
    f_left = f_right - dj  # f(p_i-)
    i = int(np.searchsorted(f_right, S, side="left"))
    if i == len(uniq):
        # Beyond the last breakpoint f grows with the final slope (> 0, or S was infeasible).
        lam = float(uniq[-1] + (S - f_right[-1]) / slope_after[-1])
    elif f_left[i] >= S:
        lam = float(uniq[i - 1] + (S - f_right[i - 1]) / slope_after[i - 1]) if i > 0 else uniq[0]
        lam = min(lam, float(uniq[i]))
    else:
        lam = float(uniq[i])  # S falls in the jump of linear periods priced exactly lam
    x = _x_of_lam(lam, beta, gamma, u)
    ties = lin & (beta == lam)
    rest = S - float(x.sum())
    if ties.any() and rest > 0:
        cap = u[ties]
        if np.all(np.isfinite(cap)):
            x[ties] = cap * (rest / cap.sum())
        else:
            share = np.where(np.isfinite(cap), 0.0, 1.0)
            x[ties] = share * (rest / share.sum())
    # Round-off: put the residual on the period with the most room (never past a bound).
    resid = S - float(x.sum())
    if resid != 0.0:
        room = (u - x) if resid > 0 else x
        j = int(np.argmax(room))
        x[j] += np.sign(resid) * min(abs(resid), room[j])
    return x, lam


def _round_lots(
    x: NDArray[np.float64],
    beta: NDArray[np.float64],
    gamma: NDArray[np.float64],
    u: NDArray[np.float64],
    S: float,
    lot: int,
) -> NDArray[np.float64]:
    """Return the exact integer-lot optimum near the continuous one; sums to ``S`` exactly."""
    total_lots, odd = divmod(round(S), lot)
    cap_lots = np.where(np.isfinite(u), np.floor(u / lot + 1e-9), np.inf)
    n = np.minimum(np.floor(x / lot + 1e-9), cap_lots)
    need = total_lots - int(n.sum())
    L = float(lot)

    def inc(t: int) -> float:  # cost of one more lot in period t
        return float(beta[t] * L + gamma[t] * L * L * (2.0 * n[t] + 1.0))

    heap = [(inc(t), t) for t in range(len(x)) if n[t] < cap_lots[t]]
    heapq.heapify(heap)
    while need > 0 and heap:
        _, t = heapq.heappop(heap)
        n[t] += 1
        need -= 1
        if n[t] < cap_lots[t]:
            heapq.heappush(heap, (inc(t), t))
    shares = n * L
    if odd:
        shares = _place_odd_lot(shares, beta, gamma, u, float(odd), L)
    return shares


def _place_odd_lot(
    shares: NDArray[np.float64],
    beta: NDArray[np.float64],
    gamma: NDArray[np.float64],
    u: NDArray[np.float64],
    r: float,
    L: float,
) -> NDArray[np.float64]:
    """Add the odd lot ``r < L`` to the lot-optimal ``shares`` at least cost.

    Putting ``r`` in period j shifts j's cost by less than a lot, so the lot optimum moves by at
    most one lot out of j into the cheapest other period: both options are priced for every j.
    """

    def g(t: NDArray[np.float64] | slice, y: NDArray[np.float64]) -> NDArray[np.float64]:
        return beta[t] * y + gamma[t] * y * y

    idx = slice(None)
    base = g(idx, shares)
    # Option A: r on top of j's lots.
    a = np.where(shares + r <= u, g(idx, shares + r) - base, np.inf)
    # Option B: r in j, one of j's lots moved to the cheapest other period k.
    inc = np.where(shares + L <= u, g(idx, shares + L) - base, np.inf)
    order = np.argsort(inc)
    best, second = order[0], order[1] if len(order) > 1 else order[0]
    inc_other = np.where(np.arange(len(shares)) == best, inc[second], inc[best])
    b = np.where(shares >= L, g(idx, shares - L + r) - base + inc_other, np.inf)
    j = int(np.argmin(np.minimum(a, b)))
    out = shares.copy()
    if a[j] <= b[j]:
        out[j] += r
    else:
        k = int(second if j == best else best)
        out[j] += r - L
        out[k] += L
    return out


def solve_quadratic(
    beta: ArrayLike,
    gamma: ArrayLike,
    S: float,
    caps: ArrayLike | None = None,
    lot: int | None = None,
) -> SolveResult:
    """Allocate ``S`` shares over H periods with quadratic costs, exactly.

    Args:
        beta: Linear cost per period, shape (H,), >= 0, currency per share.
        gamma: Quadratic cost per period, shape (H,), >= 0, currency per share squared.
        S: Shares to allocate, >= 0 (a whole number when ``lot`` is given).
        caps: Per-period caps u_t, shape (H,), >= 0; None means no cap.
        lot: Lot size in shares; None solves the continuous problem.

    Returns:
        The schedule. ``INFEASIBLE`` when the caps sum below ``S`` (``x`` is then the caps, the
        best partial schedule) and ``NUMERICAL`` for invalid input (NaN, negative parameters).
    """
    b = np.asarray(beta, dtype=np.float64).ravel()
    g = np.asarray(gamma, dtype=np.float64).ravel()
    H = b.size
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, dtype=np.float64).ravel()
    if H == 0 or g.size != H or u.size != H:
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"shape mismatch: beta {b.size}, gamma {g.size}, caps {u.size}",
        )
    bad = ~np.isfinite(b) | ~np.isfinite(g) | (b < 0) | (g < 0) | np.isnan(u) | (u < 0)
    if bad.any() or not math.isfinite(S) or S < 0:
        t = int(np.flatnonzero(bad)[0]) if bad.any() else -1
        where = f"period {t}: beta={b[t]}, gamma={g[t]}, cap={u[t]}" if t >= 0 else f"S={S}"
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"invalid input ({where}); need finite beta, gamma >= 0, caps >= 0",
        )
    cap_total = float(u.sum())
    if cap_total < S:
        x = u.copy()
        return SolveResult(
            x,
            quadratic_cost(x, b, g),
            math.nan,
            SolveStatus.INFEASIBLE,
            f"caps sum to {cap_total:g} < S = {S:g}: short by {S - cap_total:g}",
        )
    if S == 0:
        return SolveResult(np.zeros(H), 0.0, math.nan, SolveStatus.OPTIMAL, "nothing to allocate")
    x, lam = _waterfill(b, g, u, float(S))
    if lot is not None:
        if lot < 1 or round(S) != S:
            return SolveResult(
                x,
                quadratic_cost(x, b, g),
                lam,
                SolveStatus.NUMERICAL,
                f"lot must be >= 1 and S whole, got lot={lot}, S={S}",
            )
        if float(np.floor(u / lot + 1e-9).sum()) * lot + (round(S) % lot) < S:
            return SolveResult(
                x,
                quadratic_cost(x, b, g),
                lam,
                SolveStatus.INFEASIBLE,
                f"caps hold fewer than {round(S) // lot} whole lots of {lot}",
            )
        x = _round_lots(x, b, g, u, float(S), int(lot))
    return SolveResult(x, quadratic_cost(x, b, g), lam, SolveStatus.OPTIMAL, "exact")
