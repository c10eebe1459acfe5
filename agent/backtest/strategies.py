"""The strategies of the backtest (pure).

Schedule strategies give a cumulative target per period, ``F_k`` = share of the parent to have
done by the end of period ``k`` (``F_{N-1} = 1``); each period's child catches up to
``floor_lot(F_k S) - done`` (as ``agent.planner.twap_child_qty`` does for TWAP), so a partial
fill is made up in the next period:

- TWAP: ``F_k = (k+1)/N``.
- VWAP: ``F_k`` = cumulative share of the volume profile (learned from history days by time of
  day; without history, from the same day: look-ahead, flagged).
- Static Almgren-Chriss: the schedule minimising ``sum g(x_t) + kappa sigma^2 sum q_t^2`` for
  the quadratic ``g`` estimated at the start (``agent.mpc.robust.solve_risk_averse``, exact),
  computed once and never re-planned.

POV sends ``rate x`` the volume traded in the previous period (no catch-up, the last period
sends what is left).

MPC (``MpcPlanner``): the daemon's decision each period (``ParentRunner._estimate`` then
``agent.planner.decide_mpc``), reproduced synchronously: walk the rolling window, fit the model,
forecast the later periods with the intraday profile, re-solve what is left to the deadline,
send ``x[0]``. Models: ``quadratic`` (fit_quadratic, beta/gamma multipliers), ``power``
(fit_power, ``a`` scaled by the profile's cost multiplier), ``nonparametric`` (the window's mean
curve, scaled by the cost multiplier). Solvers: ``deterministic`` (the point forecast, exact,
in lots), ``stochastic`` and ``robust`` over three scenarios: (1) the mean curve with the
profile, (2) the mean + 1 std curve with the profile (adverse liquidity), (3) the mean curve
flat (the profile is wrong: today's liquidity persists). Stochastic minimises their weighted
expected cost, robust the worst of the three (``solve_stochastic``, ``solve_robust``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.impact.book_walk import CostCurve, DepthPolicy, cost_curve, time_weights
from agent.impact.fit import fit_power, fit_quadratic
from agent.impact.profile import IntradayProfile
from agent.mpc.costs import CostSet, PiecewiseLinearCost, PiecewisePowerCost
from agent.mpc.robust import solve_risk_averse, solve_stochastic
from agent.mpc.solvers import SolveResult, SolveStatus, solve_auto
from agent.planner import (
    Decision,
    PeriodGrid,
    decide_mpc,
    decision_from_plan,
    nonparametric_costs,
    quadratic_costs,
    round_lot,
)
from feeds.model import BookBatch

__all__ = [
    "MpcPlanner",
    "ac_targets",
    "catch_up_child",
    "pov_child",
    "twap_targets",
    "volume_targets",
    "window_of",
]


def twap_targets(n: int) -> NDArray[np.float64]:
    """Return TWAP's cumulative targets ``(k+1)/N``, shape (N,)."""
    return np.arange(1, n + 1, dtype=np.float64) / n


