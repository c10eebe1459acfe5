"""The quadratic fast paths give the general water-filling's optimum (to 1e-12), and the KKT point.

Every fast-path case runs twice: through the compiled kernel (``agent.accel``; its loops run as
plain Python when numba is missing, so the kernel's logic is tested either way) and through the
numpy fallback, which is what runs with ``EXEC_AGENT_JIT=0``.
"""

from __future__ import annotations

import numpy as np
import pytest

import agent.mpc.solvers as solvers
from agent.mpc.costs import CostSet, QuadraticCost
from agent.mpc.solvers import (
    SolveStatus,
    quadratic_cost,
    solve_auto,
    solve_quadratic,
)


@pytest.fixture(params=["kernel", "numpy"])
def uncapped(request, monkeypatch):
    """``_waterfill_uncapped`` through the kernel or the numpy fallback (and so do solve_auto
    and solve_quadratic in that test)."""
    if request.param == "numpy":
        monkeypatch.setattr(solvers, "_wf_uncapped_c", None)
    elif solvers._wf_uncapped_c is None:  # numba missing: the kernel's loops in Python
        monkeypatch.setattr(solvers, "_wf_uncapped_c", solvers._wf_uncapped_py)
    return solvers._waterfill_uncapped


@pytest.fixture(params=["kernel", "numpy"])
def capped(request, monkeypatch):
    """``_waterfill_capped`` through the kernel or the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(solvers, "_wf_capped_c", None)
    elif solvers._wf_capped_c is None:
        monkeypatch.setattr(solvers, "_wf_capped_c", solvers._wf_capped_py)
    return solvers._waterfill_capped


@pytest.fixture(params=["kernel", "numpy"])
def kernels(request, monkeypatch):
    """Both fast paths through the kernels, or both through numpy; returns the path's name."""
    for name in ("_wf_uncapped_c", "_wf_capped_c"):
        if request.param == "numpy":
            monkeypatch.setattr(solvers, name, None)
        elif getattr(solvers, name) is None:
            monkeypatch.setattr(solvers, name, getattr(solvers, name[:-2] + "_py"))
    return request.param


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


@pytest.mark.parametrize("small_h", [12, 0])
@pytest.mark.parametrize("case", list(_instances()), ids=lambda c: f"H{c[0].size}-S{c[2]:g}")
def test_fast_path_equals_general_waterfill(case, small_h, monkeypatch, uncapped):
    monkeypatch.setattr(solvers, "_SMALL_H", small_h)
    b, g, S = case
    fast = uncapped(b, g, S)
    ref = _general(b, g, S)
    assert fast is not None and fast.status is SolveStatus.OPTIMAL
    _kkt_certificate(b, g, S, fast)
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
        ([0.1, 0.2], [1e-3, 1e-3], -1.0),  # negative S
        ([0.1, 0.2], [1e-3, 1e-3], np.inf),  # infinite S
        ([0.1, np.inf], [1e-3, 1e-3], 10.0),  # infinite beta
        ([0.1, 0.2], [1e-3, 0.0], 0.0),  # nothing to allocate, but a linear period
        ([0.1, np.nan], [1e-3, 1e-3], 0.0),  # nothing to allocate, but NaN
        ([0.1, 0.2], [1e-3, np.inf], 0.0),  # nothing to allocate, but infinite gamma
    ],
)
@pytest.mark.parametrize("small_h", [12, 0])  # in Python floats, in numpy
def test_fast_path_leaves_edge_cases_to_the_general_path(b, g, S, small_h, monkeypatch, uncapped):
    monkeypatch.setattr(solvers, "_SMALL_H", small_h)
    b, g = np.asarray(b, float), np.asarray(g, float)
    assert uncapped(b, g, S) is None
    out, ref = solve_quadratic(b, g, S), _general(b, g, S)
    assert out.status is ref.status
    assert out.message == ref.message
    if ref.status is SolveStatus.OPTIMAL:
        assert out.cost == pytest.approx(ref.cost, rel=1e-12)


@pytest.mark.parametrize("H", [5, 20])  # in Python floats, in numpy
def test_every_gamma_infinite_is_invalid_input(H, uncapped):
    b, g = np.full(H, 0.01), np.full(H, np.inf)
    assert uncapped(b, g, 100.0) is None
    assert solve_auto(CostSet.of(QuadraticCost(b, g), H), 100.0).status is SolveStatus.NUMERICAL


