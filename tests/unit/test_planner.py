"""Per-period decisions: horizon to the deadline, TWAP catch-up, last period."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.plan import PeriodGrid, decide_mpc, round_lot, twap_child_qty
from agent.mpc.costs import CostSet, QuadraticCost

NS = 1_000_000_000


def quad(beta, gamma) -> CostSet:
    return CostSet.of(QuadraticCost(beta, gamma), len(beta))


def grid(n: int) -> PeriodGrid:
    return PeriodGrid(0, n * 60 * NS, 60 * NS)


def test_grid_counts_a_partial_last_period():
    assert PeriodGrid(0, 150 * NS, 60 * NS).n == 3
    assert grid(5).starts(3).tolist() == [180 * NS, 240 * NS]


def test_constant_costs_plan_uniform_to_the_deadline():
    """Constant costs: the MPC plan is uniform over every period left (not front-loaded)."""
    g = grid(10)
    for k in range(9):
        h = g.n - k
        d = decide_mpc(g, k, 100 * h * 10, quad(np.full(h, 0.02), np.full(h, 1e-5)), lot=10)
        assert d.plan.sum() == 100 * h * 10 and np.ptp(d.plan) <= 10
        assert d.child_qty == pytest.approx(1000, abs=10)


def test_last_period_sends_everything_left_up_to_the_cap():
    g = grid(4)
    d = decide_mpc(g, 3, 1234, quad(np.ones(1), np.ones(1)), lot=100)
    assert d.child_qty == 1234 and d.status == "final"
    d = decide_mpc(g, 3, 1234, quad(np.ones(1), np.ones(1)), lot=100, max_child_qty=500)
    assert d.child_qty == 500


def test_cheaper_later_periods_get_more():
    g = grid(3)
    d = decide_mpc(g, 0, 3000, quad(np.array([0.05, 0.01, 0.01]), np.full(3, 1e-5)), lot=100)
    assert d.plan[0] < d.plan[1] and d.plan.sum() == 3000


def test_twap_catches_up_after_a_short_fill():
    g = grid(4)
    assert twap_child_qty(g, 0, 1000, 0, 100) == 200  # 250 rounded down to lots
    assert twap_child_qty(g, 1, 1000, 100, 100) == 400  # behind: catch up to 500
    assert twap_child_qty(g, 3, 1000, 950, 100) == 50  # last period: all
    assert round_lot(299.999999999, 100) == 300


def test_lot_rounding_spreads_a_thin_plan_over_the_day_instead_of_front_loading():
    """11 lots over 76 equal periods: re-solving every period and rounding x[0] on its own
    sent a lot in each of the first 11 periods (done by period 11). Error diffusion sends one
    lot about every seventh period, tracking the continuous plan within half a lot."""
    g = grid(76)
    remaining, carry, sent = 1100.0, 0.0, []
    for k in range(76):
        h = g.n - k
        d = decide_mpc(
            g, k, remaining, quad(np.full(h, 0.02), np.full(h, 1e-5)), lot=100, carry=carry
        )
        carry = d.carry
        sent.append(d.child_qty)
        remaining -= d.child_qty
    sent = np.array(sent)
    assert remaining == 0 and sent.sum() == 1100 and set(sent.tolist()) <= {0.0, 100.0}
    periods = np.flatnonzero(sent)
    assert len(periods) == 11 and periods[0] >= 3 and periods[-1] >= 70
    assert np.diff(periods).max() <= 8
    # cumulative sent stays within half a lot of the uniform plan (time-proportional)
    ideal = 1100 * np.arange(1, 77) / 76
    assert np.abs(np.cumsum(sent) - ideal).max() <= 50 + 1e-9


def test_error_diffusion_is_exact_rounding_for_large_children():
    from agent.core.plan import diffuse_lots

    assert diffuse_lots(2440.0, 0.0, 100, 10_000, 1e9) == (2400.0, 40.0)
    child, carry = diffuse_lots(2440.0, 40.0, 100, 10_000, 1e9)
    assert child == 2500.0 and carry == pytest.approx(-20.0, abs=1e-3)
    assert diffuse_lots(2440.0, 0.0, 100, 1_050, 1e9) == (1000.0, 100.0)  # limit: whole lots
    assert diffuse_lots(30.0, 0.0, 100, 10_000, 1e9) == (0.0, 30.0)
    assert diffuse_lots(500.0, 80.0, 100, 500, 500.0) == (500.0, 0.0)  # plan = all that is left
