"""The uncapped quadratic fast path gives the general water-filling's optimum (to 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.mpc.costs import CostSet, QuadraticCost
from agent.mpc.solvers import SolveStatus, _waterfill_uncapped, solve_auto, solve_quadratic


def _general(b, g, S):
    """The general path (the solver before the fast path): infinite caps force it."""
    return solve_quadratic(b, g, S, caps=np.full(b.size, np.inf))


def _instances():
    rng = np.random.default_rng(11)
    for H in (1, 2, 3, 10, 100, 390):
        for kind in ("profile", "random", "steep", "ties"):
            if kind == "profile":  # intraday multipliers: every period trades
                m = 1 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, H))
                b, g = 0.01 * m, 2e-5 * m
            elif kind == "random":  # dear periods take nothing
                b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
            elif kind == "steep":  # beta spread over decades, tiny quantities
                b, g = 10 ** rng.uniform(-4, 0, H), 10 ** rng.uniform(-7, -2, H)
            else:  # equal betas and gammas (ties everywhere)
                b, g = np.full(H, 0.02), np.full(H, 1e-5)
            for S in (1.0, 137.0, 5e4, 3e6):
                yield b, g, S


@pytest.mark.parametrize("case", list(_instances()), ids=lambda c: f"H{c[0].size}-S{c[2]:g}")
def test_fast_path_equals_general_waterfill(case):
    b, g, S = case
    fast = _waterfill_uncapped(b, g, S)
    ref = _general(b, g, S)
    assert fast is not None and fast.status is SolveStatus.OPTIMAL
    assert fast.x.sum() == pytest.approx(S, rel=1e-15, abs=1e-9)
    assert np.all(fast.x >= 0)
    # Never worse than the general path by more than 1e-12 relative. It may be better by the
    # round-off S - sum(x) (a few ulps of S) times a dear period's beta: the general path puts
    # that residue on period 0 whatever its price, the fast path on a period priced at lam.
    assert fast.cost - ref.cost <= 1e-12 * abs(ref.cost)
    assert ref.cost - fast.cost <= 1e-12 * abs(ref.cost) + 16 * np.spacing(S) * b.max()
    assert fast.lam == pytest.approx(ref.lam, rel=1e-9)
    # solve_quadratic and solve_auto take the fast path and return it unchanged
    assert solve_quadratic(b, g, S).cost == fast.cost
    assert solve_auto(CostSet.of(QuadraticCost(b, g), b.size), S).cost == fast.cost


@pytest.mark.parametrize(
    "b, g, S",
    [
        ([0.1, 0.2], [1e-3, 0.0], 10.0),  # a linear period
        ([0.1, np.nan], [1e-3, 1e-3], 10.0),  # NaN
        ([0.1, -0.2], [1e-3, 1e-3], 10.0),  # negative beta
        ([0.1, 0.2], [1e-3, np.inf], 10.0),  # infinite gamma
        ([0.1, 0.2], [1e-3, 1e-3], 0.0),  # nothing to allocate
        ([0.1, 0.2], [1e-3, 1e-3], -1.0),  # negative S
    ],
)
def test_fast_path_leaves_edge_cases_to_the_general_path(b, g, S):
    b, g = np.asarray(b, float), np.asarray(g, float)
    assert _waterfill_uncapped(b, g, S) is None
    out, ref = solve_quadratic(b, g, S), _general(b, g, S)
    assert out.status is ref.status
    if ref.status is SolveStatus.OPTIMAL:
        assert out.cost == pytest.approx(ref.cost, rel=1e-12)


def test_cost_set_of_shares_the_model_and_still_checks_other_sets():
    q = QuadraticCost(np.array([0.1, 0.2]), np.array([1e-3, 2e-3]))
    assert CostSet.of(q, 2).quadratic is q
    with pytest.raises(ValueError, match="exactly one"):
        CostSet([(q, np.array([0, 0]))], 2)
    two = CostSet([(q, np.array([1, 0]))], 2)  # out of order: reassembled in period order
    np.testing.assert_array_equal(two.quadratic.beta, [0.2, 0.1])


def _pl_cases():
    from agent.core.plan import nonparametric_costs

    rng = np.random.default_rng(5)
    for H in (2, 10, 100):
        for J in (1, 5, 50):
            knots = np.concatenate([[0.0], np.sort(rng.uniform(1, 5000, J - 1))])
            slopes = np.sort(rng.uniform(0.01, 0.1, J))
            if J > 3:
                slopes[1:3] = slopes[1]  # tied slopes
            mc = 1 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, H))
            mc[: H // 3] = mc[0]  # tied periods
            for S in (1.0, 3e3, 2e5):
                for capped in (False, True):
                    caps = np.where(rng.random(H) < 0.4, rng.uniform(0, 2 * S / H, H), np.inf)
                    if capped and caps.sum() < S:
                        continue
                    yield nonparametric_costs(knots, slopes, mc), S, caps if capped else None
    # rows of different segment counts (padded with inf), as problem.py builds them
    from agent.mpc.problem import parse_periods

    costs, _ = parse_periods(
        [
            {"model": "piecewise_linear", "sizes": [0, 100, 300], "costs": [0, 1.0, 5.0]},
            {"model": "piecewise_linear", "sizes": [0, 50], "costs": [0, 0.8]},
        ],
        "periods",
    )
    m = costs.blocks[0][0]
    yield CostSet.of(m, 2), 500.0, None


@pytest.mark.parametrize("case", list(_pl_cases()))
def test_piecewise_linear_one_block_path_equals_the_general_one(case):
    from agent.mpc.solvers import solve_piecewise_linear

    costs, S, caps = case
    fast = solve_piecewise_linear(costs, S, caps)
    general = CostSet([(costs.blocks[0][0], np.arange(costs.H))], costs.H)  # not "whole"
    ref = solve_piecewise_linear(general, S, caps)
    assert fast.status is ref.status is SolveStatus.OPTIMAL
    assert fast.x.sum() == pytest.approx(S, rel=1e-12)
    if caps is not None:
        assert np.all(fast.x <= caps * (1 + 1e-12))
    assert abs(fast.cost - ref.cost) <= 1e-12 * abs(ref.cost)
    assert fast.cost == pytest.approx(costs.total(fast.x), rel=1e-12)  # the cost of its x
    np.testing.assert_allclose(fast.x, ref.x, rtol=1e-9, atol=1e-9 * S)
    assert fast.lam == ref.lam
