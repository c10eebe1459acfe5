"""The JSON problem format of ``exec-agent solve`` (pure).

Input (one object)::

    {
      "quantity": 10000,                  # S, shares (whole when "lot" is given)
      "lot": 100,                         # optional, default 1
      "method": "auto",                   # auto | kkt | dp | robust | stochastic
      "periods": [                        # one entry per period
        {"model": "quadratic", "beta": 0.02, "gamma": 1e-5, "cap": 3000},
        {"model": "power", "a": 0.001, "b": 0.5},
        {"model": "piecewise_power", "a": 0.001, "b": [0.3, 0.9], "breakpoints": [1500]},
        {"model": "piecewise_linear", "sizes": [0, 100, 300], "costs": [0, 1.0, 5.0]}
      ],
      "scenarios": [{"weight": 0.7, "periods": [...]}, ...],   # robust / stochastic
      "uncertainty": {"beta": 0.2, "gamma": 0.5},              # robust box, relative
      "risk_aversion": 1e-6, "sigma": 0.5                      # Almgren-Chriss timing risk
    }

Output: ``{"x": [...], "cost": float, "status": "optimal", "lambda": float | null,
"method": "...", "message": "..."}``. ``cost`` includes the risk term when there is one; for
robust it is the worst scenario's cost, for stochastic the expected cost.

``auto`` picks the exact method: the quadratic water-filling when every period is quadratic,
the segment sort for piecewise-linear costs, KKT otherwise; scenarios mean ``stochastic``; a
risk term means the timing-risk solver. Caps come from the ``cap`` of ``periods`` (or of the
first scenario when ``periods`` is absent).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.mpc.costs import (
    CostSet,
    Model,
    PiecewiseLinearCost,
    PiecewisePowerCost,
    QuadraticCost,
)
from agent.mpc.dp import solve_dp
from agent.mpc.robust import (
    solve_risk_averse,
    solve_robust,
    solve_robust_box,
    solve_robust_lots,
    solve_stochastic,
)
from agent.mpc.solvers import SolveResult, solve_auto

__all__ = ["ProblemError", "parse_periods", "solve_problem"]

METHODS = ("auto", "kkt", "dp", "robust", "stochastic")
MODELS = ("quadratic", "power", "piecewise_power", "piecewise_linear")


class ProblemError(ValueError):
    """Raised for a malformed problem; the message starts with the key path."""


def _num(
    d: dict[str, Any], key: str, where: str, *, lo: float | None = 0.0, strict: bool = False
) -> float:
    if key not in d:
        raise ProblemError(f"{where}.{key}: missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ProblemError(f"{where}.{key}: must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if strict else v < lo):
        raise ProblemError(f"{where}.{key}: must be {'>' if strict else '>='} {lo:g}, got {v}")
    return float(v)


def _nums(d: dict[str, Any], key: str, where: str) -> list[float]:
    v = d.get(key)
    if not isinstance(v, list) or not v:
        raise ProblemError(f"{where}.{key}: must be a non-empty list of numbers")
    out = []
    for i, e in enumerate(v):
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
            raise ProblemError(f"{where}.{key}[{i}]: must be a finite number, got {e!r}")
        out.append(float(e))
    return out


_KEYS = {
    "quadratic": {"model", "beta", "gamma", "cap"},
    "power": {"model", "a", "b", "cap"},
    "piecewise_power": {"model", "a", "b", "breakpoints", "cap"},
    "piecewise_linear": {"model", "sizes", "costs", "cap"},
}


def parse_periods(periods: Any, where: str, *, convex: bool = True) -> tuple[CostSet, np.ndarray]:
    """Turn a list of period objects into a ``CostSet`` and the caps array.

    ``convex=False`` (the DP, exact for any cost) accepts piecewise-linear points whose slopes
    fall and piecewise-power exponents that decrease; every other method needs convex costs.

    Raises:
        ProblemError: naming the key path (``periods[3].gamma: must be >= 0``).
    """
    if not isinstance(periods, list) or not periods:
        raise ProblemError(f"{where}: must be a non-empty list of periods")
    H = len(periods)
    caps = np.full(H, np.inf)
    quad: list[tuple[int, float, float]] = []
    ppow: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    pwl: list[tuple[int, np.ndarray, np.ndarray]] = []
    for t, p in enumerate(periods):
        w = f"{where}[{t}]"
        if not isinstance(p, dict):
            raise ProblemError(f"{w}: must be an object")
        model = p.get("model")
        if model not in MODELS:
            raise ProblemError(f"{w}.model: must be one of {', '.join(MODELS)}, got {model!r}")
        extra = set(p) - _KEYS[model]
        if extra:
            raise ProblemError(f"{w}: unknown key {sorted(extra)[0]!r} for model {model}")
        if "cap" in p:
            caps[t] = _num(p, "cap", w)
        if model == "quadratic":
            quad.append((t, _num(p, "beta", w), _num(p, "gamma", w)))
        elif model == "power":
            a = _num(p, "a", w, strict=True)
            ppow.append((t, np.array([a]), np.array([_num(p, "b", w)]), np.zeros(1)))
        elif model == "piecewise_power":
            a0 = _num(p, "a", w, strict=True)
            b = _nums(p, "b", w)
            bp = _nums(p, "breakpoints", w) if p.get("breakpoints") else []
            if len(bp) != len(b) - 1:
                raise ProblemError(f"{w}.breakpoints: needs len(b) - 1 = {len(b) - 1} entries")
            if any(x < 0 for x in b):
                raise ProblemError(f"{w}.b: exponents must be >= 0")
            if convex and any(b2 < b1 for b1, b2 in pairwise(b)):
                raise ProblemError(
                    f"{w}.b: exponents must be non-decreasing (convex); only method dp "
                    "takes a non-convex cost"
                )
            if any(x <= 0 for x in bp) or any(y <= x for x, y in pairwise(bp)):
                raise ProblemError(f"{w}.breakpoints: must be > 0 and increasing")
            ppow.append((t, *PiecewisePowerCost.from_regimes(a0, b, bp)))
        else:
            sizes, costs = _nums(p, "sizes", w), _nums(p, "costs", w)
            try:
                k, s = PiecewiseLinearCost.from_points(sizes, costs, convex=convex)
            except ValueError as e:
                hint = "; only method dp takes a non-convex cost" if "convex" in str(e) else ""
                raise ProblemError(f"{w}: {e}{hint}") from None
            pwl.append((t, k, s))
    blocks: list[tuple[Model, NDArray[np.intp]]] = []
    if quad:
        idx = np.array([q[0] for q in quad])
        blocks.append(
            (QuadraticCost(np.array([q[1] for q in quad]), np.array([q[2] for q in quad])), idx)
        )
    if ppow:
        R = max(len(e[1]) for e in ppow)
        pa, pb, pc = (np.full((len(ppow), R), np.inf) for _ in range(3))
        for i, (_, ai, bi, ci) in enumerate(ppow):
            pa[i, : ai.size], pb[i, : bi.size], pc[i, : ci.size] = ai, bi, ci
            pa[i, ai.size :], pb[i, bi.size :] = ai[-1], bi[-1]
        blocks.append((PiecewisePowerCost(pa, pb, pc), np.array([e[0] for e in ppow])))
    if pwl:
        M = max(e[1].size for e in pwl)
        kn = np.full((len(pwl), M), np.inf)
        sl = np.full((len(pwl), M), np.inf)
        for i, (_, k, s) in enumerate(pwl):
            kn[i, : k.size], sl[i, : s.size] = k, s
        blocks.append((PiecewiseLinearCost(kn, sl), np.array([e[0] for e in pwl])))
    return CostSet(blocks, H), caps


def _result(res: SolveResult, method: str) -> dict[str, Any]:
    lam = None if res.lam is None or not math.isfinite(res.lam) else float(res.lam)
    cost = None if not math.isfinite(res.cost) else float(res.cost)
    return {
        "x": [float(v) for v in res.x],
        "cost": cost,
        "status": str(res.status),
        "lambda": lam,
        "method": method,
        "message": res.message,
    }


def solve_problem(problem: Any) -> dict[str, Any]:
    """Solve one problem in the JSON format above and return the output object.

    Raises:
        ProblemError: malformed input, with the key path.
    """
    if not isinstance(problem, dict):
        raise ProblemError("(top level): must be a JSON object")
    known = {
        "quantity",
        "lot",
        "method",
        "periods",
        "scenarios",
        "uncertainty",
        "risk_aversion",
        "sigma",
    }
    extra = set(problem) - known
    if extra:
        raise ProblemError(f"{sorted(extra)[0]}: unknown key")
    S = _num(problem, "quantity", "problem")
    lot_given = "lot" in problem
    lot = problem.get("lot", 1)
    if isinstance(lot, bool) or not isinstance(lot, int) or lot < 1:
        raise ProblemError(f"lot: must be a whole number >= 1, got {lot!r}")
    if lot_given and round(S) != S:
        raise ProblemError(f"quantity: must be a whole number of shares with a lot, got {S}")
    method = problem.get("method", "auto")
    if method not in METHODS:
        raise ProblemError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    risk = 0.0
    if "risk_aversion" in problem or "sigma" in problem:
        kappa = _num(problem, "risk_aversion", "problem")
        sigma = _num(problem, "sigma", "problem")
        risk = kappa * sigma * sigma
    # lot defaults to 1: whole shares; a fractional quantity without a lot solves continuously
    lots = lot if (lot_given or round(S) == S) else None

    convex = method != "dp"  # the DP is exact for any cost; the other methods need convexity
    scen: list[tuple[float, CostSet]] = []
    if "scenarios" in problem:
        sl = problem["scenarios"]
        if not isinstance(sl, list) or not sl:
            raise ProblemError("scenarios: must be a non-empty list")
        for k, sc in enumerate(sl):
            if not isinstance(sc, dict):
                raise ProblemError(f"scenarios[{k}]: must be an object")
            wgt = _num(sc, "weight", f"scenarios[{k}]") if "weight" in sc else 1.0
            cs, _ = parse_periods(sc.get("periods"), f"scenarios[{k}].periods", convex=convex)
            scen.append((wgt, cs))
        Hs = {cs.H for _, cs in scen}
        if len(Hs) != 1:
            raise ProblemError("scenarios: every scenario needs the same number of periods")
    if "periods" in problem:
        costs, caps = parse_periods(problem["periods"], "periods", convex=convex)
        if scen and scen[0][1].H != costs.H:
            raise ProblemError("scenarios: periods count differs from 'periods'")
    elif scen:
        costs, caps = parse_periods(
            problem["scenarios"][0]["periods"], "scenarios[0].periods", convex=convex
        )
    else:
        raise ProblemError("periods: missing")

    if method == "auto":
        if scen:
            method = "stochastic"
        elif "uncertainty" in problem:
            method = "robust"
    if method in ("robust", "stochastic") and not scen and "uncertainty" not in problem:
        raise ProblemError(f"scenarios: method {method} needs scenarios (or uncertainty)")

    if method == "dp":
        return _result(solve_dp(costs, S, caps, lot, risk=risk), "dp")
    if method == "stochastic":
        return _result(
            solve_stochastic([c for _, c in scen], [w for w, _ in scen], S, caps, lots),
            "stochastic",
        )
    if method == "robust":
        if scen:
            wts = [w for w, _ in scen]
            if lot_given:
                res = solve_robust_lots([c for _, c in scen], S, lot, caps, wts)
            else:
                res = solve_robust([c for _, c in scen], S, caps, wts)
            return _result(res, "robust")
        q = costs.quadratic
        unc = problem["uncertainty"]
        if q is None or not isinstance(unc, dict):
            raise ProblemError("uncertainty: box uncertainty needs quadratic periods and an object")
        db = _num(unc, "beta", "uncertainty") if "beta" in unc else 0.0
        dg = _num(unc, "gamma", "uncertainty") if "gamma" in unc else 0.0
        return _result(
            solve_robust_box(q.beta * (1 + db), q.gamma * (1 + dg), S, caps, lots), "robust_box"
        )
    if risk > 0:
        q = costs.quadratic
        if q is None:
            raise ProblemError("risk_aversion: needs quadratic periods (or method dp)")
        # Lots make the risk problem a DP on the lot grid: only when asked for explicitly.
        lot_r = lot if lot_given else None
        return _result(solve_risk_averse(q.beta, q.gamma, S, risk, caps, lot_r), "risk")
    method_name = (
        "quadratic"
        if costs.quadratic is not None
        else "piecewise_linear"
        if all(isinstance(m, PiecewiseLinearCost) for m, _ in costs.blocks)
        else "kkt"
    )
    return _result(solve_auto(costs, S, caps, lots), method_name)
