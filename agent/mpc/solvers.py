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

Speed: the MPC re-solves at every decision, so the strictly convex quadratic cases (uncapped,
and capped by a participation cap) run as compiled loops (``agent.accel``: numba) when numba is
installed, and as a few numpy calls otherwise; both give the KKT point above, and the numpy
path is the reference the tests compare the kernels with.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent import accel
from agent.accel import pairwise_sum, sum_block
from agent.mpc.costs import CostSet, PiecewiseLinearCost, QuadraticCost

__all__ = [
    "SolveResult",
    "SolveStatus",
    "bounded_result",
    "quadratic_cost",
    "round_largest_remainder",
    "round_to_lots",
    "solve_auto",
    "solve_kkt",
    "solve_piecewise_linear",
    "solve_quadratic",
]


class SolveStatus(enum.StrEnum):
    """Outcome of a solve."""

    OPTIMAL = "optimal"
    # A schedule meeting every constraint but not proven optimal (a rounding of a continuous
    # optimum): the message gives its gap to a proven lower bound.
    FEASIBLE = "feasible"
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


_set_x, _set_cost, _set_lam, _set_status, _set_message, _set_n_iter = (
    getattr(SolveResult, f).__set__ for f in ("x", "cost", "lam", "status", "message", "n_iter")
)


_new = object.__new__
_OPTIMAL = SolveStatus.OPTIMAL


def _optimal(x: NDArray[np.float64], cost: float, lam: float, message: str) -> SolveResult:
    """Return ``SolveResult(x, cost, lam, OPTIMAL, message)``, built through its slots.

    The same object; a frozen dataclass's ``__init__`` sets each field by
    ``object.__setattr__`` and costs about as much as the compiled solve itself.
    """
    r = _new(SolveResult)
    _set_x(r, x)
    _set_cost(r, cost)
    _set_lam(r, lam)
    _set_status(r, _OPTIMAL)
    _set_message(r, message)
    _set_n_iter(r, 0)
    return r


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
    """Solve the continuous problem exactly; assumes ``0 < S <= sum(u)``.

    The multiplier from running sums over the sorted breakpoints (a few array passes); when the
    plan it gives misses S by more than round-off, from f evaluated at the breakpoints term by
    term instead (``_lam_direct``): the running sum of slope changes cancels (+1/(2 gamma) at
    beta, -1/(2 gamma) at the cap), and with one almost linear period (1/gamma ~1e21) loses
    every other period's slope to rounding.
    """
    q = gamma > 0
    lin = ~q
    # Where f(lam) = sum_t x_t(lam) bends or jumps: each beta, and each capped period's top.
    inv = np.where(q, 1.0 / np.where(q, 2.0 * gamma, 1.0), 0.0)
    fin = q & np.isfinite(u)  # (0 * inf would be NaN on a linear period without a cap)
    pos = np.concatenate([beta[q], beta[fin] + 2.0 * gamma[fin] * u[fin], beta[lin]])
    lam = _lam_running(pos, inv, q, fin, lin, u, S)
    x = _x_at(lam, beta, gamma, u, lin, S)
    if not abs(S - float(x.sum())) <= _ROUNDOFF * S:
        lam = _lam_direct(np.unique(pos), beta, gamma, u, inv, q, lin, S)
        x = _x_at(lam, beta, gamma, u, lin, S)
    _fix_residual(x, u, S, gamma, beta, lam)
    return x, lam


def _lam_running(
    pos: NDArray[np.float64],
    inv: NDArray[np.float64],
    q: NDArray[np.bool_],
    fin: NDArray[np.bool_],
    lin: NDArray[np.bool_],
    u: NDArray[np.float64],
    S: float,
) -> float:
    """Return the multiplier from running sums of f's slope changes and jumps."""
    dslope = np.concatenate([inv[q], -inv[fin], np.zeros(int(lin.sum()))])
    jump = np.concatenate([np.zeros(int(q.sum())), np.zeros(int(fin.sum())), u[lin]])
    order = np.argsort(pos, kind="stable")
    pos, dslope, jump = pos[order], dslope[order], jump[order]
    # Merge equal positions so each breakpoint is evaluated once.
    uniq, first = np.unique(pos, return_index=True)
    ds = np.add.reduceat(dslope, first)
    dj = np.add.reduceat(jump, first)
    slope_after = np.cumsum(ds)  # slope on (p_i, p_{i+1})
    gaps = np.diff(uniq)
    # An uncapped linear period jumps by inf: inf - inf is NaN there, and a NaN f_left fails
    # the test below, which is right (S then falls in that jump).
    with np.errstate(invalid="ignore"):
        ramp = np.concatenate(([0.0], np.cumsum(slope_after[:-1] * gaps)))
        cum_jump = np.cumsum(dj)
        f_right = ramp + cum_jump  # f(p_i+)
        f_left = f_right - dj  # f(p_i-)
    i = int(np.searchsorted(f_right, S, side="left"))
    if i == len(uniq):
        # Beyond the last breakpoint f grows with the final slope; with none left (every
        # period at its cap, S == sum(u) up to rounding) the last breakpoint is the answer.
        s_end = float(slope_after[-1])
        return float(uniq[-1] + (S - f_right[-1]) / s_end) if s_end > 0 else float(uniq[-1])
    if f_left[i] >= S:
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (
                float(uniq[i - 1] + (S - f_right[i - 1]) / slope_after[i - 1])
                if i > 0
                else float(uniq[0])
            )
        return min(lam, float(uniq[i]))
    return float(uniq[i])  # S falls in the jump of linear periods priced exactly lam


def _lam_direct(
    uniq: NDArray[np.float64],
    beta: NDArray[np.float64],
    gamma: NDArray[np.float64],
    u: NDArray[np.float64],
    inv: NDArray[np.float64],
    q: NDArray[np.bool_],
    lin: NDArray[np.bool_],
    S: float,
) -> float:
    """Return the multiplier with f evaluated at the breakpoints ``uniq`` term by term and
    each segment's slope summed over the periods inside it (no running sum to cancel)."""

    def f_at(lam: float) -> tuple[float, float]:  # f(lam+) and f(lam-)
        x = _x_of_lam(lam, beta, gamma, u)
        at = lin & (beta == lam)
        return float(x.sum() + u[at].sum()), float(x.sum())

    def slope_after(lam: float) -> float:  # on (lam, next breakpoint)
        inside = q & (beta <= lam) & (beta + 2.0 * gamma * u > lam)
        return float(inv[inside].sum())

    lo, hi = 0, len(uniq)  # the first breakpoint with f(p+) >= S (len(uniq): none)
    while lo < hi:
        mid = (lo + hi) // 2
        if f_at(float(uniq[mid]))[0] >= S:
            hi = mid
        else:
            lo = mid + 1
    i = lo
    with np.errstate(invalid="ignore"):
        if i == len(uniq):
            p_end = float(uniq[-1])
            s_end = slope_after(p_end)
            return p_end + (S - f_at(p_end)[0]) / s_end if s_end > 0 else p_end
        if f_at(float(uniq[i]))[1] >= S:
            if i == 0:
                return float(uniq[0])
            p_prev = float(uniq[i - 1])
            s_prev = slope_after(p_prev)
            lam = p_prev + (S - f_at(p_prev)[0]) / s_prev if s_prev > 0 else float(uniq[i])
            return min(lam, float(uniq[i]))
        return float(uniq[i])


def _x_at(
    lam: float,
    beta: NDArray[np.float64],
    gamma: NDArray[np.float64],
    u: NDArray[np.float64],
    lin: NDArray[np.bool_],
    S: float,
) -> NDArray[np.float64]:
    """Return x(lam), the linear periods priced exactly lam sharing what the rest leaves."""
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
    return x