@pytest.mark.parametrize("small_h", [12, 0])
def test_nothing_to_allocate_is_answered_by_the_fast_path_as_the_general_one_does(
    small_h, monkeypatch, uncapped
):
    monkeypatch.setattr(solvers, "_SMALL_H", small_h)
    b, g = np.array([0.1, 0.2, 0.0]), np.array([1e-3, 1e-3, 2e-3])
    fast, ref = uncapped(b, g, 0.0), _general(b, g, 0.0)
    assert fast is not None
    assert (fast.status, fast.message, fast.cost) == (ref.status, ref.message, ref.cost)
    np.testing.assert_array_equal(fast.x, ref.x)
    assert np.isnan(fast.lam) and np.isnan(ref.lam)


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


@pytest.fixture(params=["kernel", "numpy"])
def pl_path(request, monkeypatch):
    """The one-block piecewise-linear path through its kernel (sort-free) or numpy's sort."""
    if request.param == "numpy":
        monkeypatch.setattr(solvers, "_pl_c", None)
    elif solvers._pl_c is None:
        monkeypatch.setattr(solvers, "_pl_c", solvers._pl_py)
    return request.param


@pytest.mark.parametrize("case", list(_pl_cases()))
def test_piecewise_linear_one_block_path_equals_the_general_one(case, pl_path):
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


# --- the per-decision path (issue 15): Newton steps, the sorted fallback, receding horizon ----


def _kkt_certificate(b, g, S, res):
    """Assert the KKT conditions of the uncapped problem at ``res`` (independent of any solver):
    x >= 0 summing to S, marginal cost = lam where x > 0 and >= lam where x = 0."""
    x, lam = res.x, res.lam
    assert np.all(x >= 0)
    assert x.sum() == pytest.approx(S, rel=1e-13)
    marg = b + 2 * g * x
    on = x > 0
    np.testing.assert_allclose(marg[on], lam, rtol=1e-9)
    assert np.all(b[~on] >= lam * (1 - 1e-12))
    assert res.cost == pytest.approx(float(np.sum(b * x + g * x * x)), rel=1e-13)


def _random_cases():
    rng = np.random.default_rng(2026)
    for H in (1, 2, 5, 17, 100, 390, 2000):
        for kind in ("uniform", "decades", "tied_beta", "one_cheap", "tiny_gamma"):
            if kind == "uniform":
                b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
            elif kind == "decades":  # beta and gamma over many decades
                b, g = 10 ** rng.uniform(-6, 1, H), 10 ** rng.uniform(-9, 0, H)
            elif kind == "tied_beta":  # a few beta levels, many exact ties among dear periods
                b = rng.choice([0.01, 0.02, 0.03, 0.05], H)
                g = rng.uniform(1e-6, 1e-4, H)
            elif kind == "one_cheap":  # one period far cheaper than the rest, beta = 0 there
                b, g = rng.uniform(1.0, 2.0, H), np.full(H, 1e-3)
                b[rng.integers(H)] = 0.0
            else:  # tiny gamma: 1/(2 gamma) near 1e14
                b, g = rng.uniform(0.0, 0.1, H), 10 ** rng.uniform(-14, -10, H)
            for S in (1e-6, 3.0, 5e4, 1e9):
                yield kind, b, g, S


# (Newton steps, periods solved in Python): the default; every case with dear periods by
# the sort; numpy even for the smallest H
PATHS = [(8, 12), (0, 12), (8, 0)]


@pytest.mark.parametrize("paths", PATHS, ids=["default", "sorted", "numpy_small"])
@pytest.mark.parametrize(
    "case", list(_random_cases()), ids=lambda c: f"{c[0]}-H{c[1].size}-S{c[3]:g}"
)
def test_fast_path_matches_general_waterfill_and_kkt(case, paths, monkeypatch, uncapped):
    monkeypatch.setattr(solvers, "_NEWTON_STEPS", paths[0])
    monkeypatch.setattr(solvers, "_SMALL_H", paths[1])
    _, b, g, S = case
    fast = uncapped(b, g, S)
    ref = _general(b, g, S)
    assert fast is not None and fast.status is ref.status is SolveStatus.OPTIMAL
    _kkt_certificate(b, g, S, fast)
    assert fast.cost - ref.cost <= 1e-12 * ref.cost  # never worse than the general path
    if ref.cost - fast.cost > 1e-12 * ref.cost:
        # Better by more only where the general path is off its own KKT point: it puts the
        # round-off S - sum(x) on period 0 whatever its price, and when 1/(2 gamma) is huge
        # (or S tiny) that round-off is a sizeable part of S.
        on = ref.x > 0
        assert np.max(b[on] + 2 * g[on] * ref.x[on]) > ref.lam * (1 + 1e-9)
        assert np.argmax(b[on] + 2 * g[on] * ref.x[on]) == 0 and on[0]