def volume_targets(volume: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Return cumulative targets proportional to a volume profile (None if it is all zero)."""
    v = np.maximum(np.asarray(volume, dtype=np.float64), 0.0)
    tot = float(v.sum())
    if not tot > 0:
        return None
    f = np.cumsum(v) / tot
    f[-1] = 1.0
    return f


def ac_targets(
    beta: float, gamma: float, risk: float, S: float, n: int
) -> tuple[NDArray[np.float64] | None, str]:
    """Return the static Almgren-Chriss cumulative targets, shape (N,), or None with why.

    Args:
        beta, gamma: Quadratic impact at the start (currency/share, currency/share^2).
        risk: ``kappa sigma^2`` per period (currency per share^2).
        S: Parent shares.
        n: Periods.
    """
    if not (math.isfinite(beta) and math.isfinite(gamma) and math.isfinite(risk)):
        return None, "no impact or volatility estimate at the start"
    res = solve_risk_averse(np.full(n, beta), np.full(n, gamma), S, risk)
    if not res.ok:
        return None, f"solve_risk_averse: {res.status}: {res.message}"
    f = np.cumsum(res.x) / S
    f[-1] = 1.0
    return np.clip(f, 0.0, 1.0), res.message


def catch_up_child(targets: NDArray[np.float64], k: int, S: float, done: float, lot: int) -> float:
    """Return the child that brings ``done`` up to the target of period ``k`` (lots)."""
    last = k >= targets.size - 1
    target = S if last else round_lot(S * float(targets[k]), lot)
    return max(0.0, target - done)


def pov_child(rate: float, prev_volume: float, remaining: float, lot: int, last: bool) -> float:
    """Return POV's child: ``rate x prev_volume`` in lots, capped at what is left."""
    if last:
        return max(remaining, 0.0)
    return max(0.0, min(round_lot(rate * prev_volume, lot), remaining))


def window_of(books: BookBatch, t_ns: int, window_ns: int, max_rows: int) -> BookBatch:
    """Return the rows with ``t - window < ts <= t``, thinned evenly to ``max_rows`` (as
    ``agent.window.RollingWindow.view``)."""
    ts = books.ts_event_ns
    a = int(np.searchsorted(ts, t_ns - window_ns, side="right"))
    b = int(np.searchsorted(ts, t_ns, side="right"))
    n = b - a
    if n <= max_rows:
        return books.slice(a, b)
    idx = a + (np.arange(max_rows, dtype=np.int64) * n) // max_rows
    return books.take(idx)


@dataclass(frozen=True, slots=True)
class _Model:
    """A fitted model: ``quadratic`` (beta, gamma), ``power`` (a, b) or ``nonparametric``
    (knots, slopes)."""

    kind: str
    params: tuple


@dataclass(frozen=True, slots=True)
class MpcStep:
    """One MPC decision plus what is needed to judge its forecast.

    Attributes:
        decision: The planner's decision (child, plan, status).
        g0: Predicted cost of this period, ``g_k(x)`` in currency (None without an estimate).
        fields: Diagnostics (fit parameters, snapshots, beyond-depth share).
    """

    decision: Decision
    g0: Callable[[float], float] | None
    fields: dict[str, object]


class MpcPlanner:
    """The daemon's per-period MPC decision, synchronous.

    Args:
        model: ``quadratic``, ``power`` or ``nonparametric``.
        solver: ``deterministic``, ``robust`` or ``stochastic``.
        side: ``buy`` or ``sell``.
        sizes: Size grid of the walk-the-book curve, shares, shape (G,).
        policy: Beyond-depth policy of the estimation.
        profile: Intraday profile of the forecast.
        min_snapshots: Fewer rows in the window: no estimate (TWAP slice).
        weighting: ``time`` or ``snapshot``.
        scenario_weights: Weights of the three scenarios (stochastic).
    """

    def __init__(
        self,
        model: str,
        solver: str,
        side: str,
        sizes: NDArray[np.float64],
        policy: DepthPolicy,
        profile: IntradayProfile,
        *,
        min_snapshots: int = 10,
        weighting: str = "time",
        scenario_weights: tuple[float, float, float] = (0.5, 0.25, 0.25),
    ) -> None:
        self.model = model
        self.solver = solver
        self.side = side
        self.sizes = sizes
        self.policy = policy
        self.profile = profile
        self.min_snapshots = min_snapshots
        self.weighting = weighting
        self.weights = np.asarray(scenario_weights, dtype=np.float64)
        self.carry = 0.0  # lot-rounding residual between decisions (planner.diffuse_lots)

    def _fit(self, curve: CostCurve) -> tuple[_Model | None, dict[str, object]]:
        """Fit the model to a window curve (None when there is no usable estimate)."""
        if self.model == "quadratic":
            fit = fit_quadratic(curve)
            f: dict[str, object] = {"beta": fit.beta, "gamma": fit.gamma, "fit_r2": fit.r2}
            if not (fit.ok and math.isfinite(fit.beta) and math.isfinite(fit.gamma)):
                return None, f | {"fit_status": fit.status}
            return _Model("quadratic", (fit.beta, fit.gamma)), f
        if self.model == "power":
            pw = fit_power(curve)
            f = {"a": pw.a, "b": pw.b, "fit_r2": pw.r2}
            if not (pw.ok and pw.a > 0 and math.isfinite(pw.b)):
                return None, f | {"fit_status": pw.status}
            return _Model("power", (pw.a, pw.b)), f
        knots, slopes = curve.segments()
        if slopes.size == 0 or not np.all(np.isfinite(slopes)):
            return None, {"fit_status": "no_curve"}
        return _Model("nonparametric", (knots, slopes)), {"slope0": float(slopes[0])}

    def _costs(
        self, m: _Model, profile: IntradayProfile, starts: NDArray[np.int64]
    ) -> tuple[CostSet, NDArray[np.float64], NDArray[np.float64]]:
        """Return the forecast cost set of periods k..N-1 and its multipliers (as the daemon).

        Quadratic: beta and gamma scaled by the profile's ``mb``, ``mg``; power and
        nonparametric: the whole cost scaled by the profile's cost multiplier ``mc``. Returns
        ``(costs, m1, m2)`` with the multipliers used (``m2`` only for gamma).
        """
        if m.kind == "quadratic":
            beta, gamma = m.params
            mb, mg = profile.multipliers(starts)
            return quadratic_costs(beta, gamma, mb, mg), mb, mg
        b = profile.bucket(starts)
        mc = profile.cost_mult[b] / profile.cost_mult[b[0]]
        if m.kind == "power":
            a, bb = m.params
            pw = PiecewisePowerCost.power(a * mc, np.full(mc.size, bb))
            return CostSet.of(pw, mc.size), mc, mc
        knots, slopes = m.params
        return nonparametric_costs(knots[:-1], slopes, mc), mc, mc

    @staticmethod
    def _table(
        m: _Model, m1: NDArray[np.float64], m2: NDArray[np.float64], knots: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Return the chord slopes of every period's forecast cost between knots, (H, J).

        Exact for the nonparametric curve when the knots include its own; chords of the
        quadratic and power law otherwise (convex, so the slopes are non-decreasing; a running
        max removes rounding).
        """
        if m.kind == "quadratic":
            beta, gamma = m.params
            vals = np.outer(beta * m1, knots) + np.outer(gamma * m2, knots * knots)
        elif m.kind == "power":
            a, bb = m.params
            vals = np.outer(a * m1, np.power(knots, 1.0 + bb))
        else:
            k0, sl = m.params
            cum = np.concatenate([[0.0], np.cumsum(sl * np.diff(k0))])
            base = np.interp(knots, k0, cum)
            past = knots > k0[-1]
            base[past] = cum[-1] + sl[-1] * (knots[past] - k0[-1])
            vals = np.outer(m1, base)
        slopes = np.diff(vals, axis=1) / np.diff(knots)
        return np.maximum.accumulate(slopes, axis=1)

    def decide(
        self,
        window: BookBatch,
        t_ns: int,
        grid: PeriodGrid,
        k: int,
        remaining: float,
        lot: int,
        twap_qty: float,
    ) -> MpcStep:
        """Return this period's decision (a TWAP slice when there is no estimate).

        Args:
            window: Rolling window of snapshots at ``t_ns``.
            t_ns: Decision time, ns.
            grid: The order's periods.
            k: Current period.
            remaining: Shares left to plan (from fills).
            lot: Lot size.
            twap_qty: The TWAP slice (fallback).
        """
        fields: dict[str, object] = {"n_snapshots": len(window)}
        if len(window) < self.min_snapshots:
            d = Decision(
                k,
                min(twap_qty, remaining),
                np.zeros(0),
                math.nan,
                "twap_fallback",
                "insufficient_data",
                0.0,
            )
            return MpcStep(d, None, fields | {"fit_status": "insufficient_data"})
        w = time_weights(window.ts_event_ns, t_ns) if self.weighting == "time" else None
        curve = cost_curve(window, self.side, self.sizes, self.policy, weights=w)  # type: ignore[arg-type]
        starts = grid.starts(k)
        model, f = self._fit(curve)
        fields |= f
        fields["frac_beyond_depth"] = float(np.nan_to_num(curve.frac_beyond_depth[-1]))
        if model is None:
            d = Decision(
                k,
                min(twap_qty, remaining),
                np.zeros(0),
                math.nan,
                "twap_fallback",
                "no impact estimate",
                0.0,
            )
            return MpcStep(d, None, fields)
        base, _, _ = self._costs(model, self.profile, starts)

        def g0(x: float, _c: CostSet = base) -> float:
            v = np.zeros(_c.H)
            v[0] = x
            return float(_c.cost(v)[0])

        if self.solver == "deterministic":
            d = decide_mpc(
                grid, k, remaining, base, lot=lot, fallback_twap_qty=twap_qty, carry=self.carry
            )
        else:
            d = self._decide_scenarios(curve, model, starts, grid, k, remaining, lot, twap_qty)
        self.carry = d.carry
        return MpcStep(d, g0, fields)

    def _decide_scenarios(
        self,
        curve: CostCurve,
        model: _Model,
        starts: NDArray[np.int64],
        grid: PeriodGrid,
        k: int,
        remaining: float,
        lot: int,
        twap_qty: float,
    ) -> Decision:
        h = grid.n - k
        if remaining <= 0:
            return Decision(k, 0.0, np.zeros(h), math.nan, "done", "nothing left", 0.0)
        if h <= 1:
            return Decision(
                k, remaining, np.array([remaining]), math.nan, "final", "last period", 0.0
            )
        std = np.nan_to_num(curve.std_cost, nan=0.0)
        adverse_m, _ = self._fit(dataclasses.replace(curve, mean_cost=curve.mean_cost + std))
        scen = [
            (model, self.profile),
            (adverse_m if adverse_m is not None else model, self.profile),
            (model, IntradayProfile.flat()),
        ]
        built = [self._costs(m, prof, starts) for m, prof in scen]
        t0 = time.perf_counter()
        # Every scenario tabulated on one knot grid (exact for the nonparametric curve,
        # chords of the quadratic and power law); quadratic mixtures are solved exactly.
        knots = _knots(self.sizes, remaining, thin=self.solver == "robust")
        slopes = [
            self._table(m, m1, m2, knots) for (m, _), (_, m1, m2) in zip(scen, built, strict=True)
        ]
        # Continuous plans; this period's child is rounded to lots by error diffusion below.
        if self.solver == "stochastic":
            res = _solve_mixture(scen, built, slopes, knots, self.weights, remaining, None)
        else:
            # Robust: the epigraph LP gives the worst case and its dual weights p*; the plan
            # is the p*-weighted mixture solved exactly in lots (for strictly convex costs
            # that is the robust optimum itself; with ties it is the same tie-break as the
            # deterministic MPC, instead of an arbitrary LP vertex).
            lp_res, p_star = solve_robust_pl(knots, slopes, remaining)
            res = lp_res
            if lp_res.ok:
                mixed = _solve_mixture(scen, built, slopes, knots, p_star, remaining, None)
                res = dataclasses.replace(
                    mixed,
                    message=f"{lp_res.message}; worst case {lp_res.cost:.6g}; "
                    f"p* = {np.round(p_star, 4).tolist()}; plan: p*-mixture in lots",
                )
        ms = (time.perf_counter() - t0) * 1e3
        return decision_from_plan(k, res, remaining, math.inf, lot, self.carry, ms, twap_qty)


def _solve_mixture(
    scen: list[tuple[_Model, IntradayProfile]],
    built: list[tuple[CostSet, NDArray[np.float64], NDArray[np.float64]]],
    slopes: list[NDArray[np.float64]],
    knots: NDArray[np.float64],
    weights: NDArray[np.float64],
    S: float,
    lot: int | None,
) -> SolveResult:
    """Minimise the weighted sum of the scenarios' costs, exactly in lots.

    Quadratic scenarios: ``solve_stochastic`` (the mixture is quadratic, water-filling). Others:
    the mixture of their tables (piecewise linear on shared knots) by ``solve_auto``.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if all(m.kind == "quadratic" for m, _ in scen):
        return solve_stochastic([c for c, _, _ in built], w, S, lot=lot)
    h = slopes[0].shape[0]
    mix = sum((wk * sk for wk, sk in zip(w, slopes, strict=True)), start=np.zeros_like(slopes[0]))
    pl = PiecewiseLinearCost(np.tile(knots[:-1], (h, 1)), mix)
    return solve_auto(CostSet.of(pl, h), S, lot=lot)


def _knots(sizes: NDArray[np.float64], remaining: float, *, thin: bool = False) -> NDArray:
    """Return the knot grid: 0, the sizes (every other one if ``thin``: a smaller LP), then
    doubling past the last size until ``remaining``."""
    grid = sizes[1::2] if thin and sizes.size > 24 else sizes
    ext = [float(sizes[-1])]
    while ext[-1] < remaining:
        ext.append(ext[-1] * 2.0)
    return np.unique(np.concatenate([[0.0], grid, ext]))


def solve_robust_pl(
    knots: NDArray[np.float64], slopes: list[NDArray[np.float64]], S: float
) -> tuple[SolveResult, NDArray[np.float64]]:
    """Minimise ``max_k sum_t g^k_t(x_t)`` for piecewise-linear convex costs on shared knots.

    The epigraph LP ``min z`` s.t. ``sum_{t,j} slope^k_{t,j} y_{t,j} <= z`` for every k,
    ``sum y = S``, ``0 <= y_{t,j} <= len_j`` is exact: all scenarios have non-decreasing slopes
    on the same segments, so filling a period's segments in order is cheapest for every
    scenario at once. Solved by HiGHS (``scipy.optimize.linprog``).

    Args:
        knots: Segment ends, shape (J+1,), from 0; the last one is >= S.
        slopes: Per scenario, slopes shape (H, J).
        S: Shares.

    Returns:
        ``(result, p)``: ``x`` (shape (H,)) and the worst-case cost, OPTIMAL or NUMERICAL with
        HiGHS's message; ``p`` the dual weights of the scenarios (shape (K,), summing to 1):
        which scenarios are worst at the optimum.
    """
    from scipy.optimize import linprog

    h, j = slopes[0].shape
    length = np.diff(knots)
    nv = h * j
    c = np.zeros(nv + 1)
    c[-1] = 1.0
    a_ub = np.hstack([np.stack([s.ravel() for s in slopes]), -np.ones((len(slopes), 1))])
    a_eq = np.concatenate([np.ones(nv), [0.0]])[None, :]
    bounds = np.column_stack([np.zeros(nv + 1), np.append(np.tile(length, h), np.inf)])
    bounds[-1, 0] = -np.inf
    lp = linprog(
        c, A_ub=a_ub, b_ub=np.zeros(len(slopes)), A_eq=a_eq, b_eq=[S], bounds=bounds, method="highs"
    )
    k = len(slopes)
    if lp.status != 0 or lp.x is None:
        fail = SolveResult(
            np.zeros(h), math.nan, math.nan, SolveStatus.NUMERICAL, f"robust LP: {lp.message}"
        )
        return fail, np.full(k, 1.0 / k)
    x = lp.x[:nv].reshape(h, j).sum(axis=1)
    p = np.clip(-np.asarray(lp.ineqlin.marginals, dtype=np.float64), 0.0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(k, 1.0 / k)
    res = SolveResult(
        x, float(lp.x[-1]), math.nan, SolveStatus.OPTIMAL, f"epigraph LP over {k} scenarios (HiGHS)"
    )
    return res, p
