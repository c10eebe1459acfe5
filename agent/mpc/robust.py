"""Uncertain costs: stochastic (expected cost), robust (worst case) and timing risk (pure).

Symbols: K scenarios with cost sets ``g^k`` and weights ``w_k``; ``C_k(x) = sum_t g^k_t(x_t)``.

- Stochastic: ``min_x sum_k p_k C_k(x)`` with ``p = w / sum(w)``: a separable convex problem
  again (for quadratic scenarios, exactly the quadratic with averaged beta and gamma).
- Robust: ``min_x max_k w_k C_k(x)`` (weights scale a scenario in the worst case; use 1 for
  the plain worst case). It is convex; its dual ``max_{p in simplex} D(p)``,
  ``D(p) = min_x sum_k p_k w_k C_k(x)``, is concave in p, smooth when the costs are strictly
  convex, and each evaluation is one water-filling. The K-dimensional dual is maximised with its
  exact gradient ``(w_k C_k(x(p)))_k``; the result carries the duality gap as proof.
- Box uncertainty ``beta in [beta_lo, beta_hi]``, ``gamma in [gamma_lo, gamma_hi]``: with
  ``x >= 0`` the worst case is the upper corner, so the robust schedule is the water-filling of
  ``(beta_hi, gamma_hi)``.
- Timing risk (Almgren-Chriss, beyond the spec): ``sum_t g_t(x_t) + kappa sigma^2 sum_t q_t^2``
  with ``q_t = S - sum_{j<=t} x_j`` the shares still held after period t (``q_H = 0``). For
  quadratic costs the stationarity conditions in q are tridiagonal and solved exactly; with
  constant costs ``q_t = S sinh(k (H - t)) / sinh(k H)``, ``2 (cosh k - 1) = kappa sigma^2 /
  gamma``. When bounds bind, an accelerated projected gradient with exact water-filling
  projection finishes the job; with lots the DP on the lot grid is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import solve_banded
from scipy.optimize import minimize

from agent.mpc.costs import CostSet
from agent.mpc.solvers import (
    SolveResult,
    SolveStatus,
    _waterfill,
    bounded_result,
    round_largest_remainder,
    solve_kkt,
    solve_quadratic,
)

__all__ = [
    "MAX_MILP_VARS",
    "solve_risk_averse",
    "solve_robust",
    "solve_robust_box",
    "solve_robust_lots",
    "solve_robust_pl",
    "solve_stochastic",
]

# Largest lot grid (periods x lots) the robust integer MILP is given; above it the continuous
# optimum is rounded and reported FEASIBLE with its gap to the dual bound.
MAX_MILP_VARS = 20_000


def solve_stochastic(
    scenarios: Sequence[CostSet],
    weights: ArrayLike,
    S: float,
    caps: ArrayLike | None = None,
    lot: int | None = None,
) -> SolveResult:
    """Minimise the probability-weighted expected cost over scenarios.

    Args:
        scenarios: K cost sets over the same H periods.
        weights: Probabilities (normalised here), shape (K,), >= 0, not all 0.
        S: Shares. caps, lot: as in ``solve_kkt``.
    """
    w = np.asarray(weights, float)
    if w.size != len(scenarios) or np.any(w < 0) or not w.sum() > 0:
        H = scenarios[0].H if scenarios else 0
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            "weights must be >= 0, one per scenario, not all zero",
        )
    mix = CostSet.mixture(scenarios, w / w.sum())
    return solve_kkt(mix, S, caps, lot)


def solve_robust_box(
    beta_hi: ArrayLike,
    gamma_hi: ArrayLike,
    S: float,
    caps: ArrayLike | None = None,
    lot: int | None = None,
) -> SolveResult:
    """Robust schedule under box uncertainty on (beta, gamma): the upper corner's optimum."""
    res = solve_quadratic(beta_hi, gamma_hi, S, caps, lot)
    if res.ok:
        return SolveResult(
            res.x,
            res.cost,
            res.lam,
            res.status,
            "worst case of the box is (beta_hi, gamma_hi)",
            res.n_iter,
        )
    return res