_F64 = np.dtype(np.float64)
_sum = np.add.reduce
_min = np.minimum.reduce
_max = np.maximum.reduce
_dot = np.dot
_less = np.less
_count = np.count_nonzero
# Newton steps on lam the fast path takes before it sorts instead (each is O(H); an MPC
# re-solve needs 1 to 4, an adversarial instance up to H).
_NEWTON_STEPS = 8
_NOTHING = "nothing to allocate"
# Up to this many periods the fast path runs in Python floats (measured faster than numpy).
_SMALL_H = 8
# The most a fast path's plan may miss S by, relative, and still be put right on one period as
# round-off (a well-conditioned plan misses by H ulps or so). More means the multiplier itself
# is off: a period whose 1/gamma dwarfs the others' (gamma ~1e-22, an almost linear book) pins
# lam to its beta within rounding, and a lam computed a few ulps below that beta drops the
# period and prices the rest alone. The breakpoint solve (``_waterfill``) handles that exactly.
_ROUNDOFF = 1e-10


def _is_roundoff(resid: float, S: float, lam: float, g_j: float, d: float) -> bool:
    """Return True when putting ``d`` of a plan's miss ``resid`` on one period (``g_j``: its
    gamma) puts the plan right: the miss within ``_ROUNDOFF`` of S, or all of it taken by a
    period whose marginal cost it moves by under 1e-9 of ``lam`` (an almost linear period,
    where a few ulps of lam are many shares)."""
    if abs(resid) <= _ROUNDOFF * S:
        return True
    return d == resid and 2.0 * g_j * abs(d) <= 1e-9 * abs(lam)


def _waterfill_uncapped_np(
    b: NDArray[np.float64], g: NDArray[np.float64], S: float
) -> SolveResult | None:
    """Solve the uncapped, strictly convex case (every ``gamma_t > 0``) in a few array passes.

    The MPC's common case, on its per-decision path, where the cost is numpy's per-call
    overhead rather than the arithmetic: every pass here is one numpy call. With the periods
    that trade (``A``), ``lam = (S + sum_A beta_t/(2 gamma_t)) / sum_A 1/(2 gamma_t)``. When every
    period has ``beta_t < lam`` (the usual case) that is the KKT point with ``A`` all periods.
    Otherwise Newton's method on ``f(lam) = sum_t max(0, lam - beta_t)/(2 gamma_t) = S`` from
    that first ``lam`` (an upper bound: f is convex) only lowers ``lam`` and drops periods,
    and stops when the set ``{beta_t < lam}`` no longer changes: then ``lam`` is its KKT point
    exactly. If it takes more than a few steps, ``_sorted_kkt`` finds ``A`` after one sort. The
    same point ``_waterfill`` finds from all the breakpoints. Returns None (the general path
    decides) for input outside this case or S < 0.
    """
    if not 0 <= S < math.inf:
        return None
    if b.size <= _SMALL_H:
        return _waterfill_small(b, g, S)
    # Direct ufunc calls: ndarray.sum/min/max add a Python-level wrapper per call. g > 0 first
    # (no division warning); a NaN fails every comparison; b = inf makes lam inf.
    if not (_min(g) > 0 and _min(b) >= 0):
        return None  # a linear period, a negative or NaN parameter: the general path says
    if S == 0:
        if not (_max(g) < math.inf and _max(b) < math.inf):
            return None
        return _optimal(np.zeros(b.size), 0.0, math.nan, _NOTHING)
    inv = 0.5 / g
    A = float(_sum(inv))
    if not A > 0:  # every gamma inf
        return None
    lam = (S + float(_dot(b, inv))) / A
    if not lam < math.inf:
        return None
    x = lam - b
    x *= inv
    # x > 0 everywhere: every period trades (beta_t < lam) and no gamma_t is inf (inv_t > 0).
    if not _min(x) > 0:
        if not _max(g) < math.inf:
            return None
        H = b.size
        M = np.empty((2, H))  # sum_A 1/(2 gamma_t) and sum_A beta_t/(2 gamma_t) in one product
        M[0] = inv
        np.multiply(b, inv, out=M[1])
        n = H
        for _ in range(_NEWTON_STEPS):
            on = _less(b, lam)  # the periods priced below lam
            n_on = int(_count(on))
            if n_on == n:  # nested sets {beta < lam}: same count, same set: the KKT point
                break
            if n_on == 0:  # lam rounded onto the cheapest beta (1/gamma beyond float range)
                return None
            n = n_on
            A, B = _dot(M, on).tolist()
            lam = (S + B) / A
        else:
            lam = _sorted_kkt(b, inv, S)
        x = lam - b
        np.maximum(x, 0.0, out=x)
        x *= inv
    sx = float(_sum(x))
    # On a period that trades g_t x_t = (lam - beta_t) / 2: its cost is x_t (lam + beta_t) / 2.
    cost = 0.5 * (lam * sx + float(_dot(b, x)))
    resid = S - sx
    if resid != 0.0:  # round-off: on a period that trades (priced at lam, room unbounded),
        # period 0 when that moves its marginal cost by under 1e-9 relative, else the largest
        j = 0 if float(x[0]) * 1e-9 > abs(resid) else int(np.argmax(x))
        xj = float(x[j])
        d = max(resid, -xj)
        if not _is_roundoff(resid, S, lam, float(g[j]), d):  # lam is off (see _ROUNDOFF)
            return None
        cost += d * (float(b[j]) + float(g[j]) * (2.0 * xj + d))
        x[j] = xj + d
    return _optimal(x, cost, lam, "exact")


def _waterfill_small(
    b: NDArray[np.float64], g: NDArray[np.float64], S: float
) -> SolveResult | None:
    """``_waterfill_uncapped_np`` in Python floats, for the few periods left near a deadline.

    Below about eight periods a numpy call costs more than its loop in Python does: the
    same checks, the same Newton steps on the set ``{beta_t < lam}``, the same round-off rule.
    """
    bl, gl = b.tolist(), g.tolist()
    inv = []
    A = B = 0.0
    for bt, gt in zip(bl, gl, strict=True):
        if not (0.0 < gt < math.inf and 0.0 <= bt < math.inf):  # NaN fails both
            return None
        v = 0.5 / gt
        inv.append(v)
        A += v
        B += bt * v
    if S == 0:
        return _optimal(np.zeros(len(bl)), 0.0, math.nan, _NOTHING)
    lam = (S + B) / A
    n = len(bl)
    for _ in range(n + 1):  # each step drops a period
        on = [t for t, bt in enumerate(bl) if bt < lam]
        if len(on) == n:
            break
        if not on:
            return None
        n = len(on)
        A = sum([inv[t] for t in on])
        lam = (S + sum([bl[t] * inv[t] for t in on])) / A
    else:
        return None
    if not lam < math.inf:
        return None
    x = [(lam - bt) * v if bt < lam else 0.0 for bt, v in zip(bl, inv, strict=True)]
    xa = np.array(x)
    sx = float(_sum(xa))  # numpy's summation, so that x.sum() == S holds as on the numpy path
    cost = 0.5 * (lam * sx + sum([bt * xt for bt, xt in zip(bl, x, strict=True)]))
    resid = S - sx
    if resid != 0.0:  # the rule of _waterfill_uncapped_np
        j = 0 if x[0] * 1e-9 > abs(resid) else max(range(len(x)), key=x.__getitem__)
        d = max(resid, -x[j])
        if not _is_roundoff(resid, S, lam, gl[j], d):  # lam is off (see _ROUNDOFF)
            return None
        cost += d * (bl[j] + gl[j] * (2.0 * x[j] + d))
        xa[j] = x[j] + d
    return _optimal(xa, cost, lam, "exact")