def test_many_newton_steps_fall_back_to_the_sort(monkeypatch):
    """Evenly spread betas and a tiny S: each Newton step drops about half the periods, more
    steps than the numpy path takes; the sorted prefix sums then give the same point."""
    calls = []
    real = solvers._sorted_kkt
    monkeypatch.setattr(solvers, "_sorted_kkt", lambda *a: calls.append(1) or real(*a))
    H = 5000
    b, g = np.linspace(0.0, 1.0, H), np.full(H, 1e-2)
    S = 1e-3
    fast = solvers._waterfill_uncapped_np(b, g, S)
    assert calls == [1]
    _kkt_certificate(b, g, S, fast)


def _one_period_per_step(H=60):
    """Betas 0..H-1 with 1/(2 gamma) tripling: lam sits just under the dearest period that
    trades, so each Newton step drops one period (H - 1 steps from the first lam)."""
    b = np.arange(H, dtype=float)
    g = 0.5 / 3.0 ** np.arange(H)
    return b, g, 1e-3


def test_the_kernel_sorts_after_its_newton_steps(monkeypatch, uncapped):
    """More Newton steps than the kernel takes: its loops (run in Python here, to see the
    call) hand over to the sort, and both kernel and fallback reach the KKT point."""
    b, g, S = _one_period_per_step()
    calls = []
    real = solvers._sorted_lam
    monkeypatch.setattr(solvers, "_sorted_lam", lambda *a: calls.append(1) or real(*a))
    x = np.empty(b.size)
    lam, cost, code = solvers._wf_uncapped_py(b, g, S, x)
    assert code == solvers._SOLVED and calls == [1]
    fast = uncapped(b, g, S)  # compiled (or numpy): the same point
    _kkt_certificate(b, g, S, fast)
    assert fast.lam == pytest.approx(lam, rel=1e-12)
    assert fast.cost == pytest.approx(cost, rel=1e-12)
    assert fast.x[-1] == 0.0 and fast.x[0] > 0  # only the cheapest periods trade


def test_sorted_helpers_equal_the_numpy_sort_to_the_bit():
    """The kernels' sorts are the numpy paths' sorts: same order, same prefix sums, same lam."""
    rng = np.random.default_rng(8)
    for H in (1, 2, 9, 130, 1000):
        b, g = rng.choice([0.01, 0.02, 0.05], H) * rng.uniform(1, 2, H), rng.uniform(1e-6, 1e-4, H)
        for S in (1e-3, 50.0, 5e4):
            assert solvers._sorted_lam(b, g, S) == solvers._sorted_kkt(b, 0.5 / g, S)
            u = np.where(rng.random(H) < 0.5, rng.uniform(0, 3 * S / H, H), np.inf)
            if u.sum() > S:
                ref = solvers._waterfill_capped_np(b, g, u, S)
                if ref is not None:
                    assert solvers._sorted_capped_lam(b, g, u, S) == ref.lam


def test_pairwise_sum_equals_numpys_to_the_bit():
    """(The kernels put the round-off back so that numpy's x.sum() is S.)"""
    rng = np.random.default_rng(1)
    for n in [*range(0, 300), 1000, 1024, 4099, 70_001]:
        a = rng.random(n) * 10 ** rng.uniform(-3, 3, n)
        assert solvers._psum(a) == np.add.reduce(a)
        if n < 2000:
            assert solvers._psum_py(a) == np.add.reduce(a)


def test_huge_horizon(uncapped):
    rng = np.random.default_rng(9)
    H = 200_000
    b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
    for S in (1e3, 1e8):
        fast = uncapped(b, g, S)
        ref = _general(b, g, S)
        assert abs(fast.cost - ref.cost) <= 1e-12 * ref.cost + 16 * np.spacing(S) * b.max()
        _kkt_certificate(b, g, S, fast)


def test_zero_gamma_and_caps_still_take_the_general_path():
    b, g = np.array([0.01, 0.02, 0.015]), np.array([1e-4, 0.0, 2e-4])
    costs = CostSet.of(QuadraticCost(b, g), 3)
    for S in (0.0, 10.0, 1e4):
        out, ref = solve_auto(costs, S), _general(b, g, S)
        assert (out.status, out.message) == (ref.status, ref.message)
        np.testing.assert_array_equal(out.x, ref.x)
    caps = np.array([50.0, np.inf, 20.0])
    out = solve_auto(CostSet.of(QuadraticCost(b, g * 0 + 1e-4), 3), 100.0, caps=caps)
    ref = solve_quadratic(b, g * 0 + 1e-4, 100.0, caps=caps)
    assert out.cost == ref.cost and np.all(out.x <= caps)