def solve_robust(
    scenarios: Sequence[CostSet],
    S: float,
    caps: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    *,
    gap_tol: float = 1e-8,
) -> SolveResult:
    """Minimise the worst weighted scenario cost ``max_k w_k C_k(x)``.

    Returns:
        ``x(p*)`` with ``cost = max_k w_k C_k(x)``; ``lam`` is the dual objective
        ``D(p*)``; status OPTIMAL when the relative duality gap is below ``gap_tol``
        (else MAX_ITER, with the gap in the message).
    """
    K = len(scenarios)
    H = scenarios[0].H
    w = np.ones(K) if weights is None else np.asarray(weights, float)
    if w.size != K or np.any(w < 0):
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            "weights must be >= 0, one per scenario",
        )
    u = None if caps is None else np.asarray(caps, float)

    def inner(p: NDArray[np.float64]) -> tuple[SolveResult, NDArray[np.float64]]:
        mix = CostSet.mixture(scenarios, np.maximum(p, 0.0) * w + 1e-300)
        r = solve_kkt(mix, S, u)
        c = np.array([wk * sc.total(r.x) for wk, sc in zip(w, scenarios, strict=True)])
        return r, c

    cache: dict[bytes, tuple[SolveResult, NDArray[np.float64]]] = {}

    def evaluate(p: NDArray[np.float64]) -> tuple[SolveResult, NDArray[np.float64]]:
        key = np.round(p, 15).tobytes()
        if key not in cache:
            cache[key] = inner(p)
        return cache[key]

    def neg_dual(p: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        c = evaluate(p)[1]
        return -float(p @ c), -c

    p0 = np.full(K, 1.0 / K)
    best_p = p0
    if K > 1:
        sol = minimize(
            neg_dual,
            p0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * K,
            constraints={"type": "eq", "fun": _simplex_gap, "jac": _simplex_gap_jac},
            options={"ftol": 1e-15, "maxiter": 200},
        )
        best_p = np.clip(sol.x, 0.0, None)
        best_p /= best_p.sum()
    for _ in range(3):  # each pass may bring one more scenario into the support
        best_p = _refine_dual(best_p, evaluate)
    c_now = evaluate(best_p)[1]
    if K <= 8 and float(c_now.max() - best_p @ c_now) > gap_tol * abs(float(c_now.max())):
        # The optimum's support is one of the 2^K - 1 subsets: try each (K is small).
        import itertools

        for size in range(1, K + 1):
            for A in itertools.combinations(range(K), size):
                start = np.zeros(K)
                start[list(A)] = 1.0 / size
                q = _refine_dual(start, evaluate, support=np.array(A))
                c_q = evaluate(q)[1]
                if float(c_q.max() - q @ c_q) < float(c_now.max() - best_p @ c_now):
                    best_p, c_now = q, c_q
    r, c = evaluate(best_p)
    if not r.ok:
        return r
    primal = float(c.max())
    dual = float(best_p @ c)
    gap = (primal - dual) / max(abs(primal), 1e-300)
    status = SolveStatus.OPTIMAL if gap <= gap_tol else SolveStatus.MAX_ITER
    msg = (
        f"worst case over {K} scenarios; relative duality gap {gap:.2e}; "
        f"p* = {best_p.round(6).tolist()}"
    )
    return SolveResult(r.x, primal, dual, status, msg)


def _simplex_gap(p: NDArray[np.float64]) -> float:
    """Return ``sum p - 1``: zero on the simplex the dual weights live on."""
    return float(p.sum()) - 1.0


def _simplex_gap_jac(p: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.ones_like(p)


def _refine_dual(
    p: NDArray[np.float64],
    evaluate: Callable[[NDArray[np.float64]], tuple[SolveResult, NDArray[np.float64]]],
    support: NDArray[np.intp] | None = None,
) -> NDArray[np.float64]:
    """Polish the dual optimum on its support: equalise the active scenarios' costs.

    At the optimum every scenario with ``p_k > 0`` has the same weighted cost and the others
    cost no more; a root find on that smooth system (support fixed) reaches machine precision
    where the bound-constrained dual iteration stalls. Kept only if it improves the dual gap.
    """
    from scipy.optimize import root

    c0 = evaluate(p)[1]
    # the support: scenarios in use, plus the costliest one (the dual iteration may have
    # dropped a scenario whose optimal weight is tiny but not zero)
    A = np.union1d(np.flatnonzero(p > 1e-9), [int(np.argmax(c0))]) if support is None else support

    def gap_of(q: NDArray[np.float64]) -> float:
        c = evaluate(q)[1]
        return float(c.max() - q @ c)

    if A.size == 1:
        q = np.zeros_like(p)
        q[A[0]] = 1.0
        return q if gap_of(q) <= gap_of(p) else p

    def F(pa: NDArray[np.float64]) -> NDArray[np.float64]:
        q = np.zeros_like(p)
        q[A] = pa
        c = evaluate(q)[1]
        gaps = np.concatenate([c[A[1:]] - c[A[0]], [pa.sum() - 1.0]])
        return np.asarray(gaps / max(abs(c[A[0]]), 1e-300), dtype=np.float64)

    sol = root(F, p[A], method="hybr", options={"xtol": 1e-15})
    q = np.zeros_like(p)
    q[A] = np.clip(sol.x, 0.0, None)
    if q.sum() <= 0:
        return p
    q /= q.sum()
    return q if gap_of(q) < gap_of(p) else p


def solve_risk_averse(
    beta: ArrayLike,
    gamma: ArrayLike,
    S: float,
    risk: float,
    caps: ArrayLike | None = None,
    lot: int | None = None,
    *,
    max_iter: int = 20_000,
    tol: float = 1e-13,
) -> SolveResult:
    """Minimise quadratic impact plus the Almgren-Chriss holding risk ``risk * sum_t q_t^2``.

    Args:
        beta, gamma: Quadratic cost per period, shape (H,).
        S: Shares.
        risk: ``kappa * sigma^2`` (currency per share^2 per period), >= 0.
        caps: Per-period caps, or None. lot: Lot size (then the DP on the lot grid is used).
    """
    b = np.asarray(beta, float).ravel()
    g = np.asarray(gamma, float).ravel()
    H = b.size
    if risk < 0 or not math.isfinite(risk):
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"risk aversion term must be >= 0, got {risk}",
        )
    if lot is not None:
        from agent.mpc.costs import QuadraticCost
        from agent.mpc.dp import MAX_DP_STATES, solve_dp

        if round(S) == S and S >= 0 and lot >= 1 and round(S) // lot + 1 > MAX_DP_STATES:
            return _risk_lots_rounded(b, g, S, risk, caps, lot, max_iter, tol)
        return solve_dp(CostSet.of(QuadraticCost(b, g), H), S, caps, lot, risk=risk)
    if risk == 0:
        return solve_quadratic(b, g, S, caps)
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, float).ravel()
    if float(u.sum()) < S:
        return SolveResult(
            u.copy(),
            math.nan,
            math.nan,
            SolveStatus.INFEASIBLE,
            f"caps sum to {u.sum():g} < S = {S:g}",
        )

    def objective(x: NDArray[np.float64]) -> float:
        q = S - np.cumsum(x)
        return float(np.sum(b * x + g * x * x) + risk * np.sum(q[:-1] ** 2))

    x = _risk_unconstrained(b, g, S, risk)
    if x is not None and np.all(x >= -1e-9) and np.all(x <= u + 1e-9):
        x = np.clip(x, 0.0, u)
        return SolveResult(
            x,
            objective(x),
            math.nan,
            SolveStatus.OPTIMAL,
            "exact (tridiagonal stationarity, bounds inactive)",
        )
    return _risk_projected(b, g, S, risk, u, objective, max_iter, tol)


