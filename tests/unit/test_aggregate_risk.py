"""Daemon-wide limits (issue 17 item 3): one budget for every parent together."""

from __future__ import annotations

import math

import pytest

from agent.core.risk import AggregateGates, AggregateLimits, RiskGates, RiskLimits

S = 1_000_000_000


def send(g: AggregateGates, coid: str, qty: float = 100.0, px: float = 10.0, t: int = S):
    res = g.check(symbol="SYM", qty=qty, limit_px=px, now_ns=t)
    if res.ok:
        g.record_sent(coid, symbol="SYM", qty=qty, limit_px=px, now_ns=t)
    return res


def test_fifty_parents_share_one_open_order_and_rate_budget():
    """Before: 50 parents each had their own child budget. Now the 6th open child of the
    daemon is blocked whoever sends it, and the rate counts every parent."""
    g = AggregateGates(AggregateLimits(max_open_orders=5, max_orders_per_min=8))
    assert [send(g, f"P{i}-x-00001").ok for i in range(6)] == [True] * 5 + [False]
    assert send(g, "P9-x-00001").gate == "max_open_orders"
    for i in range(3):
        g.record_closed(f"P{i}-x-00001")
    assert [send(g, f"Q{i}-x-00001").ok for i in range(4)] == [True, True, True, False]
    g2 = AggregateGates(AggregateLimits(max_orders_per_min=3))
    assert [send(g2, f"R{i}").ok for i in range(4)] == [True, True, True, False]
    assert send(g2, "R9").gate == "rate"
    assert send(g2, "R10", t=S + 60 * S).ok  # a minute later


def test_gross_notional_and_shares_per_symbol_count_fills_and_open_orders():
    g = AggregateGates(AggregateLimits(max_gross_notional=3000.0, max_symbol_qty=250.0))
    assert send(g, "A-1", qty=100, px=10.0).ok
    g.record_fill("A-1", 100, 9.9)
    g.record_closed("A-1")
    assert send(g, "B-1", qty=100, px=10.0).ok
    res = send(g, "C-1", qty=100, px=10.0)
    assert not res.ok and res.gate == "max_symbol_qty" and "200 + 100 > 250" in res.detail
    g.record_closed("B-1")  # cancelled unfilled: its shares are released
    assert send(g, "C-2", qty=100, px=10.0).ok
    res = g.check(symbol="OTHER", qty=100, limit_px=11.0, now_ns=S)
    assert not res.ok and res.gate == "max_gross_notional"  # 990 + 1000 + 1100 > 3000
    u = g.usage(S)
    assert u["gross_notional"] == {"used": pytest.approx(1990.0), "limit": 3000.0}
    assert u["symbol_qty"] == {"used": {"SYM": 200.0}, "limit": 250.0}
    assert u["open_orders"]["used"] == 1


def test_parent_admission_caps_size_and_count():
    """A parent above max_parent_qty (the 1e18-share parent) and a parent past max_parents
    are refused, each naming its limit."""
    g = AggregateGates(AggregateLimits(max_parents=2, max_parent_qty=1e6))
    assert g.check_parent("BIG", 1e18).gate == "max_parent_qty"
    assert g.check_parent("INF", math.inf).gate == "invalid_order"
    for pid in ("A", "B"):
        assert g.check_parent(pid, 1000).ok
        g.record_parent(pid, 1000)
    assert g.check_parent("C", 1000).gate == "max_parents"
    assert g.check_parent("A", 1000).ok  # a restart of a working one is not a new one
    g.record_parent_done("A")
    assert g.check_parent("C", 1000).ok
    assert g.usage(S)["parents"] == {"used": 1, "limit": 2}


@pytest.mark.parametrize(
    ("qty", "px"), [(math.inf, 10.0), (math.nan, 10.0), (100.0, math.inf), (-1.0, 10.0)]
)
def test_non_finite_child_is_blocked_by_both_gate_classes(qty, px):
    base = dict(
        client_order_id="P-1",
        qty=qty,
        limit_px=px,
        mid=10.0,
        book_ts_ns=0,
        now_ns=S,
        depth_inside_limit=1e9,
        filled_qty=0.0,
        open_qty=0.0,
        parent_qty=math.inf,
    )
    assert RiskGates(RiskLimits()).check(**base).gate == "invalid_order"
    res = AggregateGates(AggregateLimits()).check(symbol="S", qty=qty, limit_px=px, now_ns=S)
    assert res.gate == "invalid_order"


def test_limits_off_by_default():
    g = AggregateGates(AggregateLimits())
    assert all(send(g, f"P-{i}", qty=1e9).ok for i in range(100))


def test_ids_a_journal_ever_used_are_blocked_as_duplicates():
    """An old journal's ids (even from a parent not resumed) can never go out again."""
    g = RiskGates(RiskLimits())
    g.forbid_ids({"OLD-00001", "OLD-00002"})
    base = dict(
        qty=100.0,
        limit_px=10.0,
        mid=10.0,
        book_ts_ns=0,
        now_ns=S,
        depth_inside_limit=1e9,
        filled_qty=0.0,
        open_qty=0.0,
        parent_qty=1000.0,
    )
    assert g.check(client_order_id="OLD-00002", **base).gate == "duplicate"
    assert g.check(client_order_id="OLD-00003", **base).ok