@pytest.mark.parametrize("kind", ["profile", "random"])
@pytest.mark.parametrize("N", [40, 390])
def test_receding_horizon_run_equals_the_general_path(kind, N, uncapped):
    """The bench's MPC run (re-solve k..N-1 at every k with new costs, send x[0]): the executed
    cost of the fast path equals the general water-filling's to 1e-12 relative."""
    rng = np.random.default_rng(N)
    if kind == "profile":
        m = 1.0 + 0.5 * np.cos(np.linspace(0.0, 2.0 * np.pi, N))
        B = 0.01 * np.exp(rng.normal(0.0, 0.1, N))[:, None] * m
        G = 2e-5 * np.exp(rng.normal(0.0, 0.2, N))[:, None] * m
    else:
        B, G = rng.uniform(0.005, 0.05, (N, N)), rng.uniform(1e-6, 1e-4, (N, N))
    cost = {}
    for general in (False, True):
        left, c = 50_000.0, 0.0
        for k in range(N):
            b, g = B[k, k:], G[k, k:]
            if general:
                res = solve_quadratic(b, g, left, caps=np.full(N - k, np.inf))
            else:
                res = solve_auto(CostSet.of(QuadraticCost(b, g), N - k), left)
            assert res.status is SolveStatus.OPTIMAL
            x0 = float(res.x[0])
            c += B[k, k] * x0 + G[k, k] * x0 * x0
            left -= x0
        cost[general] = c
        assert left == pytest.approx(0.0, abs=1e-6)
    assert abs(cost[False] - cost[True]) <= 1e-12 * cost[True]


# --- the capped fast path (a participation cap on the MPC's re-solve) -------------------------


def _capped_cases():
    rng = np.random.default_rng(77)
    for H in (1, 2, 7, 100, 390, 3000):
        for kind in ("mpc", "random", "all_capped", "zero_caps", "tied"):
            S = float(10 ** rng.uniform(0, 6))
            if kind == "mpc":  # U-shaped costs, caps from a volume profile, 5 % to 4x slack
                m = 1 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, H) + rng.uniform(0, 6))
                b = 0.01 * m * np.exp(rng.normal(0, 0.1, H))
                g = 2e-5 * m * np.exp(rng.normal(0, 0.2, H))
                vol = (1.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, H))) * rng.lognormal(0, 0.3, H)
                u = vol / vol.sum() * S * rng.uniform(1.05, 4)
            elif kind == "random":  # some capped, some not
                b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
                u = np.where(rng.random(H) < 0.5, rng.uniform(0, 3 * S / max(H, 1), H), np.inf)
            elif kind == "all_capped":  # every cap finite, barely enough room
                b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
                u = rng.uniform(0.5, 1.5, H)
                u *= S / u.sum() * 1.001
            elif kind == "zero_caps":  # periods that may not trade at all
                b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
                u = np.where(rng.random(H) < 0.3, 0.0, rng.uniform(0, 3 * S / max(H, 1), H))
                u[rng.integers(H)] = np.inf
            else:  # equal betas and gammas, equal caps: many events at one position
                b, g = np.full(H, 0.02), np.full(H, 1e-5)
                u = np.full(H, 2 * S / H)
            if u.sum() > S:
                yield kind, b, g, u, S


@pytest.mark.parametrize("case", list(_capped_cases()), ids=lambda c: f"{c[0]}-H{c[1].size}")
def test_capped_fast_path_matches_general_waterfill_and_kkt(case, capped):
    from agent.mpc.solvers import _waterfill

    _, b, g, u, S = case
    fast = capped(b, g, u, S)
    assert fast is not None and fast.status is SolveStatus.OPTIMAL
    x_ref, _ = _waterfill(b, g, u, S)
    ref = quadratic_cost(x_ref, b, g)
    x, lam = fast.x, fast.lam
    assert np.all(x >= 0) and np.all(x <= u)
    assert x.sum() == pytest.approx(S, rel=1e-13)
    assert fast.cost == pytest.approx(quadratic_cost(x, b, g), rel=1e-13)
    assert abs(fast.cost - ref) <= 1e-12 * ref
    # KKT: the marginal cost is lam where strictly inside, >= lam at 0, <= lam at the cap
    marg = b + 2 * g * x
    tol = 1e-9 * lam + 1e-300
    inside = (x > 1e-9 * S) & (x < u - 1e-9 * S)
    assert np.all(np.abs(marg[inside] - lam) <= tol)
    assert np.all(marg[(x == 0) & (u > 0)] >= lam - tol)
    assert np.all(marg[(x == u) & (u > 0)] <= lam + tol)
    if np.isfinite(u).any():  # solve_quadratic and solve_auto with these caps take it
        assert solve_quadratic(b, g, S, caps=u).cost == fast.cost
        assert solve_auto(CostSet.of(QuadraticCost(b, g), b.size), S, caps=u).cost == fast.cost