def _risk_unconstrained(
    b: NDArray[np.float64], g: NDArray[np.float64], S: float, risk: float
) -> NDArray[np.float64] | None:
    """Solve the stationarity equations in q_1..q_{H-1} (tridiagonal); None if singular."""
    H = b.size
    if H == 1:
        return np.array([S])
    # d/dq_t: -2 g_t q_{t-1} + 2 (g_t + g_{t+1} + risk) q_t - 2 g_{t+1} q_{t+1} = b_t - b_{t+1}
    n = H - 1
    diag = 2.0 * (g[:-1] + g[1:] + risk)
    off = -2.0 * g[1:-1]
    rhs = b[:-1] - b[1:]
    rhs[0] += 2.0 * g[0] * S
    ab = np.zeros((3, n))
    ab[0, 1:] = off
    ab[1] = diag
    ab[2, :-1] = off
    try:
        q = solve_banded((1, 1), ab, rhs)
    except (np.linalg.LinAlgError, ValueError):
        return None
    qq = np.concatenate(([S], q, [0.0]))
    return -np.diff(qq)


def _risk_projected(
    b: NDArray[np.float64],
    g: NDArray[np.float64],
    S: float,
    risk: float,
    u: NDArray[np.float64],
    objective: object,
    max_iter: int,
    tol: float,
) -> SolveResult:
    """FISTA with exact projection onto {sum x = S, 0 <= x <= u} (a water-filling)."""
    H = b.size

    def grad(x: NDArray[np.float64]) -> NDArray[np.float64]:
        q = S - np.cumsum(x)
        q[-1] = 0.0
        # d/dx_j of risk * sum_t q_t^2 = -2 risk * sum_{t >= j} q_t
        tail = np.cumsum((q)[::-1])[::-1]
        return b + 2.0 * g * x - 2.0 * risk * tail

    def project(y: NDArray[np.float64]) -> NDArray[np.float64]:
        x, _ = _waterfill(-2.0 * y, np.ones(H), u, S)
        return x

    lip = 2.0 * float(g.max()) + 2.0 * risk * H * H  # bound on the Hessian's norm
    step = 1.0 / lip
    x = project(np.full(H, S / H))
    y = x.copy()
    t = 1.0
    f_prev = objective(x)  # type: ignore[operator]
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - iteration count is reported
        x_new = project(y - step * grad(y))
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        f_new = objective(x_new)  # type: ignore[operator]
        if f_new > f_prev:  # adaptive restart keeps it monotone
            y = x_new.copy()
            t_new = 1.0
        done = abs(f_prev - f_new) <= tol * max(abs(f_new), 1.0) and np.max(
            np.abs(x_new - x)
        ) < 1e-9 * max(S, 1.0)
        x, t, f_prev = x_new, t_new, f_new
        if done:
            break
    polished = _risk_polish(b, g, S, risk, u, x)
    if polished is not None:
        msg = f"projected gradient (FISTA, {it} iterations) + exact active-set polish"
        return SolveResult(polished, objective(polished), math.nan, SolveStatus.OPTIMAL, msg, it)  # type: ignore[operator]
    status = SolveStatus.OPTIMAL if it < max_iter else SolveStatus.MAX_ITER
    return SolveResult(
        x, f_prev, math.nan, status, f"projected gradient (FISTA), {it} iterations", it
    )


