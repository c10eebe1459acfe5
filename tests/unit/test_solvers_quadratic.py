"""Exact quadratic water-filling: invariants and agreement with independent references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from agent.mpc.solvers import SolveStatus, quadratic_cost, solve_quadratic


def reference_lam(beta, gamma, caps, S):
    """Independent reference: bisection-free bounded root of sum x(lam) - S via scipy."""

    def x_of(lam):
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(gamma > 0, (lam - beta) / (2 * np.where(gamma > 0, gamma, 1)), 0.0)
        return np.clip(x, 0, caps)

    res = minimize_scalar(
        lambda lam: (x_of(lam).sum() - S) ** 2,
        bounds=(0, beta.max() + 2 * gamma.max() * S + 1),
        method="bounded",
        options={"xatol": 1e-12, "maxiter": 500},
    )
    return x_of(res.x)


@pytest.mark.parametrize("seed", range(200))
def test_random_instances_match_clarabel(seed):
    """200 seeded instances: objective equals Clarabel's within 1e-7 relative; invariants hold."""
    clarabel = pytest.importorskip("clarabel")
    from scipy import sparse

    rng = np.random.default_rng(seed)
    H = int(rng.integers(2, 60))
    beta = rng.uniform(0, 0.1, H)
    gamma = rng.uniform(1e-6, 1e-3, H)
    S = float(rng.integers(1, 50_000))
    caps = np.where(rng.random(H) < 0.3, rng.uniform(0, 2 * S / H, H), np.inf)
    if caps.sum() < S:
        caps[np.argmax(np.isfinite(caps))] = np.inf
    res = solve_quadratic(beta, gamma, S, caps=caps)
    assert res.status is SolveStatus.OPTIMAL
    x = res.x
    assert x.sum() == pytest.approx(S, rel=1e-12) and (x >= 0).all() and (x <= caps + 1e-9).all()
    # Clarabel: min 1/2 x'Px + q'x, A x + s = b, s in cones (zero for sum, nonneg for bounds).
    P = sparse.diags(2 * gamma).tocsc()
    fin = np.isfinite(caps)
    rows = [np.ones((1, H)), -np.eye(H), np.eye(H)[fin]]
    A = sparse.csc_matrix(np.vstack(rows))
    b = np.concatenate([[S], np.zeros(H), caps[fin]])
    cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(H + int(fin.sum()))]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-12
    sol = clarabel.DefaultSolver(P, beta, A, b, cones, settings).solve()
    ref = quadratic_cost(np.asarray(sol.x), beta, gamma)
    assert res.cost == pytest.approx(ref, rel=1e-7)
    assert res.cost <= ref * (1 + 1e-9)
    # lam is the marginal cost of every interior period
    inner = (x > 1e-6) & (x < caps - 1e-6)
    assert np.allclose(beta[inner] + 2 * gamma[inner] * x[inner], res.lam, rtol=1e-7)


def test_equal_costs_give_uniform_schedule_in_lots():
    res = solve_quadratic(np.full(7, 0.02), np.full(7, 1e-5), 10_000, lot=100)
    assert res.x.sum() == 10_000 and np.ptp(res.x) <= 100
    assert np.all(res.x % 100 == 0)


def test_expensive_period_gets_nothing():
    """beta_t above lam gives x_t = 0, not a negative quantity (the spec's closed form)."""
    res = solve_quadratic([0.01, 0.01, 5.0], [1e-4, 1e-4, 1e-4], 100)
    assert res.x[2] == 0 and res.x.sum() == pytest.approx(100)


def test_linear_periods_and_ties():
    """gamma = 0 periods fill to their cap in order of beta; ties share."""
    res = solve_quadratic([0.01, 0.02, 0.02, 0.5], [0, 0, 0, 1e-3], 250, caps=[100, 100, 100, 1e9])
    assert res.x.tolist() == pytest.approx([100, 75, 75, 0])
    assert res.lam == pytest.approx(0.02)


def test_integer_lots_are_exact_against_brute_force():
    """Lot rounding reaches the integer optimum (checked by enumeration on small cases)."""
    import itertools

    rng = np.random.default_rng(1)
    for _ in range(50):
        H, lot = 3, 100
        beta = rng.uniform(0, 0.05, H)
        gamma = rng.uniform(1e-6, 1e-4, H)
        S = int(rng.integers(1, 30)) * lot + int(rng.integers(0, lot))
        res = solve_quadratic(beta, gamma, S, lot=lot)
        assert res.x.sum() == S
        best = np.inf
        n = S // lot
        for a, b in itertools.product(range(n + 1), repeat=2):
            if a + b > n:
                continue
            base = np.array([a, b, n - a - b], float) * lot
            for j in range(H):
                y = base.copy()
                y[j] += S - n * lot
                best = min(best, quadratic_cost(y, beta, gamma))
        assert res.cost == pytest.approx(best, rel=1e-12)


def test_infeasible_caps_are_reported():
    res = solve_quadratic([0.01, 0.01], [1e-4, 1e-4], 1000, caps=[100, 200])
    assert res.status is SolveStatus.INFEASIBLE and "short by 700" in res.message
    assert res.x.tolist() == [100, 200]


def test_invalid_input_is_a_status_not_an_exception():
    assert solve_quadratic([np.nan], [1.0], 10).status is SolveStatus.NUMERICAL
    assert solve_quadratic([0.1], [-1.0], 10).status is SolveStatus.NUMERICAL


def test_every_period_at_its_cap_needs_no_final_slope():
    """S equal to the sum of the caps (up to rounding) with linear periods: every period sits
    at its cap; before, the last breakpoint's zero slope was divided by (a warning, and an
    infinite multiplier)."""
    import warnings

    from agent.mpc.solvers import _waterfill

    beta = np.array([0.9347030807966872, 0.36421724474197953, 0.5758145324224633, 0.3286506971])
    gamma = np.array([0.0, 0.00033791122550713324, 0.0, 0.0008902743520047923])
    u = np.array([789.2273244137965, 246.97574856302262, 877.7193885025968, 67.9823544571424])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, lam = _waterfill(beta, gamma, u, float(u.sum()))
    assert np.isfinite(lam)
    np.testing.assert_allclose(x, u, rtol=1e-12)