def _sorted_kkt(b: NDArray[np.float64], inv: NDArray[np.float64], S: float) -> float:
    """Return the uncapped KKT multiplier from one sort by beta (``inv = 1/(2 gamma)``).

    With the k cheapest periods trading, ``lam_k = (S + B_k) / A_k`` (prefix sums). ``lam_k``
    only falls while the next period's beta is below it, so the first k whose successor is
    priced at or above ``lam_k`` is the one.
    """
    order = np.argsort(b, kind="stable")
    bs = b[order]
    iv = inv[order]
    lam_k = np.cumsum(bs * iv)
    lam_k += S
    lam_k /= np.cumsum(iv)
    stop = lam_k[:-1] <= bs[1:]
    k = int(np.argmax(stop)) if stop.any() else b.size - 1
    return float(lam_k[k])


def _waterfill_capped_np(
    b: NDArray[np.float64], g: NDArray[np.float64], u: NDArray[np.float64], S: float
) -> SolveResult | None:
    """Solve the capped, strictly convex case (every ``gamma_t > 0``) from one sort.

    The MPC under a participation cap; ``_waterfill``'s method in fewer numpy calls.
    ``f(lam) = sum_t clip((lam - beta_t)/(2 gamma_t), 0, u_t)`` is piecewise linear: its slope
    rises by ``1/(2 gamma_t)`` at ``beta_t`` and falls back at ``beta_t + 2 gamma_t u_t`` (the
    cap). Sorting those events gives the slope between them and f at each (prefix sums); lam is
    where f reaches S, by one search. Returns None (the general path decides) for input outside
    this case, S = 0, or caps that cannot hold more than S (f has no slope left at S).
    """
    if not 0 < S < math.inf:
        return None
    if not (_min(g) > 0 and _max(g) < math.inf and _min(b) >= 0 and _max(b) < math.inf):
        return None  # a linear period, NaN, a negative parameter: the general path says
    if not _min(u) >= 0:
        return None
    inv = 0.5 / g
    top = g * u  # where a period reaches its cap: lam = beta_t + 2 gamma_t u_t
    top += top
    top += b
    fin = _less(top, math.inf)
    if _count(fin) == b.size:  # every cap finite (a participation cap): no filtering
        pos = np.concatenate((b, top))
        slope = np.concatenate((inv, np.negative(inv)))
    else:
        pos = np.concatenate((b, top[fin]))
        slope = np.concatenate((inv, np.negative(inv[fin])))
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    slope = slope[order]
    np.cumsum(slope, out=slope)  # f's slope on (pos_i, pos_i+1)
    f_at = np.diff(pos)
    f_at *= slope[:-1]
    np.cumsum(f_at, out=f_at)  # f(pos_i+1)
    i = int(np.searchsorted(f_at, S))  # f(pos_i) < S <= f(pos_i+1)
    s_i = float(slope[i])
    if not s_i > 0:  # S at or past f's last value: infeasible, or every period at its cap
        return None
    lam = float(pos[i]) + (S - (float(f_at[i - 1]) if i else 0.0)) / s_i
    x = lam - b
    x *= inv
    np.maximum(x, 0.0, out=x)
    np.minimum(x, u, out=x)
    resid = S - float(_sum(x))
    if resid != 0.0:
        # Round-off: on the period strictly between its bounds (priced at lam, so the cost
        # moves by resid * lam) with the most room (the largest, to take back); without one,
        # the most room (the largest) anywhere. (Room alone could pick an uncapped period
        # priced far above lam: with tiny S and large 1/gamma that costs 1e-6 of the total.)
        room = u - x if resid > 0.0 else x.copy()
        inside = _less(0.0, x) & _less(x, u)
        if inside.any():
            room[~inside] = -1.0
        j = int(np.argmax(room))
        xj = float(x[j])
        d = min(resid, float(u[j]) - xj) if resid > 0.0 else -min(-resid, xj)
        if not _is_roundoff(resid, S, lam, float(g[j]), d):  # lam is off (see _ROUNDOFF)
            return None
        x[j] = xj + d
    return _optimal(x, float(_dot(x, b + g * x)), lam, "exact")


# --- compiled kernels (agent.accel): the fast paths above as plain loops -----------------------
#
# The numpy fast paths pay about a dozen numpy calls per solve (1.5 to 2.7 us each on a busy
# machine); these loops do the same arithmetic in machine code, in one call. Each kernel writes
# the plan into ``x`` and returns ``(lam, cost, code)``; ``code`` is ``_SOLVED``, ``_NONE``
# (nothing to allocate: x is zeros) or ``_OUTSIDE`` (input outside the case: the general path
# decides, as when a numpy fast path returns None). Without numba (or with EXEC_AGENT_JIT=0)
# they are not used and the numpy paths run unchanged.

_SOLVED, _NONE, _OUTSIDE = 0, 1, 2
# Safeguarded Newton steps a kernel takes before it sorts instead (an MPC re-solve needs 1 to 4)
_KERNEL_STEPS = 24


def _helper(fn: Callable[..., Any], signature: str) -> Callable[..., Any]:
    """Return a helper of the kernels compiled, or ``fn`` itself when kernels are off."""
    return accel.compiled(fn, signature) or fn


def _psum_py(a: NDArray[np.float64]) -> float:
    """Return ``a.sum()`` bit for bit (numpy's pairwise summation).

    So a plan whose round-off was put back sums to S under numpy's summation too. Up to about
    500 entries (two levels of numpy's splits) without the stack of ``accel.pairwise_sum``.
    """
    n = a.size
    if n <= 128:
        return float(sum_block(a, 0, n))
    total = 0.0
    n2 = n // 2
    n2 -= n2 % 8
    for lo, m in ((0, n2), (n2, n - n2)):
        if m <= 128:
            part = sum_block(a, lo, m)
        else:
            m2 = m // 2
            m2 -= m2 % 8
            if m - m2 <= 128:
                part = sum_block(a, lo, m2) + sum_block(a, lo + m2, m - m2)
            else:
                part = pairwise_sum(a, lo, m)
        total = part if lo == 0 else total + part
    return float(total)


_psum = _helper(_psum_py, "float64(float64[::1])")


def _put_back_py(
    b: NDArray[np.float64],
    g: NDArray[np.float64],
    S: float,
    lam: float,
    x: NDArray[np.float64],
    bx: float,
) -> float:
    """Return the plan's cost after putting the round-off ``S - sum(x)`` back on one period
    (NaN, with ``x`` unchanged, when the miss is more than round-off: ``_is_roundoff``).

    The rule of ``_waterfill_uncapped_np``: period 0 when that moves its marginal cost by under
    1e-9 relative, else the largest; on a period that trades ``g_t x_t = (lam - beta_t) / 2``,
    so the cost is ``(lam sum(x) + sum(beta_t x_t)) / 2`` (``bx``: that last sum).
    """
    H = b.size
    sx = _psum(x)
    cost = 0.5 * (lam * sx + bx)
    resid = S - sx
    if resid != 0.0:
        j = 0
        if not x[0] * 1e-9 > abs(resid):
            for t in range(1, H):
                if x[t] > x[j]:
                    j = t
        xj = x[j]
        d = max(resid, -xj)
        # _is_roundoff's test: a miss lam's rounding does not explain means lam is off
        if not (
            abs(resid) <= _ROUNDOFF * S or (d == resid and 2.0 * g[j] * abs(d) <= 1e-9 * abs(lam))
        ):
            return math.nan
        cost += d * (b[j] + g[j] * (2.0 * xj + d))
        x[j] = xj + d
    return float(cost)


_put_back = _helper(
    _put_back_py,
    "float64(float64[::1], float64[::1], float64, float64, float64[::1], float64)",
)


def _sorted_lam_py(b: NDArray[np.float64], g: NDArray[np.float64], S: float) -> float:
    """``_sorted_kkt`` as a loop: the uncapped multiplier from one (stable) sort by beta."""
    H = b.size
    order = np.argsort(b, kind="mergesort")
    A = 0.0
    B = 0.0
    lam = 0.0
    for k in range(H):
        t = order[k]
        v = 0.5 / g[t]
        B += b[t] * v
        A += v
        lam = (B + S) / A
        if k == H - 1 or lam <= b[order[k + 1]]:
            break
    return lam