def _risk_polish(
    b: NDArray[np.float64],
    g: NDArray[np.float64],
    S: float,
    risk: float,
    u: NDArray[np.float64],
    x: NDArray[np.float64],
    rounds: int = 20,
) -> NDArray[np.float64] | None:
    """Solve the QP exactly on the active set suggested by ``x``, repairing it a few times.

    With the periods at 0 or at their cap fixed, the rest is an equality-constrained QP (one
    dense linear system). The answer is accepted only with a KKT certificate: feasible, and
    every fixed period's reduced gradient of the right sign.
    """
    H = b.size
    Lm = np.tril(np.ones((H, H)))[:-1]
    P = 2.0 * np.diag(g) + 2.0 * risk * Lm.T @ Lm
    q = b - 2.0 * risk * S * Lm.sum(axis=0)
    tol = 1e-9 * max(S, 1.0)
    at0 = x <= tol
    atu = np.isfinite(u) & (x >= u - tol)
    for _ in range(rounds):
        free = ~(at0 | atu)
        if not free.any():
            return None
        fixed = np.where(atu, u, 0.0)
        fixed[free] = 0.0
        nf = int(free.sum())
        K = np.zeros((nf + 1, nf + 1))
        K[:nf, :nf] = P[np.ix_(free, free)]
        K[:nf, nf] = -1.0
        K[nf, :nf] = 1.0
        rhs = np.concatenate(
            [-(q[free] + P[np.ix_(free, ~free)] @ fixed[~free]), [S - fixed[~free].sum()]]
        )
        try:
            sol = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:
            return None
        y = fixed.copy()
        y[free] = sol[:nf]
        mu = sol[nf]
        grad = P @ y + q - mu
        eps = 1e-9 * max(abs(mu), 1e-12)
        low = free & (y < -tol)
        high = free & np.isfinite(u) & (y > u + tol)
        bad0 = at0 & (grad < -eps)
        badu = atu & (grad > eps)
        if not (low.any() or high.any() or bad0.any() or badu.any()):
            return np.clip(y, 0.0, u)
        at0 = (at0 & ~bad0) | low
        atu = (atu & ~badu) | high
    return None


