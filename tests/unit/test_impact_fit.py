"""Impact model fits: exact recovery, constraints, diagnostics, graceful degradation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.impact.book_walk import BeyondDepth, CostCurve, DepthPolicy, cost_curve
from agent.impact.fit import (
    FitStatus,
    fit_piecewise_power,
    fit_power,
    fit_quadratic,
)
from feeds.model import BookBatch

SIZES = np.arange(100.0, 10_001.0, 100.0)


def _curve(
    g: np.ndarray, sizes: np.ndarray = SIZES, frac: np.ndarray | None = None, n: int = 500
) -> CostCurve:
    frac = np.zeros_like(sizes) if frac is None else frac
    return CostCurve(sizes, g, np.zeros_like(g), n, frac)


def test_quadratic_recovers_exact_parameters():
    """A curve that is exactly beta*x + gamma*x^2 gives back beta and gamma, R^2 = 1."""
    beta, gamma = 0.015, 2.5e-6

    fit = fit_quadratic(_curve(beta * SIZES + gamma * SIZES**2))

    assert fit.status == FitStatus.OK and fit.ok
    assert fit.beta == pytest.approx(beta, rel=1e-9)
    assert fit.gamma == pytest.approx(gamma, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.rmse < 1e-8
    assert fit.n_snapshots == 500 and fit.n_sizes == SIZES.size
    np.testing.assert_allclose(fit.cost(SIZES), beta * SIZES + gamma * SIZES**2, rtol=1e-9)


def test_quadratic_keeps_parameters_non_negative():
    """Per-share slippage falling with size would need gamma < 0: NNLS clamps it to 0."""
    fit = fit_quadratic(_curve(0.02 * SIZES - 1e-6 * SIZES**2))

    assert fit.ok
    assert fit.gamma == 0.0
    assert fit.beta > 0


def test_quadratic_beta_is_half_spread_on_a_deep_flat_book():
    """Top level deeper than every size: g(x) = half_spread * x, so beta = half-spread."""
    n = 50
    ts = np.arange(n, dtype=np.int64)
    bid = np.full((n, 10), np.nan)
    ask = np.full((n, 10), np.nan)
    bid[:, 0], ask[:, 0] = 99.75, 100.25
    sz = np.zeros((n, 10))
    sz[:, 0] = 1e6
    batch = BookBatch("X", ts, ts, bid, sz, ask, sz.copy())

    fit = fit_quadratic(cost_curve(batch, "sell", SIZES))

    assert fit.beta == pytest.approx(0.25, rel=1e-12)
    assert fit.gamma == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("fitter", [fit_quadratic, fit_power, fit_piecewise_power])
def test_empty_window_degrades_gracefully(fitter):
    """An empty window gives status empty_window, NaN parameters and a message; no raise."""
    curve = cost_curve(BookBatch.empty("X"), "buy", SIZES)

    fit = fitter(curve)

    assert fit.status == FitStatus.EMPTY_WINDOW and not fit.ok
    assert "empty" in fit.message
    assert fit.n_snapshots == 0
    assert np.all(np.isnan(np.atleast_1d(fit.cost(np.array([100.0])))))


@pytest.mark.parametrize("fitter", [fit_quadratic, fit_power, fit_piecewise_power])
def test_too_few_sizes_degrades_gracefully(fitter):
    """REFUSE leaving one finite size gives too_few_points, not an exception."""
    g = np.full(SIZES.size, np.nan)
    g[0] = 1.0
    curve = CostCurve(
        SIZES,
        g,
        np.zeros_like(g),
        10,
        np.r_[0.0, np.ones(SIZES.size - 1)],
        DepthPolicy(BeyondDepth.REFUSE),
    )

    fit = fitter(curve)

    assert fit.status == FitStatus.TOO_FEW_POINTS
    assert fit.n_sizes == 1


def test_fit_reports_beyond_depth_share_and_policy():
    """The fit reports the mean beyond-depth share of its sizes and names the policy used."""
    frac = np.linspace(0, 0.5, SIZES.size)
    curve = CostCurve(
        SIZES,
        0.01 * SIZES + 1e-6 * SIZES**2,
        np.zeros(SIZES.size),
        100,
        frac,
        DepthPolicy(BeyondDepth.PENALTY, 25),
    )

    fit = fit_quadratic(curve)
    strict = fit_quadratic(curve, max_frac_beyond=0.0)

    assert fit.frac_beyond_depth == pytest.approx(0.25)
    assert "25 bps" in fit.message
    assert strict.n_sizes == 1 and strict.status == FitStatus.TOO_FEW_POINTS


def test_power_recovers_exact_parameters():
    """s(x) = a x^b exactly gives back a and b."""
    a, b = 3e-3, 0.4

    fit = fit_power(_curve(a * SIZES ** (1 + b)))

    assert fit.ok
    assert fit.a == pytest.approx(a, rel=1e-6)
    assert fit.b == pytest.approx(b, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_power_exponent_is_non_negative():
    """Per-share slippage falling with size would need b < 0: the bound holds b at 0."""
    fit = fit_power(_curve(0.05 * SIZES**0.8))

    assert fit.ok
    assert fit.b == pytest.approx(0.0, abs=1e-12)


def test_piecewise_power_recovers_regimes_and_is_continuous():
    """Flat slippage up to 2000 shares then a power law: breakpoint, exponents, continuity."""
    x0, s0, b1 = 2000.0, 0.02, 0.6
    s = np.where(x0 > SIZES, s0, s0 * (SIZES / x0) ** b1)

    fixed = fit_piecewise_power(_curve(s * SIZES), breakpoints=[x0])
    searched = fit_piecewise_power(_curve(s * SIZES), n_regimes=2)

    for fit in (fixed, searched):
        assert fit.ok
        assert fit.r2 == pytest.approx(1.0, abs=1e-8)
        np.testing.assert_allclose(fit.cost(SIZES) / SIZES, s, rtol=1e-5)
        assert np.all(np.diff(fit.b) >= 0) and fit.b[0] >= 0
    assert searched.breakpoints[0] == pytest.approx(x0)
    np.testing.assert_allclose(fixed.b, [0.0, b1], atol=1e-6)
    # continuity of s at the breakpoint
    left = fixed.a[0] * x0 ** fixed.b[0]
    right = fixed.a[1] * x0 ** fixed.b[1]
    assert left == pytest.approx(right, rel=1e-12)


def test_piecewise_power_argument_errors():
    """Bad breakpoints or regime counts are broken contracts: ValueError."""
    curve = _curve(0.01 * SIZES)
    with pytest.raises(ValueError, match="breakpoints"):
        fit_piecewise_power(curve, breakpoints=[500.0, 100.0])
    with pytest.raises(ValueError, match="n_regimes"):
        fit_piecewise_power(curve, n_regimes=0)


def test_piecewise_power_with_one_regime_is_the_power_law():
    """K = 1 reduces to the plain power law."""
    g = 2e-3 * SIZES**1.3
    one = fit_piecewise_power(_curve(g), n_regimes=1)
    plain = fit_power(_curve(g))
    assert one.breakpoints.size == 0
    assert one.a[0] == pytest.approx(plain.a, rel=1e-6)
    assert one.b[0] == pytest.approx(plain.b, rel=1e-6)


def test_quadratic_fit_on_random_books_is_convex_and_sane():
    """On random ordered books the fit is OK, convex (beta, gamma >= 0) and R^2 is finite."""
    rng = np.random.default_rng(5)
    n = 400
    mid = 50 + rng.random(n)
    ask = mid[:, None] + 0.01 * (1 + np.cumsum(rng.integers(1, 3, (n, 10)), 1))
    bid = mid[:, None] - 0.01 * (1 + np.cumsum(rng.integers(1, 3, (n, 10)), 1))
    sz = rng.integers(1, 20, (n, 10)) * 100.0
    ts = np.arange(n, dtype=np.int64)
    batch = BookBatch("R", ts, ts, bid, sz, ask, sz.copy())

    for side in ("buy", "sell"):
        fit = fit_quadratic(cost_curve(batch, side, SIZES))
        assert fit.ok and fit.beta >= 0 and fit.gamma >= 0
        assert math.isfinite(fit.r2) and fit.r2 > 0.5


@pytest.mark.parametrize("fitter", [fit_power, fit_piecewise_power])
def test_optimiser_failure_is_a_status(monkeypatch, fitter):
    """If scipy's least_squares reports failure, the fit says so instead of raising."""
    import agent.impact.fit as fit_mod

    real = fit_mod.least_squares

    def failing(*args, **kwargs):
        res = real(*args, **kwargs)
        res.success = False
        res.message = "forced failure"
        return res

    monkeypatch.setattr(fit_mod, "least_squares", failing)

    fit = fitter(
        _curve(2e-3 * SIZES**1.3),
        **({"breakpoints": [2000.0]} if fitter is fit_piecewise_power else {}),
    )

    assert fit.status == FitStatus.FAILED and "forced" in fit.message


def test_power_fit_with_mostly_zero_cost_does_not_raise():
    """A curve with a single positive cost still fits (start point falls back to the mean)."""
    g = np.zeros(SIZES.size)
    g[-1] = 1.0

    fit = fit_power(_curve(g))

    assert fit.status in (FitStatus.OK, FitStatus.FAILED)
    assert fit.n_sizes == SIZES.size