_sorted_lam = _helper(_sorted_lam_py, "float64(float64[::1], float64[::1], float64)")


def _below_sums_py(
    b: NDArray[np.float64], inv: NDArray[np.float64], lam: float, idx: NDArray[np.int64], n: int
) -> tuple[float, float, int, float]:
    """Return ``(sum inv_t, sum beta_t inv_t, count, max beta_t)`` over the periods ``idx[:n]``
    priced below ``lam``, and keep only those in ``idx`` (in order): lam only falls, so a
    period priced at or above it never trades again and the next step scans only the rest."""
    A = 0.0
    B = 0.0
    top = -math.inf
    m = 0
    for i in range(n):
        t = idx[i]
        bt = b[t]
        if bt < lam:
            v = inv[t]
            A += v
            B += bt * v
            top = max(top, bt)
            idx[m] = t
            m += 1
    return A, B, m, top


_below_sums = _helper(
    _below_sums_py,
    "Tuple((float64, float64, int64, float64))"
    "(float64[::1], float64[::1], float64, int64[::1], int64)",
)


def _wf_uncapped_py(
    b: NDArray[np.float64], g: NDArray[np.float64], S: float, x: NDArray[np.float64]
) -> tuple[float, float, int]:
    """``_waterfill_uncapped_np`` as loops: Newton on lam over the set ``{beta_t < lam}``.

    From ``lam = (S + sum beta_t/(2 gamma_t)) / sum 1/(2 gamma_t)`` over every period, each step
    keeps the periods priced below lam and re-solves; lam only falls and the set only shrinks,
    and when every period of the set is still priced below the new lam the set no longer
    changes: lam is the KKT point exactly (the numpy path's stop, seen one pass earlier from
    the set's dearest beta). After ``_KERNEL_STEPS`` steps one sort by beta finds it instead.
    ``x`` holds ``1/(2 gamma_t)`` until the last pass.
    """
    nan = math.nan
    H = b.size
    if H == 0 or g.size != H or x.size != H or not 0.0 <= S < math.inf:
        return nan, nan, _OUTSIDE
    A = 0.0
    B = 0.0
    top = -math.inf
    for t in range(H):
        bt = b[t]
        gt = g[t]
        if not (0.0 < gt < math.inf and 0.0 <= bt < math.inf):  # NaN fails both
            return nan, nan, _OUTSIDE
        v = 0.5 / gt
        x[t] = v
        A += v
        B += bt * v
        top = max(top, bt)
    if S == 0.0:
        for t in range(H):
            x[t] = 0.0
        return nan, 0.0, _NONE
    lam = (S + B) / A
    if not lam < math.inf:
        return nan, nan, _OUTSIDE
    if not top < lam:  # some period priced at or above lam: Newton steps
        n = H
        idx = np.arange(H)
        for _ in range(_KERNEL_STEPS):
            A, B, n, top = _below_sums(b, x, lam, idx, n)
            if n == 0:  # lam rounded onto the cheapest beta (1/gamma beyond float range)
                return nan, nan, _OUTSIDE
            lam = (S + B) / A
            if top < lam:  # the set keeps every period at the new lam: the KKT point
                break
        else:
            lam = _sorted_lam(b, g, S)
    bx = 0.0
    for t in range(H):
        d = lam - b[t]
        xt = d * x[t] if d > 0.0 else 0.0
        x[t] = xt
        bx += b[t] * xt
    cost = _put_back(b, g, S, lam, x, bx)
    if math.isnan(cost):  # the plan missed S by more than round-off: the general path
        return nan, nan, _OUTSIDE
    return lam, cost, _SOLVED


_wf_uncapped_c = accel.compiled(
    _wf_uncapped_py,
    "Tuple((float64, float64, int64))(float64[::1], float64[::1], float64, float64[::1])",
)


def _sorted_capped_lam_py(
    b: NDArray[np.float64], g: NDArray[np.float64], u: NDArray[np.float64], S: float
) -> float:
    """``_waterfill_capped_np``'s sort as a loop: lam where f reaches S (NaN: it never does).

    The same events (slope up ``1/(2 gamma_t)`` at ``beta_t``, down at ``beta_t + 2 gamma_t u_t``),
    the same stable order and the same prefix sums, so the same lam to the last bit.
    """
    H = b.size
    nf = 0
    for t in range(H):
        if g[t] * u[t] < math.inf:
            nf += 1
    pos = np.empty(H + nf)
    slope = np.empty(H + nf)
    k = H
    for t in range(H):
        v = 0.5 / g[t]
        pos[t] = b[t]
        slope[t] = v
        top = g[t] * u[t]
        top += top
        top += b[t]
        if top < math.inf:
            pos[k] = top
            slope[k] = -v
            k += 1
    order = np.argsort(pos, kind="mergesort")
    m = H + nf
    s = 0.0
    f = 0.0  # f at the current event
    for i in range(m):
        s += slope[order[i]]  # f's slope on (pos_i, pos_i+1)
        p = pos[order[i]]
        if i + 1 < m:
            f_next = f + (pos[order[i + 1]] - p) * s
            if not f_next < S:  # f(pos_i) < S <= f(pos_i+1)
                return p + (S - f) / s if s > 0.0 else math.nan
            f = f_next
        else:
            return p + (S - f) / s if s > 0.0 else math.nan
    return math.nan


_sorted_capped_lam = _helper(
    _sorted_capped_lam_py, "float64(float64[::1], float64[::1], float64[::1], float64)"
)


def _wf_capped_py(
    b: NDArray[np.float64],
    g: NDArray[np.float64],
    u: NDArray[np.float64],
    S: float,
    x: NDArray[np.float64],
) -> tuple[float, float, int]:
    """``_waterfill_capped_np`` as loops, by a safeguarded Newton method on lam before any sort.

    At a trial lam every period is below (``lam <= beta_t``: 0), capped (``lam >= beta_t +
    2 gamma_t u_t``: ``u_t``) or inside; f is linear on the interval [L, R] of lams that keep
    that split, so the lam where that line reaches S, if it falls in [L, R], is the exact
    root. Otherwise the split's whole interval leaves the bracket [lo, hi] around the root
    and the next trial is that lam when inside the bracket, else the bracket's midpoint; no
    interval is tried twice. After ``_KERNEL_STEPS`` trials the events are sorted instead.
    """
    nan = math.nan
    inf = math.inf
    H = b.size
    if H == 0 or g.size != H or u.size != H or x.size != H or not 0.0 < S < inf:
        return nan, nan, _OUTSIDE
    A = 0.0
    B = 0.0
    for t in range(H):
        bt = b[t]
        gt = g[t]
        if not (0.0 < gt < inf and 0.0 <= bt < inf and u[t] >= 0.0):  # NaN fails
            return nan, nan, _OUTSIDE
        v = 0.5 / gt
        A += v
        B += bt * v
    lam = (S + B) / A  # the uncapped point if every period traded: a first trial
    lo = -inf
    hi = inf
    found = False
    for _ in range(_KERNEL_STEPS):
        C = 0.0
        A = 0.0
        B = 0.0
        L = -inf
        R = inf
        for t in range(H):
            bt = b[t]
            if lam <= bt:
                R = min(R, bt)
                continue
            top = g[t] * u[t]
            top += top
            top += bt
            if lam >= top:
                C += u[t]
                L = max(L, top)
            else:
                v = 0.5 / g[t]
                A += v
                B += bt * v
                L = max(L, bt)
                R = min(R, top)
        if A > 0.0:
            new = (S - C + B) / A
            if L <= new <= R:
                lam = new
                found = True
                break
        elif C == S:  # f is flat at S here: the root's left end, where the sort finds it
            lam = L
            found = True
            break
        else:
            new = inf if C < S else -inf
        if new > R:
            lo = max(lo, R)
        else:
            hi = min(hi, L)
        if lo < new < hi:
            lam = new
        elif lo > -inf and hi < inf and lo < 0.5 * (lo + hi) < hi:
            lam = 0.5 * (lo + hi)
        else:
            break
    if not found:
        lam = _sorted_capped_lam(b, g, u, S)
        if math.isnan(lam):  # NaN: the caps cannot take more than S (f has no slope left)
            return nan, nan, _OUTSIDE
    sx_cost = 0.0
    for t in range(H):
        xt = (lam - b[t]) * (0.5 / g[t])
        xt = min(max(xt, 0.0), u[t])
        x[t] = xt
    resid = S - _psum(x)
    if resid != 0.0:
        # Round-off: the rule of _waterfill_capped_np (a period strictly between its bounds,
        # the most room or the largest; without one, the most room or the largest anywhere).
        j = -1
        best = 0.0
        for t in range(H):
            xt = x[t]
            if 0.0 < xt < u[t]:
                m = u[t] - xt if resid > 0.0 else xt
                if m > best:
                    best = m
                    j = t
        if j < 0:
            j = 0
            for t in range(1, H):
                if (u[t] - x[t] > u[j] - x[j]) if resid > 0.0 else (x[t] > x[j]):
                    j = t
        d = min(resid, u[j] - x[j]) if resid > 0.0 else -min(-resid, x[j])
        # _is_roundoff's test: a miss lam's rounding does not explain means lam is off
        if not (
            abs(resid) <= _ROUNDOFF * S or (d == resid and 2.0 * g[j] * abs(d) <= 1e-9 * abs(lam))
        ):
            return nan, nan, _OUTSIDE
        x[j] += d
    for t in range(H):
        sx_cost += x[t] * (b[t] + g[t] * x[t])
    return lam, sx_cost, _SOLVED


