"""``exec-agent solve``: DP takes any cost, lots never fake a status, failures exit non-zero."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest

from agent.mpc.problem import ProblemError, parse_periods, solve_problem
from agent.mpc.robust import solve_robust_lots
from agent.solve_cli import run

FEE = {"model": "piecewise_linear", "sizes": [0, 10, 300], "costs": [0, 5, 6]}  # a fixed fee


def _cli(tmp_path, problem) -> int:
    f = tmp_path / "p.json"
    f.write_text(json.dumps(problem))
    return run(argparse.Namespace(input=str(f), indent=None))


def _brute_dp(problem):
    """Cheapest whole-lot schedule by enumeration (tiny problems only)."""
    costs, _ = parse_periods(problem["periods"], "periods", convex=False)
    lot, S = problem["lot"], problem["quantity"]
    n = S // lot
    best = np.inf
    for split in itertools.product(range(n + 1), repeat=costs.H - 1):
        if sum(split) <= n:
            x = np.array([*split, n - sum(split)], float) * lot
            best = min(best, costs.total(x))
    return best


def test_dp_takes_a_non_convex_cost_and_finds_its_optimum():
    problem = {
        "quantity": 300,
        "lot": 10,
        "method": "dp",
        "periods": [FEE, FEE, {"model": "quadratic", "beta": 0.1, "gamma": 1e-3}],
    }
    out = solve_problem(problem)
    assert out["status"] == "optimal"
    assert sum(out["x"]) == 300
    assert out["cost"] == pytest.approx(_brute_dp(problem), rel=1e-12)
    # Non-convex power regimes too (exponents falling), only for the DP.
    pp = {"model": "piecewise_power", "a": 0.01, "b": [0.8, 0.2], "breakpoints": [100]}
    out = solve_problem({"quantity": 200, "lot": 10, "method": "dp", "periods": [pp, pp]})
    assert out["status"] == "optimal" and sum(out["x"]) == 200


def test_other_methods_still_refuse_a_non_convex_cost_and_point_to_dp():
    with pytest.raises(ProblemError, match=r"periods\[0\]: costs are not convex.*method dp"):
        solve_problem({"quantity": 300, "lot": 10, "periods": [FEE, FEE]})


def test_timing_risk_with_lot_1_on_a_million_shares_is_answered_not_zeroed(tmp_path):
    periods = [{"model": "quadratic", "beta": 0.01, "gamma": 1e-6}] * 10
    problem = {
        "quantity": 1_000_000,
        "lot": 1,
        "periods": periods,
        "risk_aversion": 1e-6,
        "sigma": 0.5,
    }
    out = solve_problem(problem)
    x = np.array(out["x"])
    assert out["status"] != "numerical"
    assert x.sum() == 1_000_000 and np.all(x == np.round(x)) and np.all(x >= 0)
    cont = solve_problem({k: v for k, v in problem.items() if k != "lot"})  # continuous
    assert cont["status"] == "optimal"
    assert out["cost"] >= cont["cost"] * (1 - 1e-12)  # never below the continuous bound
    assert "lower bound" in out["message"]
    assert _cli(tmp_path, problem) == (0 if out["status"] == "optimal" else 1)


def _robust_problem(lot):
    q = lambda b, g: {"model": "quadratic", "beta": b, "gamma": g}  # noqa: E731
    return {
        "quantity": 9000,
        "lot": lot,
        "method": "robust",
        "scenarios": [
            {"weight": 1, "periods": [q(0.03, 3e-5), q(0.015, 1e-5), q(0.015, 1e-5)]},
            {"weight": 1, "periods": [q(0.015, 1e-5), q(0.03, 3e-5), q(0.02, 1e-5)]},
        ],
    }


def _brute_robust(problem):
    scen = [(s["weight"], parse_periods(s["periods"], "p")[0]) for s in problem["scenarios"]]
    lot, n = problem["lot"], problem["quantity"] // problem["lot"]
    best = np.inf
    for a in range(n + 1):
        for b in range(n + 1 - a):
            x = np.array([a, b, n - a - b], float) * lot
            best = min(best, max(w * c.total(x) for w, c in scen))
    return best


@pytest.mark.parametrize("lot", [300, 500, 1000, 1500])
def test_robust_with_lots_says_optimal_only_at_the_integer_optimum(lot):
    problem = _robust_problem(lot)
    out = solve_problem(problem)
    x = np.array(out["x"])
    assert x.sum() == 9000 and np.all(x % lot == 0)
    best = _brute_robust(problem)
    assert out["cost"] >= best * (1 - 1e-12)
    if out["status"] == "optimal":
        assert out["cost"] == pytest.approx(best, rel=1e-9)
    else:
        assert out["status"] == "feasible" and "not proven optimal" in out["message"]


def test_robust_rounding_fallback_is_feasible_not_optimal():
    """An odd lot sends the robust solve to rounding: a bound, never a claimed optimum."""
    problem = _robust_problem(1000)
    scen = [parse_periods(s["periods"], "p")[0] for s in problem["scenarios"]]
    res = solve_robust_lots(scen, 9050, 1000)
    assert res.x.sum() == 9050
    assert res.status.value in ("optimal", "feasible")
    assert "lower bound" in res.message
    if res.status.value == "optimal":  # met the continuous dual bound to 1e-9
        gap = float(res.message.split("relative gap ")[1].split(")")[0])
        assert gap <= 1e-9


def test_failed_solves_exit_non_zero_with_their_status(tmp_path, capsys):
    ok = {"quantity": 100, "periods": [{"model": "quadratic", "beta": 0.1, "gamma": 1e-3}]}
    assert _cli(tmp_path, ok) == 0
    infeasible = {
        "quantity": 100,
        "periods": [{"model": "quadratic", "beta": 0.1, "gamma": 1e-3, "cap": 10}],
    }
    capsys.readouterr()
    assert _cli(tmp_path, infeasible) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["status"] == "infeasible"
    assert "status infeasible" in cap.err
    too_big = {"quantity": 10**6, "lot": 1, "method": "dp", "periods": [FEE, FEE]}
    assert _cli(tmp_path, too_big) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["status"] == "numerical" and "status numerical" in cap.err
    (tmp_path / "bad.json").write_text("{")
    assert run(argparse.Namespace(input=str(tmp_path / "bad.json"), indent=None)) == 2


def test_solve_robust_pl_is_the_true_minimax():
    """The epigraph LP (agent.mpc.robust) gives the true minimax, checked by brute force."""
    from agent.mpc.robust import solve_robust_pl

    rng = np.random.default_rng(4)
    knots = np.array([0.0, 100.0, 250.0, 600.0])
    slopes = [np.sort(rng.uniform(0.01, 0.1, (3, 3)), axis=1) for _ in range(4)]
    res, p = solve_robust_pl(knots, slopes, 500.0)
    assert res.status.value == "optimal"
    assert p.sum() == pytest.approx(1.0)

    def worst(x):
        seg = np.clip(x[:, None] - knots[None, :-1], 0.0, np.diff(knots)[None, :])
        return max(float(np.sum(s * seg)) for s in slopes)

    best = min(
        worst(np.array([a, b, 500.0 - a - b]))
        for a in np.arange(0, 501, 10.0)
        for b in np.arange(0, 501 - a, 10.0)
    )
    assert res.cost <= best + 1e-9
    assert worst(res.x) == pytest.approx(res.cost, rel=1e-9)
