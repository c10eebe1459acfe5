"""Transaction-cost analysis: the parts sum to the total, signs are costs for both sides."""

from __future__ import annotations

import numpy as np
import pytest

from agent.backtest.tca import realized_slice_cost, tca


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("seed", range(20))
def test_components_sum_to_total(sign, seed):
    """spread + impact + timing + unfilled == total (computed independently), in $ and bps."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 30))
    mid = 50 + rng.normal(0, 0.5, n)
    half = rng.uniform(0.005, 0.05, n)
    px = mid + sign * (half + rng.uniform(0, 0.05, n))
    q = rng.integers(1, 500, n).astype(float)
    S = float(q.sum() + rng.integers(0, 3) * 400)
    S = max(S, 100.0)
    t = tca(sign, S, 50.0, 50.3, q, px, mid, half, unfilled_penalty_bps=float(rng.uniform(0, 50)))
    assert t.spread + t.impact + t.timing + t.unfilled == pytest.approx(t.total, abs=1e-7)
    parts = t.spread_bps + t.impact_bps + t.timing_bps + t.unfilled_bps
    assert parts == pytest.approx(t.total_bps, abs=1e-9)
    assert t.filled_qty + t.unfilled_qty == pytest.approx(S)


def test_buy_at_the_ask_on_a_still_mid_costs_the_half_spread():
    t = tca(1, 1000, 100.0, 100.0, [600, 400], [100.01, 100.01], [100.0, 100.0], [0.01, 0.01])
    assert t.total_bps == pytest.approx(1.0)
    assert t.spread_bps == pytest.approx(1.0)
    assert t.impact_bps == pytest.approx(0.0, abs=1e-12)
    assert t.timing_bps == pytest.approx(0.0, abs=1e-12)


def test_sell_drift_down_is_a_timing_cost_and_unfilled_is_marked_at_the_end():
    """A sell whose mid fell pays timing; shares left are marked at the final mid (+ penalty)."""
    t = tca(-1, 1000, 100.0, 98.0, [500], [98.99], [99.0], [0.01], unfilled_penalty_bps=10)
    assert t.timing == pytest.approx(500 * 1.0)
    assert t.spread == pytest.approx(5.0)
    assert t.impact == pytest.approx(0.0, abs=1e-9)
    assert t.unfilled == pytest.approx(500 * 2.0 + 500 * 100.0 * 10e-4)
    assert t.total_bps > 0
    assert t.filled_shortfall_bps == pytest.approx((100.0 - 98.99) / 100.0 * 1e4)


def test_slice_cost_against_its_own_mid():
    assert realized_slice_cost(1, [100, 50], [10.02, 10.03], 10.0) == pytest.approx(3.5)
    assert realized_slice_cost(-1, [100], [9.98], 10.0) == pytest.approx(2.0)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        tca(1, 0, 100.0, 100.0, [], [], [], [])
