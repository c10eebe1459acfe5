"""Order tracker: transition table, idempotence, invariants."""

from __future__ import annotations

import pytest

from agent.errors import InvariantViolation
from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Side,
)
from agent.orders.tracker import OrderState, OrderTracker


def child(coid: str = "P-00001", qty: float = 100.0) -> ChildOrder:
    return ChildOrder(coid, "P", "SYM", Side.BUY, qty, 10.5, 0)


def test_full_lifecycle_and_remaining():
    """Ack then two partial fills fill the child; remaining falls by exactly the fills."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    assert t.open_qty == 100 and t.uncommitted_qty == 900
    assert t.on_event(OrderAccepted("P-00001", 1)).new is OrderState.ACKNOWLEDGED
    assert t.on_event(OrderFilled("P-00001", "e1", 40, 10.0, 2)).new is OrderState.PARTIALLY_FILLED
    tr = t.on_event(OrderFilled("P-00001", "e2", 60, 10.2, 3))
    assert tr.new is OrderState.FILLED and tr.fill_qty == 60
    assert t.filled_qty == 100 and t.remaining_qty == 900 and t.open_qty == 0
    assert t.avg_px == pytest.approx((40 * 10.0 + 60 * 10.2) / 100)


def test_duplicate_fill_applied_once():
    """A repeated exec_id changes nothing (no double count of a fill)."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    f = OrderFilled("P-00001", "e1", 40, 10.0, 2)
    assert t.on_event(f).applied
    tr = t.on_event(f)
    assert not tr.applied and tr.note == "duplicate"
    assert t.filled_qty == 40


def test_out_of_order_ack_after_fill_is_ignored():
    """A late ack never moves a filled child backwards."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    t.on_event(OrderFilled("P-00001", "e1", 100, 10.0, 2))
    tr = t.on_event(OrderAccepted("P-00001", 1))
    assert not tr.applied and t.children["P-00001"].state is OrderState.FILLED


def test_ioc_remainder_cancel_frees_quantity():
    """A partial fill then cancel: the unfilled part becomes plannable again."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    t.on_event(OrderFilled("P-00001", "e1", 30, 10.0, 2))
    t.on_event(OrderCancelled("P-00001", 2, "ioc_remainder"))
    assert t.open_qty == 0 and t.uncommitted_qty == 970 and t.remaining_qty == 970


def test_late_fill_after_cancel_is_not_lost():
    """A fill reported after the cancel still counts."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    t.on_event(OrderCancelled("P-00001", 2))
    tr = t.on_event(OrderFilled("P-00001", "e9", 20, 10.0, 3))
    assert tr.applied and tr.note == "late_fill" and t.filled_qty == 20


def test_reject_after_fill_keeps_fills():
    """A reject cannot take back executions: the child ends cancelled with its fills."""
    t = OrderTracker(1_000)
    t.on_submitted(child(), 0)
    t.on_event(OrderFilled("P-00001", "e1", 30, 10.0, 2))
    tr = t.on_event(OrderRejected("P-00001", 3, "venue"))
    assert tr.new is OrderState.CANCELLED and tr.note == "reject_after_fill"
    assert t.filled_qty == 30


def test_overfill_raises():
    """A fill larger than the child is a broken contract."""
    t = OrderTracker(1_000)
    t.on_submitted(child(qty=50), 0)
    with pytest.raises(InvariantViolation):
        t.on_event(OrderFilled("P-00001", "e1", 60, 10.0, 2))


def test_cannot_commit_more_than_parent():
    """A child that would exceed the parent is refused before it is sent."""
    t = OrderTracker(150)
    t.on_submitted(child("P-00001", 100), 0)
    with pytest.raises(InvariantViolation):
        t.on_submitted(child("P-00002", 60), 0)
    with pytest.raises(InvariantViolation):
        t.on_submitted(child("P-00001", 10), 0)  # duplicate id


def test_unknown_order_fill_is_kept_as_orphan():
    """A fill for an id we never sent is not dropped and does not count."""
    t = OrderTracker(100)
    tr = t.on_event(OrderFilled("X-1", "e1", 10, 1.0, 0))
    assert tr.note == "unknown_order" and len(t.orphan_fills) == 1 and t.filled_qty == 0
    t.on_event(OrderFilled("X-1", "e1", 10, 1.0, 0))
    assert len(t.orphan_fills) == 1


def test_status_applies_fills_the_journal_missed_exactly_once():
    """The venue filled 60 at avg 10.5; we saw 20 at 10.0: 40 are applied, at the price that
    makes our average the venue's; the same status again changes nothing."""
    t = OrderTracker(1000.0)
    t.on_submitted(child(qty=100.0), 0)
    t.on_event(OrderFilled("P-00001", "x1", 20.0, 10.0, 1))
    st = OrderStatus("P-00001", 2, "cancelled", 60.0, 10.5)
    tr = t.on_event(st)
    assert tr.applied and t.filled_qty == 60.0 and t.avg_px == pytest.approx(10.5)
    c = t.children["P-00001"]
    assert c.state is OrderState.CANCELLED and t.open_qty == 0.0
    assert t.uncommitted_qty == pytest.approx(940.0)
    assert not t.on_event(st).applied and t.filled_qty == 60.0


