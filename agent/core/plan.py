"""Per-period decisions of a parent order (pure).

Symbols (as in ``execution-math.md``):
    N      number of periods between the order's start and its deadline
    k      index of the current period, 0 <= k < N
    S_k    shares left to plan at period k: parent - filled - working (from fills, not the plan)
    beta, gamma   quadratic impact parameters, g(x) = beta*x + gamma*x**2 (currency)
    x      the plan for periods k..N-1, shape (N-k,); x[0] is this period's child order

The horizon always runs to the deadline (never a fixed H forced to finish early): with equal
costs in every period the plan is uniform.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.mpc.costs import CostSet, PiecewiseLinearCost, QuadraticCost
from agent.mpc.solvers import SolveResult, SolveStatus, solve_auto

__all__ = [
    "NO_TIMER",
    "Decision",
    "PeriodGrid",
    "decide_mpc",
    "decision_from_plan",
    "diffuse_lots",
    "nonparametric_costs",
    "quadratic_costs",
    "round_lot",
    "twap_child_qty",
]


def NO_TIMER() -> float:
    """The core's default timer: the core reads no clock (solve times are then 0); the daemon
    injects ``time.perf_counter`` to report them."""
    return 0.0


@dataclass(frozen=True, slots=True)
class PeriodGrid:
    """Periods ``[start + k*period, start + (k+1)*period)``, the last one cut at ``end``."""

    start_ns: int
    end_ns: int
    period_ns: int

    @property
    def n(self) -> int:
        """Return the number of periods N."""
        return max(1, math.ceil((self.end_ns - self.start_ns) / self.period_ns))

    def start_of(self, k: int) -> int:
        """Return the start time of period ``k`` in ns."""
        return self.start_ns + k * self.period_ns

    def starts(self, k0: int = 0) -> NDArray[np.int64]:
        """Return the start times of periods ``k0..N-1``, shape (N-k0,)."""
        return self.start_ns + np.arange(k0, self.n, dtype=np.int64) * self.period_ns


def round_lot(qty: float, lot: int) -> float:
    """Return ``qty`` rounded down to a whole number of lots (shares)."""
    return float(math.floor(qty / lot + 1e-9) * lot)


def twap_child_qty(grid: PeriodGrid, k: int, parent_qty: float, done_qty: float, lot: int) -> float:
    """Return the TWAP child at period ``k``: catch up to ``k+1`` N-ths of the parent.

    Args:
        grid: The order's periods.
        k: Current period.
        parent_qty: Parent shares S.
        done_qty: Shares filled or working.
        lot: Lot size; the target is rounded down to lots except at the last period.
    """
    last = k >= grid.n - 1
    target = parent_qty if last else round_lot(parent_qty * (k + 1) / grid.n, lot)
    return max(0.0, target - done_qty)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the MPC decided at one period.

    Attributes:
        k: Period index.
        child_qty: Shares to send now (0 = nothing).
        plan: Planned shares for periods k..N-1, shape (N-k,).
        lam: KKT multiplier (marginal cost at the optimum), NaN when undefined.
        status: Solver status, or ``final`` (last period: send what is left), ``twap_fallback``.
        message: Solver message.
        solve_ms: Wall time of the solve, ms.
        carry: Lot-rounding residual to pass to the next decision (shares; see ``diffuse_lots``).
    """

    k: int
    child_qty: float
    plan: NDArray[np.float64]
    lam: float
    status: str
    message: str
    solve_ms: float
    carry: float = 0.0


def diffuse_lots(
    x0: float, carry: float, lot: int, limit: float, remaining: float
) -> tuple[float, float]:
    """Round this period's planned shares to whole lots by error diffusion.

    The MPC re-solves every period and sends only ``x[0]``; rounding each ``x[0]`` on its own
    to the integer-lot optimum breaks ties the same way every time, so a plan of 0.15 lot a
    period sent a whole lot in each of the first periods and finished hours early (where the
    cost model said every period was the same). Instead, ``carry`` is how far the children are
    behind the continuous plans (shares). The re-solve has already spread that shortfall over
    the periods left, putting the share ``x0 / remaining`` of it into ``x0``; the rest is added
    here, and the target rounded to lots. With equal costs this is TWAP rounded to lots: the
    cumulative stays within half a lot of the uniform schedule.

    Args:
        x0: This period's continuous planned shares.
        carry: Shares the children are behind the continuous plans (the last call's residual).
        lot: Lot size.
        limit: Most the child may be (what is left, the cap).
        remaining: Shares the plan allocates (its sum).

    Returns:
        ``(child, carry)``: a whole number of lots in ``[0, limit]`` and the new residual.
    """
    absorbed = x0 / remaining if remaining > 0 else 1.0
    target = x0 + carry * (1.0 - min(absorbed, 1.0))
    child = max(0.0, math.floor(target / lot + 0.5) * lot)
    child = float(min(max(child, 0.0), round_lot(limit, lot)))
    # np.clip's min(max(.)) in floats (the same operations; NaN stays NaN)
    return child, float(min(max(target - child, -lot), lot))