@pytest.mark.parametrize(
    "b, g, u, S",
    [
        ([0.1, 0.2], [1e-3, 1e-3], [5.0, 4.0], 10.0),  # infeasible
        ([0.1, 0.2], [1e-3, 0.0], [5.0, 50.0], 10.0),  # a linear period
        ([0.1, 0.2], [1e-3, 1e-3], [5.0, np.nan], 10.0),  # NaN cap
        ([0.1, 0.2], [1e-3, 1e-3], [5.0, -1.0], 10.0),  # negative cap
        ([0.1, 0.2], [1e-3, 1e-3], [5.0, 50.0], 0.0),  # nothing to allocate
        ([0.1, -0.2], [1e-3, 1e-3], [5.0, 50.0], 10.0),  # negative beta
    ],
)
def test_capped_edge_cases_are_left_to_the_general_path(b, g, u, S, capped):
    b, g, u = (np.asarray(v, float) for v in (b, g, u))
    assert capped(b, g, u, S) is None
    out = solve_quadratic(b, g, S, caps=u)
    assert out.status is not SolveStatus.OPTIMAL or np.all(out.x <= u)


def test_caps_holding_exactly_s_put_every_period_at_its_cap(capped):
    from agent.mpc.solvers import _waterfill

    b, g, u = np.array([0.1, 0.2, 0.15]), np.array([1e-3, 1e-3, 2e-3]), np.array([5.0, 5.0, 2.0])
    fast = capped(b, g, u, 12.0)
    x_ref, _ = _waterfill(b, g, u, 12.0)
    if fast is not None:  # (or left to the general path when f's last slope rounds to 0)
        np.testing.assert_allclose(fast.x, u, rtol=1e-15)
    np.testing.assert_allclose(x_ref, u, rtol=1e-15)
    out = solve_quadratic(b, g, 12.0, caps=u)
    assert out.status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(out.x, u, rtol=1e-15)


def test_decide_mpc_with_a_participation_cap_uses_the_capped_optimum(kernels):
    from agent.core.plan import PeriodGrid, decide_mpc, quadratic_costs

    h = 20
    grid = PeriodGrid(0, h * 60_000_000_000, 60_000_000_000)
    mb = 1 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, h))
    costs = quadratic_costs(0.01, 2e-5, mb, mb)
    caps = np.full(h, 600.0)
    d = decide_mpc(grid, 0, 10_000.0, costs, lot=100, caps=caps)
    ref = solve_quadratic(costs.quadratic.beta, costs.quadratic.gamma, 10_000.0, caps=caps)
    np.testing.assert_array_equal(d.plan, ref.x)
    assert d.status == "optimal" and np.all(d.plan <= caps)


def test_decide_mpc_with_no_cap_known_solves_uncapped(kernels):
    from agent.core.plan import PeriodGrid, decide_mpc, quadratic_costs

    h = 12
    grid = PeriodGrid(0, h * 60_000_000_000, 60_000_000_000)
    mb = 1 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, h))
    costs = quadratic_costs(0.01, 2e-5, mb, mb)
    d = decide_mpc(grid, 0, 10_000.0, costs, lot=100, caps=np.full(h, np.inf))
    ref = solve_auto(costs, 10_000.0)
    np.testing.assert_array_equal(d.plan, ref.x)
    general = _general(costs.quadratic.beta, costs.quadratic.gamma, 10_000.0)
    assert abs(d.plan @ (mb * 0.01 + mb * 2e-5 * d.plan) - general.cost) <= 1e-12 * general.cost