_wf_capped_c = accel.compiled(
    _wf_capped_py,
    "Tuple((float64, float64, int64))"
    "(float64[::1], float64[::1], float64[::1], float64, float64[::1])",
)


def _waterfill_uncapped(
    b: NDArray[np.float64], g: NDArray[np.float64], S: float
) -> SolveResult | None:
    """Solve the uncapped, strictly convex case: the compiled kernel, else the numpy path.

    Same contract as ``_waterfill_uncapped_np`` (None: the general path decides). ``b`` and
    ``g`` are float64 of one shape; strided views take the numpy path (the kernel is compiled
    for contiguous arrays only, and a new layout would compile at its first call).
    """
    if _wf_uncapped_c is None or not (b.flags.c_contiguous and g.flags.c_contiguous):
        return _waterfill_uncapped_np(b, g, S)
    x = np.empty(b.size)
    lam, cost, code = _wf_uncapped_c(b, g, S, x)
    if code:
        return _optimal(x, 0.0, math.nan, _NOTHING) if code == _NONE else None
    return _optimal(x, cost, lam, "exact")


def _waterfill_capped(
    b: NDArray[np.float64], g: NDArray[np.float64], u: NDArray[np.float64], S: float
) -> SolveResult | None:
    """Solve the capped, strictly convex case: the compiled kernel, else the numpy path."""
    if _wf_capped_c is None or not (
        b.flags.c_contiguous and g.flags.c_contiguous and u.flags.c_contiguous
    ):
        return _waterfill_capped_np(b, g, u, S)
    x = np.empty(b.size)
    lam, cost, code = _wf_capped_c(b, g, u, S, x)
    return None if code else _optimal(x, cost, lam, "exact")


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
    if caps is None and lot is None and H and g.size == H:
        fast = _waterfill_uncapped(b, g, float(S))
        if fast is not None:
            return fast
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, dtype=np.float64).ravel()
    # Some cap finite: the sorted events of the strictly convex case. Caps all infinite keep to
    # the general path below (the reference tests and bench/bench_solvers.py compare with).
    if lot is None and H and g.size == H == u.size and _min(u) < math.inf:
        fast = _waterfill_capped(b, g, u, float(S))
        if fast is not None:
            return fast
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
    res = SolveResult(x, quadratic_cost(x, b, g), lam, SolveStatus.OPTIMAL, "exact")
    if lot is not None:
        return round_to_lots(res, CostSet.of(QuadraticCost(b, g), H), float(S), u, int(lot))
    return SolveResult(x, quadratic_cost(x, b, g), lam, SolveStatus.OPTIMAL, "exact")


# --- general convex costs ----------------------------------------------------------------------


def _check_caps(caps: ArrayLike | None, H: int, S: float) -> tuple[NDArray[np.float64], str]:
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, dtype=np.float64).ravel()
    if u.size != H:
        return u, f"caps has {u.size} entries for {H} periods"
    if np.any(np.isnan(u)) or np.any(u < 0):
        return u, "caps must be >= 0"
    if not math.isfinite(S) or S < 0:
        return u, f"quantity must be finite and >= 0, got {S}"
    return u, ""


def _precheck(
    costs: CostSet, S: float, caps: ArrayLike | None
) -> tuple[NDArray[np.float64], SolveResult | None]:
    """Return the caps array and, for bad input, infeasible caps or S = 0, the early result."""
    H = costs.H
    u, err = _check_caps(caps, H, S)
    if err:
        return u, SolveResult(np.zeros(H), math.nan, math.nan, SolveStatus.NUMERICAL, err)
    total = float(u.sum())
    if total < S:
        x = u.copy()
        return u, SolveResult(
            x,
            costs.total(x),
            math.nan,
            SolveStatus.INFEASIBLE,
            f"caps sum to {total:g} < S = {S:g}: short by {S - total:g}",
        )
    if S == 0:
        return u, SolveResult(
            np.zeros(H), 0.0, math.nan, SolveStatus.OPTIMAL, "nothing to allocate"
        )
    return u, None


def _fix_residual(
    x: NDArray[np.float64],
    u: NDArray[np.float64],
    S: float,
    gamma: NDArray[np.float64] | None = None,
    beta: NDArray[np.float64] | None = None,
    lam: float = math.nan,
) -> None:
    """Put the round-off ``S - sum(x)`` on the period with the most room (never past a bound).

    With ``gamma``, ``beta`` and ``lam``: on the period priced at or below lam, below its cap,
    with room for all of it and the least gamma (its marginal cost moves least; an almost
    linear period's x is lam's rounding times 1/(2 gamma), thousands of shares an ulp, and only
    the sum pins it).
    """
    resid = S - float(x.sum())
    if resid != 0.0:
        room = (u - x) if resid > 0 else x
        if gamma is not None and beta is not None:
            ok = (beta <= lam) & (x < u) & (room >= abs(resid))
            if ok.any():
                j = int(np.flatnonzero(ok)[np.argmin(gamma[ok])])
                x[j] += resid
                return
        j = int(np.argmax(room))
        x[j] += np.sign(resid) * min(abs(resid), room[j])


