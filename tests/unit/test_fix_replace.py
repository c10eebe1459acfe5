"""FIX cancel/replace, pure: the 35=G we send, the reports 150=5/6/E/4 and 35=9 we read, and the
TimeInForce of resting children."""

from __future__ import annotations

import simplefix

from agent.brokers.fix_session import (
    cancel_reject_event,
    execution_report_events,
    new_order_single,
    order_cancel_replace_request,
)
from agent.model import (
    ChildOrder,
    OrderCancelled,
    OrderCancelRejected,
    OrderPendingCancel,
    OrderPendingReplace,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceRequested,
    Side,
)
from agent.orders.tracker import OrderState, OrderTracker


def _get(m: simplefix.FixMessage, tag: int) -> str | None:
    v = m.get(tag)
    return v.decode() if v is not None else None


def report(**tags: object) -> simplefix.FixMessage:
    m = simplefix.FixMessage()
    m.append_pair(35, "8")
    for k, v in tags.items():
        m.append_pair(int(k[1:]), v)
    return m


def test_time_in_force_follows_the_child():
    for tif, code in (("ioc", "3"), ("day", "0"), ("gtc", "1")):
        c = ChildOrder("A-1", "A", "XYZ", Side.BUY, 100, 10.0, 0, tif=tif)  # type: ignore[arg-type]
        assert _get(new_order_single(c, 0), 59) == code


def test_cancel_replace_request_carries_the_new_id_total_qty_and_price():
    req = ReplaceRequested("A-1", "A-1-r1", 300, 10.01, 0)
    m = order_cancel_replace_request(req, "XYZ", Side.SELL, "day", 0)
    assert [_get(m, t) for t in (41, 11, 55, 54, 38, 40, 44, 59)] == [
        "A-1", "A-1-r1", "XYZ", "2", "300", "2", "10.010000", "0",
    ]  # fmt: skip


def test_replace_reports_drive_the_tracker_to_the_new_id():
    t = OrderTracker(1000)
    t.on_submitted(ChildOrder("A-1", "A", "XYZ", Side.BUY, 200, 10.0, 0, tif="day"), 0)
    t.on_event(ReplaceRequested("A-1", "A-1-r1", 300, 10.01, 1))
    (pend,) = execution_report_events(report(t11="A-1-r1", t41="A-1", t150="E", t39="E"), 2)
    assert pend == OrderPendingReplace("A-1", 2)
    t.on_event(pend)
    (rep,) = execution_report_events(
        report(t11="A-1-r1", t41="A-1", t150="5", t39="0", t38="300", t44="10.01"), 3
    )
    assert rep == OrderReplaced("A-1", 3, 300.0, 10.01, "A-1-r1")
    t.on_event(rep)
    child = t.child("A-1")
    assert child is not None and child.order.client_order_id == "A-1-r1"
    assert child.order.qty == 300 and t.open_qty == 300
    (pc,) = execution_report_events(report(t11="A-1-c", t41="A-1-r1", t150="6", t39="6"), 4)
    assert pc == OrderPendingCancel("A-1-r1", 4)
    (cx,) = execution_report_events(report(t11="A-1-c", t41="A-1-r1", t150="4", t39="4"), 5)
    assert isinstance(cx, OrderCancelled) and cx.client_order_id == "A-1-r1"
    t.on_event(cx)
    assert t.child("A-1").state is OrderState.CANCELLED and t.open_qty == 0  # type: ignore[union-attr]


def test_cancel_reject_names_the_order_and_what_was_refused():
    m = simplefix.FixMessage()
    for tag, v in (
        (35, "9"),
        (37, "V-1"),
        (11, "A-1-r1"),
        (41, "A-1"),
        (39, "2"),
        (58, "too late"),
    ):
        m.append_pair(tag, v)
    m.append_pair(434, "2")
    assert cancel_reject_event(m, 7) == OrderReplaceRejected("A-1", 7, "too late")
    m2 = simplefix.FixMessage()
    for tag, v in ((35, "9"), (37, "V-1"), (11, "A-1-c"), (41, "A-1"), (39, "2"), (434, "1")):
        m2.append_pair(tag, v)
    ev = cancel_reject_event(m2, 8)
    assert isinstance(ev, OrderCancelRejected) and ev.client_order_id == "A-1"
