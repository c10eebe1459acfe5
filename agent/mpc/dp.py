"""Dynamic programming on a lot grid, for any g_t (convex or not) (pure).

Bellman recursion of the specification (section 2), with the state ``s`` = grid units still to
execute before period t::

    V(N-1, s) = g_{N-1}(s)                    the last period executes what is left
    V(t, s)   = min_{0 <= j <= min(s, c_t)}  g_t(j) + rho(s - j) + V(t+1, s - j)

where ``rho(q) = kappa sigma^2 q^2`` is the optional Almgren-Chriss holding risk (0 without it)
and ``c_t`` the cap in units. One grid unit is ``gcd(S, lot)`` shares, so the grid holds S
exactly. Each period is one vectorised min-plus step over an (n+1) x (n+1) view (no Python loop
over states): O(H n^2) work, O(H n) memory for the argmins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from agent.mpc.costs import CostSet, Model
from agent.mpc.solvers import SolveResult, SolveStatus

__all__ = ["MAX_DP_STATES", "solve_dp"]

MAX_DP_STATES = 20_000


def solve_dp(
    costs: CostSet,
    S: float,
    caps: ArrayLike | None = None,
    lot: int = 1,
    *,
    risk: float = 0.0,
) -> SolveResult:
    """Solve on the lot grid by backward induction; exact on the grid for any cost.

    The feasible set is the one of the integer-lot solvers: every period trades whole lots, and
    one period may also take the odd lot ``r = S mod lot``; a second layer of states (odd lot
    still to place or not) keeps that exact.

    Args:
        costs: Cost per period (any model, ``TabulatedCost`` included).
        S: Shares to allocate, a whole number.
        caps: Per-period caps in shares, shape (H,), or None.
        lot: Lot size in shares.
        risk: ``kappa * sigma^2`` of the holding-risk term (currency per share^2), >= 0.

    Returns:
        The grid optimum; ``NUMERICAL`` if the grid would exceed ``MAX_DP_STATES`` states,
        ``INFEASIBLE`` if the caps cannot hold S.
    """
    H = costs.H
    if round(S) != S or S < 0 or lot < 1:
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"DP needs a whole S >= 0 and lot >= 1, got S={S}, lot={lot}",
        )
    S_int = round(S)
    n, r = divmod(S_int, lot)
    if n + 1 > MAX_DP_STATES:
        return SolveResult(
            np.zeros(H),
            math.nan,
            math.nan,
            SolveStatus.NUMERICAL,
            f"grid of {n + 1} states exceeds {MAX_DP_STATES}: use a larger lot",
        )
    u = np.full(H, np.inf) if caps is None else np.asarray(caps, float).ravel()
    grid = np.arange(n + 1, dtype=np.float64) * lot
    G = np.empty((H, n + 1))
    Godd = np.full((H, n + 1), np.inf)
    for t in range(H):  # H vectorised evaluations of length n+1
        G[t] = _cost_column(costs, t, grid)
        if r:
            Godd[t] = _cost_column(costs, t, grid + r)
    G[grid[None, :] > u[:, None] + 1e-9] = np.inf
    Godd[(grid + r)[None, :] > u[:, None] + 1e-9] = np.inf
    j = np.arange(n + 1)
    pad = np.full(n, np.inf)

    def step(
        g: NDArray[np.float64], nxt: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        # min_j g[j] + nxt[s - j] for every s, as one strided (n+1) x (n+1) view
        window = sliding_window_view(np.concatenate([pad, nxt]), n + 1)  # [s, n-j] = nxt[s-j]
        M = window[:, ::-1] + g[None, :]
        best = np.argmin(M, axis=1)
        return M[j, best], best

    hold0 = risk * grid * grid  # holding after a period: (s - j) lots, odd lot already placed
    hold1 = risk * (grid + r) ** 2  # ... odd lot still held
    V0 = G[H - 1].copy()  # last period: execute everything left
    V1 = Godd[H - 1].copy()
    c0 = np.empty((H, n + 1), dtype=np.int32)
    c1 = np.empty((H, n + 1), dtype=np.int32)
    odd_now = np.zeros((H, n + 1), dtype=bool)
    c0[H - 1] = j
    c1[H - 1] = j
    odd_now[H - 1] = True
    for t in range(H - 2, -1, -1):
        v0, b0 = step(G[t], V0 + hold0)
        if r:
            keep, bk = step(G[t], V1 + hold1)  # odd lot still pending after t
            place, bp = step(Godd[t], V0 + hold0)  # odd lot placed in t
            use = place < keep
            V1 = np.where(use, place, keep)
            c1[t] = np.where(use, bp, bk)
            odd_now[t] = use
        V0 = v0
        c0[t] = b0
    V = V1 if r else V0
    if not np.isfinite(V[n]):
        return SolveResult(
            np.minimum(u, S),
            math.nan,
            math.nan,
            SolveStatus.INFEASIBLE,
            f"no schedule in lots of {lot} fits the caps (S = {S_int})",
        )
    x = np.zeros(H)
    s, pending = n, bool(r)
    for t in range(H):  # reconstruct the path: H steps
        if pending:
            k = int(c1[t, s])
            x[t] = k * lot
            if odd_now[t, s]:
                x[t] += r
                pending = False
        else:
            k = int(c0[t, s])
            x[t] = k * lot
        s -= k
    q = S_int - np.cumsum(x)
    cost = costs.total(x) + risk * float(np.sum(q[:-1] ** 2))
    return SolveResult(
        x, cost, math.nan, SolveStatus.OPTIMAL, f"DP on a grid of {n + 1} states of {lot} shares"
    )


def _cost_column(costs: CostSet, t: int, grid: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return g_t at every grid size (other periods evaluated at 0 and ignored)."""
    from agent.mpc.costs import MixtureCost

    for m, idx in costs.blocks:
        hit = np.flatnonzero(np.asarray(idx) == t)
        if hit.size:
            k = int(hit[0])
            if isinstance(m, MixtureCost):
                return sum(
                    (w * _cost_column(p, k, grid) for w, p in zip(m.weights, m.parts, strict=True)),
                    start=np.zeros(grid.size),
                )
            sub = _select(m, k, grid.size)
            return np.asarray(sub.cost(grid), dtype=np.float64)
    raise ValueError(f"period {t} has no model")


def _select(m: Model, k: int, reps: int) -> Model:
    """Return model ``m`` restricted to its row ``k``, repeated ``reps`` times."""
    from dataclasses import fields, is_dataclass, replace

    from agent.mpc.costs import TabulatedCost

    if isinstance(m, TabulatedCost):
        fn = m.fn

        def row(_t: int, x: NDArray[np.float64]) -> NDArray[np.float64]:
            return fn(k, x)

        return TabulatedCost(row, reps, row_of=True)
    if not is_dataclass(m):
        raise TypeError(f"unknown cost model {type(m).__name__}")
    kw: dict[str, Any] = {}  # arrays of differing dtypes, per the fields of m
    for f in fields(m):
        v = getattr(m, f.name)
        if isinstance(v, np.ndarray) and v.shape[:1] and v.shape[0] > k:
            kw[f.name] = np.repeat(v[k : k + 1], reps, axis=0)
    return replace(m, **kw)