def solve_kkt(
    costs: CostSet,
    S: float,
    caps: ArrayLike | None = None,
    lot: int | None = None,
    *,
    max_iter: int = 200,
) -> SolveResult:
    """Allocate ``S`` over convex costs by KKT: a bracketing root find on lambda.

    ``x_t(lam)`` minimises ``g_t(x) - lam x`` on ``[0, u_t]``; ``sum_t x_t(lam)`` is
    non-decreasing, so bisection keeps ``lam_a`` (sum below S) and ``lam_b`` (sum at or above S)
    until they meet to machine precision, then interpolates between ``x(lam_a)`` and
    ``x(lam_b)``: exact also when a linear piece makes the sum jump.

    Args:
        costs: Convex cost per period.
        S: Shares to allocate.
        caps: Per-period caps, shape (H,), or None.
        lot: Lot size for the exact integer optimum (see ``round_to_lots``); None: continuous.
        max_iter: Bisection steps at most (each halves the bracket).
    """
    u, early = _precheck(costs, S, caps)
    if early is not None:
        return early
    if (q := costs.quadratic) is not None:
        return solve_quadratic(q.beta, q.gamma, S, caps=caps, lot=lot)

    def f(lam: float) -> tuple[NDArray[np.float64], float]:
        _, hi = costs.x_range(lam)
        x = np.minimum(hi, u)
        return x, float(x.sum())

    lam_a = float(np.min(costs.min_marginal())) - 1e-12
    xa, fa = f(lam_a)
    if fa >= S:  # S is absorbed at the cheapest marginal (ties at lam_a)
        lam_b, xb, fb = lam_a, xa, fa
        lam_a, xa, fa = lam_a - 1.0, *f(lam_a - 1.0)
    else:
        step = max(1.0, abs(lam_a))
        lam_b = lam_a + step
        xb, fb = f(lam_b)
        n = 0
        while fb < S:
            lam_a, xa, fa = lam_b, xb, fb
            step *= 2.0
            lam_b = lam_a + step
            xb, fb = f(lam_b)
            n += 1
            if n > 2000:
                return SolveResult(
                    xb,
                    costs.total(xb),
                    math.nan,
                    SolveStatus.NUMERICAL,
                    "no lambda brackets S (marginal costs do not grow)",
                )
    it = 0
    while it < max_iter:
        mid = 0.5 * (lam_a + lam_b)
        if not (lam_a < mid < lam_b):
            break  # the bracket is down to adjacent floats
        xm, fm = f(mid)
        if fm >= S:
            lam_b, xb, fb = mid, xm, fm
        else:
            lam_a, xa, fa = mid, xm, fm
        it += 1
    status = SolveStatus.OPTIMAL if it < max_iter else SolveStatus.MAX_ITER
    x = _split_at(costs, lam_b, u, S, xa, fa)
    _fix_residual(x, u, S)
    res = SolveResult(x, costs.total(x), lam_b, status, "kkt" if status else "", it)
    if lot is not None and res.ok:
        return round_to_lots(res, costs, S, u, lot)
    return res


def _split_at(
    costs: CostSet,
    lam: float,
    u: NDArray[np.float64],
    S: float,
    xa: NDArray[np.float64],
    fa: float,
) -> NDArray[np.float64]:
    """Return the allocation at the final multiplier ``lam`` (``xa``: the one just below it).

    Periods whose marginal is strictly below ``lam`` take ``x_lo``; the periods tied at ``lam``
    (a linear piece) share what is left, in proportion to their room (equally when unbounded).
    If even ``x_lo`` overshoots (the bracket's last float step), interpolate from ``xa``.
    """
    lo, hi = costs.x_range(lam)
    lo = np.minimum(lo, u)
    hi = np.minimum(hi, u)
    f_lo = float(lo.sum())
    if f_lo > S:
        theta = (S - fa) / (f_lo - fa)
        return xa + theta * (lo - xa)
    room = hi - lo
    rest = S - f_lo
    inf = ~np.isfinite(room)
    if inf.any():
        return lo + np.where(inf, rest / inf.sum(), 0.0)
    total = float(room.sum())
    return lo + (room * (rest / total) if total > 0 else 0.0)


def solve_piecewise_linear(costs: CostSet, S: float, caps: ArrayLike | None = None) -> SolveResult:
    """Allocate ``S`` over convex piecewise-linear costs exactly: cheapest segments first.

    Every period's segments (length capped by ``u_t``) are pooled and sorted by slope; they are
    filled in that order until S is reached. Convexity makes this the optimum, and lambda is
    the slope of the last segment used.
    """
    u, early = _precheck(costs, S, caps)
    if early is not None:
        return early
    one = costs._model if costs._whole else None
    if (
        isinstance(one, PiecewiseLinearCost)
        and one.knots.shape == one.slopes.shape
        and one.knots.shape[:1] == (costs.H,)
    ):
        return _pl_one_block(costs, one, S, u)
    per, starts, slopes = [], [], []
    for m, idx in costs.blocks:
        if not isinstance(m, PiecewiseLinearCost):
            return solve_kkt(costs, S, caps)
        real = np.isfinite(m.knots)
        rows = np.broadcast_to(np.asarray(idx)[:, None], m.knots.shape)
        per.append(rows[real])
        starts.append(m.knots[real])
        slopes.append(m.slopes[real])
    p = np.concatenate(per)
    a = np.concatenate(starts)
    s = np.concatenate(slopes)
    order = np.lexsort((a, p))  # segments of a period in order, to find each segment's end
    p, a, s = p[order], a[order], s[order]
    nxt = np.append(a[1:], np.inf)
    nxt[np.append(p[1:] != p[:-1], True)] = np.inf
    ends = np.minimum(nxt, u[p])
    length = np.clip(ends - a, 0.0, None)
    by_slope = np.lexsort((a, s))
    p, s, length = p[by_slope], s[by_slope], length[by_slope]
    cum = np.cumsum(length)
    k = int(np.searchsorted(cum, S, side="left"))
    k = min(k, len(s) - 1)
    lam = float(s[k])
    # Every segment at the marginal slope costs the same per share: share what is left among
    # them evenly (water-filling by length), so equal periods get equal amounts instead of the
    # first ones in sort order taking it all.
    tol = 1e-12 * max(1.0, abs(lam))
    cheaper = s < lam - tol
    tied = np.abs(s - lam) <= tol
    take = np.where(cheaper, length, 0.0)
    take[tied] = _level_fill(length[tied], S - float(take.sum()))
    # bincount with float weights sums floats (its stub only knows the integer count)
    x = np.asarray(np.bincount(p, weights=take, minlength=costs.H), dtype=np.float64)
    return SolveResult(x, costs.total(x), lam, SolveStatus.OPTIMAL, "exact")


