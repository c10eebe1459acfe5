"""Each pre-trade gate blocks what it must, names itself, and lets the rest through."""

from __future__ import annotations

import pytest

from agent.core.risk import RiskGates, RiskLimits

S = 1_000_000_000
BASE = dict(
    client_order_id="P-1",
    qty=100.0,
    limit_px=10.05,
    mid=10.0,
    book_ts_ns=0,
    now_ns=S,
    depth_inside_limit=1000.0,
    filled_qty=0.0,
    open_qty=0.0,
    parent_qty=1000.0,
)


@pytest.mark.parametrize(
    ("limits", "change", "gate"),
    [
        (RiskLimits(max_child_qty=50), {}, "max_child_qty"),
        (RiskLimits(max_child_notional=500), {}, "max_child_notional"),
        (RiskLimits(max_collar_bps=20), {}, "collar"),
        (RiskLimits(max_depth_share=0.05), {}, "depth_share"),
        (RiskLimits(stale_book_s=0.5), {}, "stale_book"),
        (RiskLimits(), {"mid": float("nan")}, "invalid_book"),
        (RiskLimits(), {"filled_qty": 850.0, "open_qty": 100.0}, "parent_overfill"),
    ],
)
def test_each_gate_blocks_and_names_itself(limits, change, gate):
    g = RiskGates(limits)
    res = g.check(**(BASE | change))
    assert not res.ok and res.gate == gate and res.detail


def test_all_pass_within_limits():
    limits = RiskLimits(
        max_child_qty=100,
        max_child_notional=1100,
        max_collar_bps=60,
        max_depth_share=0.1,
        max_orders_per_min=5,
        stale_book_s=2,
    )
    assert RiskGates(limits).check(**BASE).ok


def test_rate_throttle_and_duplicate_guard():
    g = RiskGates(RiskLimits(max_orders_per_min=2))
    for i in range(2):
        assert g.check(**(BASE | {"client_order_id": f"P-{i}"})).ok
        g.record_sent(f"P-{i}", S)
    assert g.check(**(BASE | {"client_order_id": "P-9"})).gate == "rate"
    assert g.check(**(BASE | {"client_order_id": "P-9", "now_ns": 62 * S})).ok
    assert g.check(**(BASE | {"client_order_id": "P-0", "now_ns": 62 * S})).gate == "duplicate"