def decide_mpc(
    grid: PeriodGrid,
    k: int,
    remaining: float,
    costs: CostSet,
    *,
    lot: int,
    max_child_qty: float = 0.0,
    fallback_twap_qty: float | None = None,
    carry: float = 0.0,
    timer: Callable[[], float] = NO_TIMER,
    caps: NDArray[np.float64] | None = None,
) -> Decision:
    """Re-solve the allocation of ``remaining`` over periods ``k..N-1`` and pick this child.

    The plan is the continuous optimum (exact); the child is its first period rounded to whole
    lots by error diffusion (``diffuse_lots``) with the residual ``carry`` of the previous
    decision, returned in ``Decision.carry`` for the next one.

    Args:
        grid: The order's periods.
        k: Current period.
        remaining: Shares to plan S_k (>= 0).
        costs: Forecast cost of periods k..N-1 (N-k periods): quadratic from the fit, or the
            window's empirical piecewise-linear curve.
        lot: Lot size in shares.
        max_child_qty: Cap per child (0 = none).
        fallback_twap_qty: Child to send if the solve fails (None = send nothing).
        carry: Lot-rounding residual of the previous decision (0 at the first).
        timer: Seconds of a monotonic clock, to time the solve (``NO_TIMER``: not timed).
        caps: Most per period k..N-1 (the participation cap), shape (N-k,), ``inf`` where
            unknown. When they cannot hold ``remaining`` they are scaled up together until
            they can (the deadline comes first), said in the decision's message.

    Returns:
        The decision; ``child_qty`` never exceeds ``remaining`` or the cap.
    """
    h = grid.n - k
    cap = max_child_qty if max_child_qty > 0 else math.inf
    if remaining <= 0:
        return Decision(k, 0.0, np.zeros(h), math.nan, "done", "nothing left", 0.0)
    if h <= 1:
        child = min(remaining, cap)
        return Decision(k, child, np.array([child]), math.nan, "final", "last period", 0.0)
    u = None if math.isinf(cap) else np.full(h, cap)
    note = ""
    if caps is not None and caps.size == h:
        c = np.asarray(caps, dtype=np.float64).copy()
        c[0] = max(float(c[0]), 0.0)
        fin = np.isfinite(c)
        total = float(c[fin].sum())
        if fin.all() and 0 < total < remaining:
            c *= remaining / total * (1 + 1e-9)
            note = "participation cap relaxed to finish by the deadline"
        if not (fin.all() and not total > 0):  # no volume seen at all: no cap, not no trade
            u = c if u is None else np.minimum(u, c)
        if u is not None and not float(np.min(u)) < math.inf:
            u = None  # no cap known anywhere: the uncapped solve (the same optimum, faster)
    t0 = timer()
    res: SolveResult = solve_auto(costs, remaining, caps=u)
    solve_ms = (timer() - t0) * 1e3
    if note:
        res = dataclasses.replace(res, message=f"{res.message}; {note}")
    return decision_from_plan(k, res, remaining, cap, lot, carry, solve_ms, fallback_twap_qty)


def decision_from_plan(
    k: int,
    res: SolveResult,
    remaining: float,
    cap: float,
    lot: int,
    carry: float,
    solve_ms: float,
    fallback_twap_qty: float | None = None,
) -> Decision:
    """Return the decision for a continuous plan: its first period in lots (error diffusion),
    or the fallback when the solve failed."""
    if res.status is SolveStatus.OPTIMAL or res.status is SolveStatus.INFEASIBLE:
        # INFEASIBLE here means the caps cannot absorb S_k: x is then the caps (best effort);
        # the shortfall shows in the summary, never silently.
        x0 = float(res.x[0])
        child, carry = diffuse_lots(x0, carry, lot, min(remaining, cap), remaining)
        return Decision(k, child, res.x, res.lam, str(res.status), res.message, solve_ms, carry)
    child = 0.0 if fallback_twap_qty is None else min(fallback_twap_qty, remaining, cap)
    return Decision(k, child, res.x, math.nan, "twap_fallback", res.message, solve_ms)


def quadratic_costs(
    beta: float, gamma: float, mb: NDArray[np.float64], mg: NDArray[np.float64]
) -> CostSet:
    """Return the quadratic forecast: ``beta * mb_t``, ``gamma * mg_t`` per period, shape (H,)."""
    return CostSet.of(QuadraticCost(beta * mb, gamma * mg), mb.size)


def nonparametric_costs(
    knots: NDArray[np.float64], slopes: NDArray[np.float64], mc: NDArray[np.float64]
) -> CostSet:
    """Return the window's empirical curve as every period's cost, scaled by ``mc_t``.

    Args:
        knots: Segment starts in shares, shape (K,), from 0 (the last segment runs on).
        slopes: Cost per share on each segment, shape (K,), non-decreasing.
        mc: Cost multiplier per period (profile), shape (H,), 1 for the current period.
    """
    H = mc.size
    return CostSet.of(PiecewiseLinearCost(np.tile(knots, (H, 1)), np.outer(mc, slopes)), H)