def _pl_shares_py(
    sl: NDArray[np.float64], cum: NDArray[np.float64], v: float
) -> tuple[float, float, float]:
    """Return ``W(v)``, the length of all segments priced at most ``v`` (slopes rise along a
    row: a prefix of each, by binary search), the largest such slope and the least above."""
    H = sl.shape[0]
    J = sl.shape[1]
    w = 0.0
    prv = -math.inf
    nxt = math.inf
    for r in range(H):
        lo = 0
        hi = J
        while lo < hi:
            mid = (lo + hi) // 2
            if sl[r, mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            w += cum[r, lo - 1]
            prv = max(prv, sl[r, lo - 1])
        if lo < J:
            nxt = min(nxt, sl[r, lo])
    return w, prv, nxt


_pl_shares = _helper(
    _pl_shares_py, "Tuple((float64, float64, float64))(float64[:, ::1], float64[:, ::1], float64)"
)


def _pl_py(
    kn: NDArray[np.float64],
    sl: NDArray[np.float64],
    u: NDArray[np.float64],
    S: float,
    x: NDArray[np.float64],
    take: NDArray[np.float64],
) -> tuple[float, float, int]:
    """``_pl_one_block``'s segment sort without the sort: the marginal slope by bisection.

    Slopes rise along each row (convexity), so the shares ``W(v)`` of the segments priced at
    most ``v`` are, per row, a prefix found by binary search. The marginal slope is the least
    slope with ``W >= S``: a bisection on ``v`` that snaps each bound to a slope finds it
    exactly (trials interpolate W, step to the next slope or halve, in turn). Then the fill of
    ``_pl_one_block``: segments cheaper than it are taken whole and
    the ones tied with it (to 1e-12) share the rest by water level. ``take`` (shape of ``kn``)
    receives the shares per segment. Knots that are NaN, slopes that fall along a row or
    rounding that leaves S just out of reach return ``_OUTSIDE`` (the numpy path decides).
    """
    nan = math.nan
    inf = math.inf
    H = kn.shape[0]
    J = kn.shape[1]
    if (
        H == 0
        or J == 0
        or sl.shape[0] != H
        or sl.shape[1] != J
        or take.shape[0] != H
        or take.shape[1] != J
        or u.size != H
        or x.size != H
        or not 0.0 < S < inf
    ):
        return nan, nan, _OUTSIDE
    cum = np.empty((H, J))  # per row: the length of its first j+1 segments
    v_lo = inf
    v_hi = -inf
    for r in range(H):
        prev = -inf
        acc = 0.0
        for j in range(J):
            k = kn[r, j]
            s = sl[r, j]
            if math.isnan(k) or not s >= prev:  # NaN slopes fail too
                return nan, nan, _OUTSIDE
            prev = s
            d = 0.0
            if k < inf and k > -inf:
                end = kn[r, j + 1] if j + 1 < J else inf
                end = min(end, u[r])
                d = max(end - k, 0.0)
                if s < inf:
                    v_lo = min(v_lo, s)
                    v_hi = max(v_hi, s)
            take[r, j] = d
            acc += d
            cum[r, j] = acc
    # the least slope with W >= S, bracketed by a (W(a) < S) and b (a slope, W(b) >= S)
    w_b, b, _ = _pl_shares(sl, cum, v_hi)
    if not w_b >= S:  # S out of reach of the priced segments (round-off at the caps' total)
        return nan, nan, _OUTSIDE
    w_a, prv, nxt_a = _pl_shares(sl, cum, v_lo)
    if w_a >= S:
        b = prv
    else:
        a = v_lo
        for it in range(200):
            if nxt_a >= b:  # no slope strictly between a and b: b is the one
                break
            # Trials in turn: interpolate W between the bounds (nearly linear there), try
            # the next slope above a (near the end, each such try settles one slope) and
            # halve, so that neither a kink, one-sided interpolation nor clustered slopes
            # slow it much
            v = 0.5 * (a + b)
            if it % 3 == 0 and w_a < w_b < inf:
                v = a + (b - a) * ((S - w_a) / (w_b - w_a))
                if not a < v < b:
                    v = 0.5 * (a + b)
            elif it % 3 == 1:
                v = nxt_a  # a < nxt_a < b here
            if not a < v < b:  # adjacent floats: no slope between them either
                break
            w, prv, nxt = _pl_shares(sl, cum, v)
            if w >= S:
                b = prv  # W is constant from prv to v
                w_b = w
            else:
                a = v
                w_a = w
                nxt_a = nxt
        else:
            return nan, nan, _OUTSIDE
    lam = b
    tol = 1e-12 * max(1.0, abs(lam))
    # cheaper segments whole; tied ones keep their length in `take` for the level fill
    n_tied = 0
    for r in range(H):
        for j in range(J):
            s = sl[r, j]
            if s < lam - tol:
                continue
            if abs(s - lam) <= tol:
                n_tied += 1
            else:
                take[r, j] = 0.0
    lens = np.empty(n_tied)
    i = 0
    for r in range(H):
        for j in range(J):
            s = sl[r, j]
            if abs(s - lam) <= tol:
                lens[i] = take[r, j]
                i += 1
                take[r, j] = 0.0
    need = max(S - _psum(take.ravel()), 0.0)
    level = 0.0
    if n_tied:
        ls = np.sort(lens)
        before = 0.0
        level = need / n_tied
        for i in range(n_tied):
            lv = (need - before) / (n_tied - i)
            if ls[i] >= lv:
                level = lv
                break
            before += ls[i]
    i = 0
    cost = 0.0
    for r in range(H):
        for j in range(J):
            s = sl[r, j]
            if abs(s - lam) <= tol:
                take[r, j] = min(lens[i], level)
                i += 1
            if take[r, j] > 0.0:
                cost += take[r, j] * s
        x[r] = _psum(take[r])
    return lam, cost, _SOLVED


_pl_c = accel.compiled(
    _pl_py,
    "Tuple((float64, float64, int64))"
    "(float64[:, ::1], float64[:, ::1], float64[::1], float64, float64[::1], float64[:, ::1])",
)


def _pl_one_block(
    costs: CostSet, m: PiecewiseLinearCost, S: float, u: NDArray[np.float64]
) -> SolveResult:
    """``solve_piecewise_linear`` for one model over periods 0..H-1 (the MPC's curve).

    Each row's knots are already in order, so a segment ends at the next knot of its row (or
    the cap): no per-period sort. One sort by slope finds the marginal slope; the segments
    below it are filled and the ones at it share what is left, as in the general path (the
    order among equal slopes changes nothing). With the kernels on, ``_pl_py`` finds the same
    slope without the sort.
    """
    kn, sl = m.knots, m.slopes
    if (
        _pl_c is not None
        and kn.ndim == 2
        and kn.dtype is _F64 is sl.dtype
        and u.dtype is _F64
        and kn.flags.c_contiguous
        and sl.flags.c_contiguous
        and u.flags.c_contiguous
    ):
        x = np.empty(costs.H)
        lam, cost, code = _pl_c(kn, sl, u, float(S), x, np.empty_like(kn))
        if code == _SOLVED:
            return SolveResult(x, cost, lam, SolveStatus.OPTIMAL, "exact")
    real = np.isfinite(kn)
    ends = np.empty_like(kn)
    ends[:, :-1] = kn[:, 1:]
    ends[:, -1] = np.inf
    np.minimum(ends, u[:, None], out=ends)
    length = np.zeros_like(kn)
    np.subtract(ends, kn, out=length, where=real)
    np.maximum(length, 0.0, out=length)
    s = sl.ravel()
    ln = length.ravel()
    order = np.argsort(s)  # the order among equal slopes changes nothing (see above)
    cum = np.cumsum(ln[order])
    k = min(int(np.searchsorted(cum, S, side="left")), s.size - 1)
    lam = float(s[order[k]])
    tol = 1e-12 * max(1.0, abs(lam))
    cheaper = s < lam - tol
    tied = np.abs(s - lam) <= tol
    take = np.where(cheaper, ln, 0.0)
    take[tied] = _level_fill(ln[tied], S - float(take.sum()))
    x = take.reshape(kn.shape).sum(axis=1)
    # Each period's filled segments are its cheapest (slopes rise along a row): the cost is
    # their length times slope, what costs.total(x) would walk back to.
    cost = float(take @ np.where(real.ravel(), s, 0.0))
    return SolveResult(x, cost, lam, SolveStatus.OPTIMAL, "exact")


def _level_fill(length: NDArray[np.float64], need: float) -> NDArray[np.float64]:
    """Return amounts ``min(length_i, level)`` summing to ``need`` (0 <= need <= sum)."""
    need = max(need, 0.0)
    n = length.size
    if n == 0:
        return length.copy()
    ls = np.sort(length)
    before = np.concatenate(([0.0], np.cumsum(ls[:-1])))  # filled by the shorter ones
    with np.errstate(invalid="ignore"):
        level = (need - before) / np.arange(n, 0, -1)  # the level if i.. share equally
    i = int(np.argmax(ls >= level))  # the first segment long enough for its share
    return np.asarray(np.minimum(length, level[i]), dtype=np.float64)


def solve_auto(
    costs: CostSet, S: float, caps: ArrayLike | None = None, lot: int | None = None
) -> SolveResult:
    """Solve with the exact method for the models present.

    Quadratic everywhere: water-filling; piecewise-linear everywhere: segment sort; otherwise
    KKT. ``lot`` gives the exact integer-lot optimum in every case. One quadratic model over
    the periods in float64 (what ``decide_mpc`` passes, ``caps`` None or a float64 array of
    shape (H,)) goes straight to the compiled water-filling; anything the kernels do not take
    (zero gamma, NaN, negative input, S = 0 with caps) gets the general path's answer.
    """
    if lot is None and costs._whole and type(m := costs._model) is QuadraticCost:
        # The MPC's call: straight to the water-filling (checks only what routes it there;
        # the kernels check the numbers and leave anything odd to the general path below).
        b, g = m.beta, m.gamma
        if b.dtype is _F64 is g.dtype and b.shape == g.shape == (costs.H,):  # not float32
            if caps is None:
                fast = _waterfill_uncapped(b, g, float(S))
            elif type(caps) is np.ndarray and caps.dtype is _F64 and caps.shape == b.shape:
                fast = _waterfill_capped(b, g, caps, float(S))
            else:
                fast = None
            if fast is not None:
                return fast
    if (q := costs.quadratic) is not None:
        return solve_quadratic(q.beta, q.gamma, S, caps, lot)
    if all(isinstance(m, PiecewiseLinearCost) for m, _ in costs.blocks):
        res = solve_piecewise_linear(costs, S, caps)
        if lot is not None and res.ok:
            u = np.full(costs.H, np.inf) if caps is None else np.asarray(caps, float)
            res = round_to_lots(res, costs, S, u, lot)
        return res
    return solve_kkt(costs, S, caps, lot)


def round_to_lots(
    res: SolveResult,
    costs: CostSet,
    S: float,
    u: NDArray[np.float64],
    lot: int,
) -> SolveResult:
    """Turn a continuous optimum of separable convex costs into the exact integer-lot optimum.

    Every period trades whole lots; one period may also take the odd lot ``r = S mod lot``.
    Lots: round the continuous optimum of the lot part down, hand out the missing lots by least
    cost increase, then repair by single-lot exchanges until no move from one period to another
    saves anything: for separable convex costs under one sum constraint, exchange optimality is
    global optimality. Odd lot: placing it in period j raises j's marginal costs only, so the
    best allocation given j is the lot optimum with lots moved out of j while that pays; every
    j is priced that way and the cheapest kept.
    """
    if lot < 1 or round(S) != S:
        return SolveResult(
            res.x,
            res.cost,
            res.lam,
            SolveStatus.NUMERICAL,
            f"lot must be >= 1 and S whole, got lot={lot}, S={S}",
        )
    total_lots, odd = divmod(round(S), lot)
    L = float(lot)
    cap_lots = np.where(np.isfinite(u), np.floor(u / L + 1e-9), np.inf)
    if float(np.minimum(cap_lots, total_lots).sum()) < total_lots:
        return SolveResult(
            res.x,
            res.cost,
            res.lam,
            SolveStatus.INFEASIBLE,
            f"caps hold fewer than {total_lots} whole lots of {lot}",
        )
    x0 = res.x
    if odd and total_lots:
        lots_only = solve_kkt(costs, float(total_lots * lot), u)
        if lots_only.ok:
            x0 = lots_only.x
    n = np.minimum(np.floor(x0 / L + 1e-9), cap_lots)
    n = _fill_and_repair(costs, n, cap_lots, total_lots, L, np.zeros(costs.H))
    shares = n * L
    if odd:
        placed = _place_odd(costs, n, cap_lots, u, float(odd), L)
        if placed is None:
            return SolveResult(
                res.x,
                res.cost,
                res.lam,
                SolveStatus.INFEASIBLE,
                f"no period has room for the odd lot of {odd} shares",
            )
        shares = placed
    return SolveResult(
        shares,
        costs.total(shares),
        res.lam,
        SolveStatus.OPTIMAL,
        f"exact integer optimum in lots of {lot}",
    )


def _fill_and_repair(
    costs: CostSet,
    n: NDArray[np.float64],
    cap_lots: NDArray[np.float64],
    total_lots: int,
    L: float,
    offset: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Return the lot optimum from a start ``n`` (lots), costs evaluated at ``n*L + offset``."""
    n = n.copy()
    H = n.size
    idx = np.arange(H)

    def inc_dec(n: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        base = costs.cost(n * L + offset)
        inc = np.where(n < cap_lots, costs.cost((n + 1) * L + offset) - base, np.inf)
        dec = np.where(n >= 1, base - costs.cost(np.maximum(n - 1, 0) * L + offset), -np.inf)
        return inc, dec

    need = total_lots - int(n.sum())
    while need != 0:  # at most H steps from the floor of the continuous optimum
        inc, dec = inc_dec(n)
        if need > 0:
            t = int(np.argmin(inc))
            n[t] += 1
            need -= 1
        else:
            t = int(np.argmax(dec))
            n[t] -= 1
            need += 1
    for _ in range(10 * H + 10):  # exchange repair: each move strictly lowers the cost
        inc, dec = inc_dec(n)
        i = int(np.argmax(dec))
        inc_i = np.where(idx == i, np.inf, inc)
        j = int(np.argmin(inc_i))
        if not dec[i] - inc_i[j] > 1e-12 * max(1.0, abs(dec[i])):
            break
        n[i] -= 1
        n[j] += 1
    return n


def _place_odd(
    costs: CostSet,
    n: NDArray[np.float64],
    cap_lots: NDArray[np.float64],
    u: NDArray[np.float64],
    r: float,
    L: float,
) -> NDArray[np.float64] | None:
    """Return the best shares with the odd lot ``r`` in some period, lots re-optimised."""
    H = n.size
    total = int(n.sum())
    best_cost, best = math.inf, None
    base = n * L
    # Price each candidate with one exchange first; fully re-optimise the promising ones.
    approx = np.where(base + r <= u, costs.cost(base + r) - costs.cost(base), np.inf)
    order = np.argsort(approx)
    cand = order[: min(H, 64)]
    for j in cand:  # at most 64 candidates
        offset = np.zeros(H)
        offset[j] = r
        caps_j = cap_lots.copy()
        caps_j[j] = np.floor((u[j] - r) / L + 1e-9) if np.isfinite(u[j]) else np.inf
        if caps_j[j] < 0 or float(np.minimum(caps_j, total).sum()) < total:
            continue
        start = np.minimum(n, caps_j)
        m = _fill_and_repair(costs, start, caps_j, total, L, offset)
        x = m * L + offset
        c = costs.total(x)
        if c < best_cost:
            best_cost, best = c, x
    return best


def round_largest_remainder(
    x: NDArray[np.float64], S: float, caps: NDArray[np.float64], lot: int
) -> NDArray[np.float64]:
    """Round a schedule to whole lots summing to ``S`` (largest remainders first, within caps).

    For objectives that are not separable (worst case, timing risk) this is a rounding, not a
    proven integer optimum: callers report it as ``FEASIBLE`` with a lower bound. The odd lot
    ``S mod lot`` goes to the period with the largest remainder that has room for it.
    """
    n = np.floor(x / lot + 1e-9)
    frac = x / lot - n
    cap_lots = np.where(np.isfinite(caps), np.floor(caps / lot + 1e-9), np.inf)
    n = np.minimum(n, cap_lots)
    need = round(S) // lot - int(n.sum())
    for t in np.argsort(-frac):  # at most H steps
        if need <= 0:
            break
        if n[t] < cap_lots[t]:
            n[t] += 1
            need -= 1
    out = n * lot
    odd = round(S) - float(out.sum())
    if odd:
        room = np.where(caps - out >= odd, frac, -np.inf)
        out[int(np.argmax(room))] += odd
    return out


def bounded_result(
    x: NDArray[np.float64], cost: float, bound: float, lam: float, what: str, tol: float = 1e-9
) -> SolveResult:
    """Return a rounded schedule's result: ``OPTIMAL`` only if it meets the lower bound.

    Args:
        x: The schedule. cost: Its objective. bound: A proven lower bound on the optimum (the
            continuous optimum or its dual). lam: Multiplier to report. what: How ``x`` was made.
        tol: Relative gap below which the schedule is proven optimal (to rounding).
    """
    gap = (cost - bound) / max(abs(cost), 1e-300)
    proven = gap <= tol
    return SolveResult(
        x,
        cost,
        lam,
        SolveStatus.OPTIMAL if proven else SolveStatus.FEASIBLE,
        f"{what}; objective {cost:.10g}, lower bound {bound:.10g} (relative gap {gap:.2e})"
        + (f": optimal to a relative {tol:g}" if proven else ": not proven optimal"),
    )