@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_against_slsqp_and_the_dp(seed, kernels):
    """Independent references: scipy's SLSQP on the continuous problem (never cheaper than
    the exact optimum, close to it), and the DP on a one-share grid (the integer optimum: at
    or above the continuous one, within a share's rounding per period)."""
    from scipy.optimize import minimize

    from agent.mpc.dp import solve_dp

    rng = np.random.default_rng(seed)
    H = int(rng.integers(2, 7))
    b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-4, 1e-2, H)
    S = float(rng.integers(50, 400))
    capped = seed % 2 == 1
    u = np.where(rng.random(H) < 0.6, rng.integers(S / H, S, H).astype(float), np.inf)
    u = u if capped and u.sum() > S else None
    costs = CostSet.of(QuadraticCost(b, g), H)
    fast = solve_auto(costs, S, caps=u)
    assert fast.status is SolveStatus.OPTIMAL
    bounds = [(0.0, S if u is None else float(min(c, S))) for c in (u if u is not None else b)]
    ref = minimize(
        lambda x: float(np.sum(b * x + g * x * x)),
        np.full(H, S / H),
        jac=lambda x: b + 2 * g * x,
        constraints=({"type": "eq", "fun": lambda x: x.sum() - S},),
        bounds=bounds,
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-14},
    )
    slsqp = float(np.sum(b * ref.x + g * ref.x * ref.x))
    assert fast.cost <= slsqp * (1 + 1e-9)
    assert fast.cost == pytest.approx(slsqp, rel=1e-6)
    dp = solve_dp(costs, S, u, 1)
    assert fast.cost <= dp.cost * (1 + 1e-12)
    assert dp.cost - fast.cost <= H * (float(np.max(b + 2 * g * fast.x)) + float(g.max()))


def test_a_float32_model_is_solved_in_float64(kernels):
    """(x = lam - beta in float32 would round the plan to 7 digits.)"""
    rng = np.random.default_rng(4)
    b = rng.uniform(0.005, 0.05, 40).astype(np.float32)
    g = rng.uniform(1e-6, 1e-4, 40).astype(np.float32)
    out = solve_auto(CostSet.of(QuadraticCost(b, g), 40), 1e4)
    assert out.x.dtype == np.float64
    ref = _general(b.astype(float), g.astype(float), 1e4)
    assert abs(out.cost - ref.cost) <= 1e-12 * ref.cost


@pytest.mark.parametrize("N", [40, 390])
def test_receding_horizon_run_under_a_participation_cap_equals_the_general_path(N, kernels):
    """The bench's capped MPC run: solve_auto with the caps of k..N-1 at every k against the
    general water-filling, executed cost to 1e-12 relative, every plan within its caps."""
    from agent.mpc.solvers import _waterfill

    rng = np.random.default_rng(N + 1)
    m = 1.0 + 0.5 * np.cos(np.linspace(0.0, 2.0 * np.pi, N))
    B = 0.01 * np.exp(rng.normal(0.0, 0.1, N))[:, None] * m
    G = 2e-5 * np.exp(rng.normal(0.0, 0.2, N))[:, None] * m
    v = 1.5 - 0.5 * np.cos(np.linspace(0.0, 2.0 * np.pi, N))
    U = 2.0 * 50_000.0 * v / v.sum()
    cost = {}
    for general in (False, True):
        left, c = 50_000.0, 0.0
        for k in range(N):
            b, g, u = B[k, k:], G[k, k:], U[k:]
            if general:
                x = _waterfill(b, g, u, left)[0] if left > 0 else np.zeros(N - k)
            else:
                res = solve_auto(CostSet.of(QuadraticCost(b, g), N - k), left, caps=u)
                assert res.status is SolveStatus.OPTIMAL and np.all(res.x <= u)
                x = res.x
            x0 = float(x[0])
            c += B[k, k] * x0 + G[k, k] * x0 * x0
            left -= x0
        cost[general] = c
        assert left == pytest.approx(0.0, abs=1e-6)
    assert abs(cost[False] - cost[True]) <= 1e-12 * cost[True]


def test_the_kernels_loops_in_python_give_the_compiled_numbers():
    """``py_func`` (the source numba compiles) and the machine code agree: the kernel is the
    function the tests read."""
    k_u, k_c = solvers._wf_uncapped_c, solvers._wf_capped_c
    if k_u is None or k_c is None:
        pytest.skip("numba not installed: the kernels run as Python (tested above)")
    rng = np.random.default_rng(12)
    for H in (1, 3, 17, 200):
        b, g = rng.uniform(0.005, 0.05, H), rng.uniform(1e-6, 1e-4, H)
        u = np.where(rng.random(H) < 0.5, rng.uniform(0, 3e4 / H, H), np.inf)
        for S in (2.0, 1e4):
            x1, x2 = np.empty(H), np.empty(H)
            assert k_u(b, g, S, x1) == k_u.py_func(b, g, S, x2)
            np.testing.assert_array_equal(x1, x2)
            if u.sum() > S:
                assert k_c(b, g, u, S, x1) == k_c.py_func(b, g, u, S, x2)
                np.testing.assert_array_equal(x1, x2)