def test_status_unknown_frees_the_quantity_and_working_keeps_it():
    t = OrderTracker(1000.0)
    t.on_submitted(child("P-00001", 100.0), 0)
    t.on_submitted(child("P-00002", 200.0), 0)
    t.on_event(OrderStatus("P-00001", 1, "unknown", 0.0))
    t.on_event(OrderStatus("P-00002", 1, "working", 50.0, 9.0))
    assert t.children["P-00001"].state is OrderState.REJECTED
    assert t.children["P-00002"].state is OrderState.PARTIALLY_FILLED
    assert t.open_qty == 150.0 and t.filled_qty == 50.0 and t.uncommitted_qty == 800.0


def test_status_unknown_of_an_acknowledged_resting_child_cancels_it_with_nothing_more_filled():
    """A venue that forgot a resting order it had acknowledged (its restart): the child is
    cancelled, not rejected; its shares are free again and its fills, known or not, kept."""
    t = OrderTracker(1000.0)
    t.on_submitted(ChildOrder("P-00001", "P", "SYM", Side.BUY, 300.0, 10.5, 0, tif="day"), 0)
    t.on_event(OrderAccepted("P-00001", 1))
    t.on_event(OrderFilled("P-00001", "x1", 100.0, 10.5, 2))
    st = OrderStatus("P-00001", 3, "unknown", 0.0, reason="unknown order")
    tr = t.on_event(st)
    c = t.children["P-00001"]
    assert tr.applied and c.state is OrderState.CANCELLED and c.reason == "unknown order"
    assert c.n_status == 1 and t.filled_qty == 100.0 and t.open_qty == 0.0
    assert t.uncommitted_qty == 900.0
    t.audit()
    t2 = OrderTracker(1000.0)  # acknowledged, nothing filled: still cancelled
    t2.on_submitted(child(), 0)
    t2.on_event(OrderAccepted("P-00001", 1))
    t2.on_event(st)
    assert t2.children["P-00001"].state is OrderState.CANCELLED and t2.filled_qty == 0.0


def test_a_cancel_carrying_the_venues_cum_qty_applies_the_missed_fills_once():
    """The daemon missed 60 filled (it died before journaling them); the venue's cancel says
    CumQty 100: the 60 are applied before the child closes, once, and never on a replay."""
    t = OrderTracker(1000.0)
    t.on_submitted(ChildOrder("P-00001", "P", "SYM", Side.BUY, 300.0, 10.0, 0, tif="day"), 0)
    t.on_event(OrderAccepted("P-00001", 1))
    t.on_event(OrderFilled("P-00001", "x1", 40.0, 10.0, 2))
    cxl = OrderCancelled("P-00001", 3, "venue restarted", cum_qty=100.0, avg_px=10.3)
    tr = t.on_event(cxl)
    c = t.children["P-00001"]
    assert tr.applied and tr.fill_qty == 60.0 and tr.note == "missed_fills"
    assert c.state is OrderState.CANCELLED and t.filled_qty == 100.0
    assert t.avg_px == pytest.approx(10.3) and t.open_qty == 0.0
    assert not t.on_event(cxl).applied and t.filled_qty == 100.0
    t.audit()
    # a cancel whose CumQty we already have (the usual case) changes nothing else
    t2 = OrderTracker(1000.0)
    t2.on_submitted(child(), 0)
    t2.on_event(OrderFilled("P-00001", "x1", 40.0, 10.0, 2))
    tr2 = t2.on_event(OrderCancelled("P-00001", 3, "", cum_qty=40.0, avg_px=10.0))
    assert tr2.fill_qty == 0.0 and t2.filled_qty == 40.0 and tr2.new is OrderState.CANCELLED


def test_status_behind_us_never_takes_fills_back():
    t = OrderTracker(1000.0)
    t.on_submitted(child(qty=100.0), 0)
    t.on_event(OrderFilled("P-00001", "x1", 100.0, 10.0, 1))
    tr = t.on_event(OrderStatus("P-00001", 2, "working", 40.0, 10.0))
    assert not tr.applied and tr.note == "status_behind" and t.filled_qty == 100.0