def _risk_lots_rounded(
    b: NDArray[np.float64],
    g: NDArray[np.float64],
    S: float,
    risk: float,
    caps: ArrayLike | None,
    lot: int,
    max_iter: int,
    tol: float,
) -> SolveResult:
    """Lots on a grid too large for the DP: round the continuous optimum, bound the gap.

    The continuous optimum is a lower bound of the integer one; the rounded schedule says how
    far above it it is, and is ``OPTIMAL`` only when it meets it.
    """
    cont = solve_risk_averse(b, g, S, risk, caps, None, max_iter=max_iter, tol=tol)
    if cont.status is not SolveStatus.OPTIMAL:
        return cont
    u = np.full(b.size, np.inf) if caps is None else np.asarray(caps, float).ravel()
    x = round_largest_remainder(cont.x, S, u, lot)
    q = S - np.cumsum(x)
    cost = float(np.sum(b * x + g * x * x) + risk * np.sum(q[:-1] ** 2))
    what = (
        f"{round(S) // lot + 1} lot states exceed the DP's limit: continuous optimum rounded "
        f"to lots of {lot}"
    )
    return bounded_result(x, cost, cont.cost, math.nan, what)


def solve_robust_lots(
    scenarios: Sequence[CostSet],
    S: float,
    lot: int,
    caps: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> SolveResult:
    """Minimise the worst weighted scenario cost in whole lots, with a proof when possible.

    On the lot grid a convex cost is exactly its piecewise-linear interpolation, and every
    scenario fills a period's lot segments in the same (cheapest-first) order, so the epigraph
    MILP ``min z  s.t.  sum_{t,j} w_k dg^k_{t,j} y_{t,j} <= z,  n_t = sum_j y_{t,j}`` integer,
    ``sum_t n_t = S / lot``, ``0 <= y <= 1`` has the integer optimum as its optimum. HiGHS
    solves it and returns its dual bound: the result is ``OPTIMAL`` only when the schedule
    meets that bound. Grids above ``MAX_MILP_VARS`` variables or an odd lot (``S mod lot``)
    fall back to rounding the continuous optimum (``FEASIBLE``, gap to the continuous dual).

    Args:
        scenarios: K convex cost sets over the same H periods.
        S: Shares, a whole number. lot: Lot size, >= 1.
        caps: Per-period caps in shares, or None. weights: Scenario weights (default 1).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    K, H = len(scenarios), scenarios[0].H
    w = np.ones(K) if weights is None else np.asarray(weights, float)
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, float).ravel()
    if lot < 1 or round(S) != S or S < 0:
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"lots need a whole S >= 0 and lot >= 1, got S={S}, lot={lot}",
        )
    total, odd = divmod(round(S), lot)
    cont = solve_robust(scenarios, S, u, w)
    if not cont.ok:
        return cont

    def worst(x: NDArray[np.float64]) -> float:
        return max(float(wk * sc.total(x)) for wk, sc in zip(w, scenarios, strict=True))

    cap_lots = np.minimum(np.where(np.isfinite(u), np.floor(u / lot + 1e-9), total), total)
    J = int(cap_lots.max()) if H else 0
    if odd or H * J > MAX_MILP_VARS or float(cap_lots.sum()) < total:
        x = round_largest_remainder(cont.x, S, u, lot)
        why = "odd lot" if odd else f"{H * J} lot variables > {MAX_MILP_VARS}"
        return bounded_result(
            x, worst(x), cont.lam, cont.lam, f"worst case rounded to lots of {lot} ({why})"
        )
    grid = np.arange(J + 1, dtype=np.float64) * lot
    # dg[k, t, j]: scenario k's cost of lot j+1 in period t (inf where past the cap).
    dg = np.empty((K, H, J))
    for k, sc in enumerate(scenarios):
        g = np.stack([sc.cost(np.full(H, v)) for v in grid], axis=1)  # (H, J+1)
        dg[k] = w[k] * np.diff(g, axis=1)
    live = np.arange(J)[None, :] < cap_lots[:, None]  # (H, J)
    nv = H * J
    # variables: y (H*J, in [0, 1], 0 past the cap), n (H, integer), z
    c = np.zeros(nv + H + 1)
    c[-1] = 1.0
    a_cost = np.hstack([np.where(live, dg, 0.0).reshape(K, nv), np.zeros((K, H)), -np.ones((K, 1))])
    a_link = np.hstack([np.kron(np.eye(H), np.ones((1, J))), -np.eye(H), np.zeros((H, 1))])
    a_sum = np.concatenate([np.zeros(nv), np.ones(H), [0.0]])[None, :]
    lb = np.zeros(nv + H + 1)
    lb[-1] = -np.inf
    ub = np.concatenate([live.ravel().astype(float), cap_lots, [np.inf]])
    res = milp(
        c,
        integrality=np.concatenate([np.zeros(nv), np.ones(H), [0]]),
        bounds=Bounds(lb, ub),
        constraints=[
            LinearConstraint(a_cost, -np.inf, 0.0),
            LinearConstraint(a_link, 0.0, 0.0),
            LinearConstraint(a_sum, total, total),
        ],
        options={"mip_rel_gap": 1e-12},
    )
    if res.x is None:
        return SolveResult(
            cont.x, math.nan, math.nan, SolveStatus.NUMERICAL, f"robust lot MILP: {res.message}"
        )
    x = np.round(res.x[nv : nv + H]) * lot
    bound = float(getattr(res, "mip_dual_bound", math.nan))
    if not math.isfinite(bound):
        bound = cont.lam
    return bounded_result(
        x,
        worst(x),
        max(bound, cont.lam),
        cont.lam,
        f"worst case over {K} scenarios in lots of {lot}: epigraph MILP (HiGHS)",
    )


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
    bounds: list[tuple[float | None, float | None]] = [(0.0, float(v)) for v in np.tile(length, h)]
    bounds.append((None, None))  # z is free
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