def test_without_numba_the_numpy_paths_run():
    """``EXEC_AGENT_JIT=0``: no kernel, and solve_auto answers from the numpy fast path."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import numpy as np; import agent.mpc.solvers as s; from agent import accel;"
        "from agent.mpc.costs import CostSet, QuadraticCost;"
        "b = np.linspace(0.01, 0.05, 50); g = np.full(50, 1e-5);"
        "r = s.solve_auto(CostSet.of(QuadraticCost(b, g), 50), 1e4);"
        "n = s._waterfill_uncapped_np(b, g, 1e4);"
        "print(accel.enabled(), s._wf_uncapped_c, s._wf_capped_c, r.cost == n.cost, r.status)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "EXEC_AGENT_JIT": "0", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["False", "None", "None", "True", "optimal"]


@pytest.mark.parametrize(
    "kn, sl, why",
    [
        ([[0.0, np.nan]], [[0.1, 0.2]], "a NaN knot"),
        ([[0.0, 10.0]], [[0.2, 0.1]], "slopes falling along the row (not convex)"),
        ([[0.0, 10.0]], [[0.1, np.nan]], "a NaN slope"),
    ],
)
def test_the_piecewise_linear_kernel_leaves_odd_input_to_numpy(kn, sl, why):
    kern = solvers._pl_c or solvers._pl_py
    kn, sl = np.asarray(kn), np.asarray(sl)
    x, take = np.empty(1), np.empty_like(kn)
    assert kern(kn, sl, np.full(1, np.inf), 5.0, x, take)[2] == solvers._OUTSIDE, why


def test_the_piecewise_linear_kernel_finds_the_marginal_slope_among_many_close_ones():
    """Thousands of slopes a few ulps apart: the bisection snaps to the exact one the sort
    finds, and the plan is the general path's."""
    from agent.mpc.costs import PiecewiseLinearCost
    from agent.mpc.solvers import solve_piecewise_linear

    H, J = 40, 60
    base = 0.05 + np.arange(H * J).reshape(H, J) * 4e-17  # ~1 ulp of 0.05 apart, rising
    knots = np.tile(np.arange(J, dtype=float) * 10.0, (H, 1))
    m = PiecewiseLinearCost(knots, base)
    for S in (3.0, 777.7, 12_345.0):
        fast = solve_piecewise_linear(CostSet.of(m, H), S)
        ref = solve_piecewise_linear(CostSet([(m, np.arange(H))], H), S)
        assert fast.lam == ref.lam
        assert abs(fast.cost - ref.cost) <= 1e-12 * ref.cost
        np.testing.assert_allclose(fast.x, ref.x, rtol=1e-9, atol=1e-9 * S)


def test_strided_views_take_the_numpy_path_and_compile_nothing_new(kernels):
    """A kernel is compiled for contiguous float64 arrays; a strided view (a column of a cost
    table) is answered by the numpy fast path, not by compiling a new specialisation in the
    middle of a decision."""
    rng = np.random.default_rng(6)
    table = rng.uniform(0.005, 0.05, (30, 2)), rng.uniform(1e-6, 1e-4, (30, 2))
    b, g = table[0][:, 0], table[1][:, 0]  # strided views
    assert not b.flags.c_contiguous
    before = [
        len(getattr(k, "signatures", ())) for k in (solvers._wf_uncapped_c, solvers._wf_capped_c)
    ]
    u = np.full(30, 100.0)
    out = solve_auto(CostSet.of(QuadraticCost(b, g), 30), 1e3)
    out_c = solve_auto(CostSet.of(QuadraticCost(b, g), 30), 1e3, caps=u)
    ref = solvers._waterfill_uncapped_np(b.copy(), g.copy(), 1e3)
    ref_c = solvers._waterfill_capped_np(b.copy(), g.copy(), u, 1e3)
    assert out.cost == ref.cost and out_c.cost == ref_c.cost
    after = [
        len(getattr(k, "signatures", ())) for k in (solvers._wf_uncapped_c, solvers._wf_capped_c)
    ]
    assert after == before


def _wide_capped_cases():
    """Parameters over many decades, tiny to large S, caps of every kind: where the round-off
    of S - sum(x) is a visible part of a cost, and where it goes matters."""
    rng = np.random.default_rng(123)
    for it in range(300):
        H = int(rng.integers(1, 300))
        if it % 2:
            b, g = 10 ** rng.uniform(-6, 1, H), 10 ** rng.uniform(-9, 0, H)
        else:
            b, g = rng.uniform(0, 0.05, H), rng.uniform(1e-6, 1e-4, H)
        S = float(10 ** rng.uniform(-3, 7))
        u = np.where(
            rng.random(H) < rng.random(),
            rng.uniform(0, 3 * S / H, H) * rng.choice([0, 1, 1, 1], H),
            np.inf,
        )
        if u.sum() <= S:
            u[rng.integers(H)] = np.inf
        yield b, g, u, S


def _dual_bound(lam, b, g, u, S):
    """Return the Lagrangian dual at ``lam``, a lower bound on the optimum (weak duality):
    ``min over 0 <= x <= u of sum g_t(x_t) - lam (sum x - S)``, in extended precision."""
    L = np.longdouble
    lam, b, g, u = L(lam), b.astype(L), g.astype(L), u.astype(L)
    x = np.clip((lam - b) / (2 * g), 0, u)
    return float((b * x + g * x * x).sum() - lam * (x.sum() - L(S)))


def test_capped_round_off_goes_where_it_costs_lam(capped):
    """Wide parameter ranges and tiny S, where the round-off S - sum(x) is a visible part of
    the cost. Both fast paths put it on a period priced at lam: their plans are optimal to
    1e-12 by the dual bound at their own lam (a certificate independent of any solver), and
    never worse than the general path, which puts it on the period with the most room
    whatever its price (up to 3e-6 off here)."""
    from agent.mpc.solvers import _waterfill

    for b, g, u, S in _wide_capped_cases():
        fast = capped(b, g, u, S)
        if fast is None:
            continue
        x_ref, _ = _waterfill(b, g, u, S)
        ref = quadratic_cost(x_ref, b, g)
        assert np.all(fast.x >= 0) and np.all(fast.x <= u)
        assert fast.x.sum() == pytest.approx(S, rel=1e-13)
        assert fast.cost == pytest.approx(quadratic_cost(fast.x, b, g), rel=1e-13)
        assert fast.cost - ref <= 1e-12 * ref
        assert fast.cost - _dual_bound(fast.lam, b, g, u, S) <= 1e-12 * fast.cost


def _near_linear_cases(n=40):
    """Plans where one period is almost linear (gamma 1e-23 to 1e-20, as a book fitted with
    no slope gives): its 1/gamma dwarfs the others', so lam sits on its beta within rounding.
    Found in the 16-parent replay: a lam computed a few ulps below that beta dropped the
    period, and the fast path priced the rest alone (0 shares instead of 8,100 in that
    period, 0.5 % dearer, sold 73 shares too many in another plan) and called it optimal."""
    for seed in range(n):
        rng = np.random.default_rng(seed)
        H = int(rng.integers(20, 400))
        b = 0.0095 + 0.002 * rng.random(H)
        g = 5e-7 * (0.5 + rng.random(H))
        b[0] = 0.0100 - 2e-15 * rng.random()
        g[0] = 10.0 ** rng.uniform(-23, -20)
        yield b, g, float(rng.integers(5, 50) * 1000)


@pytest.mark.parametrize("small_h", [12, 0])
@pytest.mark.parametrize("case", list(_near_linear_cases()), ids=lambda c: f"H{c[0].size}")
def test_an_almost_linear_period_gets_the_exact_plan(case, small_h, monkeypatch, kernels):
    monkeypatch.setattr(solvers, "_SMALL_H", small_h)
    b, g, S = case
    ref = _general(b, g, S)
    want = quadratic_cost(ref.x, b, g)
    for caps in (None, np.full(b.size, 1e9), np.full(b.size, S / 3)):
        costs = CostSet.of(QuadraticCost(b, g), b.size)
        res = solve_auto(costs, S, caps)
        assert res.status is SolveStatus.OPTIMAL
        assert abs(res.x.sum() - S) <= 1e-9 * S
        got = quadratic_cost(res.x, b, g)
        if caps is None or caps[0] >= S:
            assert abs(got - want) <= 1e-12 * want, (got, want)
        else:
            x_c, _ = solvers._waterfill(b, g, caps, S)  # the general path, capped
            assert np.all(res.x <= caps * (1 + 1e-12))
            assert abs(got - quadratic_cost(x_c, b, g)) <= 1e-12 * got
