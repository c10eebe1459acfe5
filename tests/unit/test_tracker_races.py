"""Order tracker: resting orders, cancel and cancel/replace, and the races of real venues."""

from __future__ import annotations

import itertools

import pytest

from agent.errors import InternalViolation, InvariantViolation, VenueViolation
from agent.journal import Journal
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderFilled,
    OrderPendingCancel,
    OrderPendingReplace,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderStatus,
    ReplaceRequested,
    Side,
)
from agent.orders.tracker import _TABLE, EventKind, OrderState, OrderTracker


def resting(coid: str = "P-1", qty: float = 100.0, px: float = 10.0) -> ChildOrder:
    return ChildOrder(coid, "P", "SYM", Side.BUY, qty, px, 0, tif="day")


def working(parent: float = 1_000.0, qty: float = 100.0) -> OrderTracker:
    t = OrderTracker(parent)
    t.on_submitted(resting(qty=qty), 0)
    t.on_event(OrderAccepted("P-1", 1))
    return t


def test_child_order_defaults_keep_old_callers_working():
    """Seven positional fields still build an IOC limit; a resting TIF says it rests."""
    c = ChildOrder("P-1", "P", "SYM", Side.BUY, 10.0, 1.0, 0)
    assert (c.tif, c.ord_type, c.rests) == ("ioc", "limit", False)
    assert resting().rests
    with pytest.raises(InternalViolation, match="tif"):
        ChildOrder("P-1", "P", "SYM", Side.BUY, 10.0, 1.0, 0, tif="fok")  # type: ignore[arg-type]


def test_table_covers_every_state_and_event_kind():
    """The transition table is total: no (state, kind) pair falls through to a default."""
    assert set(_TABLE) == set(itertools.product(OrderState, EventKind))


def test_violations_say_whose_fault():
    """Our bad request is InternalViolation (ours); the venue's overfill is VenueViolation."""
    t = working(qty=50.0)
    with pytest.raises(InternalViolation) as ours:
        t.on_submitted(resting("P-2", qty=2_000.0), 0)
    assert ours.value.culprit == "ours"
    with pytest.raises(VenueViolation) as theirs:
        t.on_event(OrderFilled("P-1", "e1", 60.0, 10.0, 2))
    assert theirs.value.culprit == "venue" and isinstance(theirs.value, InvariantViolation)
    assert t.filled_qty == 0.0 and t.open_qty == 50.0  # a refused event changes nothing


def test_resting_order_partial_fills_then_cancel_on_request():
    """A day order rests, fills in parts, is cancelled on our request: quantities exact."""
    t = working()
    t.on_event(OrderFilled("P-1", "e1", 30.0, 10.0, 2))
    tr = t.on_event(CancelRequested("P-1", 3))
    assert tr.new is OrderState.PENDING_CANCEL and t.open_qty == 70.0
    assert t.on_event(OrderPendingCancel("P-1", 4)).note == "confirmed"
    tr = t.on_event(OrderCancelled("P-1", 5, "requested"))
    assert tr.new is OrderState.CANCELLED
    assert (t.filled_qty, t.open_qty, t.uncommitted_qty, t.n_open) == (30.0, 0.0, 970.0, 0)
    t.audit()


def test_race_fill_after_cancel_sent():
    """A fill that crosses our cancel on the wire is applied; the cancel then closes the rest."""
    t = working()
    t.on_event(CancelRequested("P-1", 2))
    tr = t.on_event(OrderFilled("P-1", "e1", 40.0, 10.0, 3))
    assert tr.applied and tr.new is OrderState.PENDING_CANCEL
    assert tr.note == "fill_after_cancel_sent"
    assert t.filled_qty == 40.0 and t.open_qty == 60.0 and t.uncommitted_qty == 900.0
    t.on_event(OrderCancelled("P-1", 4))
    assert t.filled_qty == 40.0 and t.open_qty == 0.0 and t.uncommitted_qty == 960.0
    t.audit()


def test_race_cancel_rejected_because_already_filled():
    """Our cancel loses to the last fill: FILLED stays, the cancel reject is ignored."""
    t = working()
    t.on_event(CancelRequested("P-1", 2))
    assert t.on_event(OrderFilled("P-1", "e1", 100.0, 10.0, 3)).new is OrderState.FILLED
    tr = t.on_event(OrderCancelRejected("P-1", 4, "too late to cancel"))
    assert not tr.applied and tr.note == "after_fill" and tr.new is OrderState.FILLED
    assert t.filled_qty == 100.0 and t.open_qty == 0.0 and t.n_open == 0
    t.audit()


def test_cancel_rejected_while_working_puts_the_order_back():
    """A cancel the venue refuses leaves the order working with its leaves reserved."""
    t = working()
    t.on_event(OrderFilled("P-1", "e1", 10.0, 10.0, 2))
    t.on_event(CancelRequested("P-1", 3))
    tr = t.on_event(OrderCancelRejected("P-1", 4, "busy"))
    assert tr.applied and tr.new is OrderState.PARTIALLY_FILLED and t.open_qty == 90.0
    # A second cancel is allowed; a duplicate one is idempotent.
    t.on_event(CancelRequested("P-1", 5))
    assert t.on_event(CancelRequested("P-1", 6)).note == "duplicate"


def test_replace_down_keeps_the_old_quantity_reserved_until_the_venue_answers():
    """While a replace 100 -> 60 is pending, 100 stay working; once replaced, 60."""
    t = working()
    tr = t.on_event(ReplaceRequested("P-1", "P-1r", 60.0, 10.01, 2))
    assert tr.new is OrderState.PENDING_REPLACE and t.open_qty == 100.0
    assert t.on_event(OrderPendingReplace("P-1r", 3)).note == "confirmed"
    assert t.knows("P-1r") and "P-1r" not in t.children
    tr = t.on_event(OrderReplaced("P-1", 4, 60.0, 10.01, "P-1r"))
    assert tr.applied and tr.new is OrderState.ACKNOWLEDGED and tr.client_order_id == "P-1r"
    c = t.children["P-1r"]
    assert (c.order.qty, c.order.limit_px, c.prior_ids) == (60.0, 10.01, ["P-1"])
    assert "P-1" not in t.children and t.child("P-1") is c
    assert t.open_qty == 60.0 and t.uncommitted_qty == 940.0
    # Later reports name the order by either id; both land on the same child.
    t.on_event(OrderFilled("P-1r", "e1", 20.0, 10.01, 5))
    t.on_event(OrderFilled("P-1", "e2", 40.0, 10.01, 6))
    assert c.state is OrderState.FILLED and t.filled_qty == 60.0 and t.open_qty == 0.0
    t.audit()


def test_replace_up_reserves_the_new_quantity_and_is_bounded_by_the_parent():
    """A replace 100 -> 150 takes 50 more from what is left; more than is left is refused."""
    t = working(parent=200.0)
    with pytest.raises(InternalViolation, match="uncommitted"):
        t.on_event(ReplaceRequested("P-1", "P-1r", 250.0, 10.0, 2))
    assert t.children["P-1"].state is OrderState.ACKNOWLEDGED and t.open_qty == 100.0
    t.on_event(ReplaceRequested("P-1", "P-1r", 150.0, 10.0, 2))
    assert t.open_qty == 150.0 and t.uncommitted_qty == 50.0
    with pytest.raises(InternalViolation):
        t.on_submitted(resting("P-2", qty=60.0), 3)
    tr = t.on_event(OrderReplaceRejected("P-1r", 4, "venue busy"))
    assert tr.applied and tr.new is OrderState.ACKNOWLEDGED
    assert t.open_qty == 100.0 and not t.knows("P-1r")
    t.audit()


def test_race_replace_rejected_because_the_order_just_filled():
    """The fill wins the race: FILLED at the old quantity, the replace reject is ignored."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "P-1r", 150.0, 10.0, 2))
    assert t.open_qty == 150.0
    tr = t.on_event(OrderFilled("P-1", "e1", 100.0, 10.0, 3))
    assert tr.new is OrderState.FILLED and t.open_qty == 0.0 and t.filled_qty == 100.0
    tr = t.on_event(OrderReplaceRejected("P-1r", 4, "too late: filled"))
    assert not tr.applied and tr.note == "after_fill"
    assert t.filled_qty == 100.0 and t.open_qty == 0.0 and t.uncommitted_qty == 900.0
    t.audit()


def test_fill_during_pending_replace_counts_against_the_new_quantity():
    """40 fill while 100 -> 60 is pending; the replace then leaves 20 working."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "", 60.0, 10.0, 2))
    t.on_event(OrderFilled("P-1", "e1", 40.0, 10.0, 3))
    assert t.open_qty == 60.0  # max(100, 60) - 40
    tr = t.on_event(OrderReplaced("P-1", 4, 60.0, 10.0))
    assert tr.new is OrderState.PARTIALLY_FILLED and tr.client_order_id == "P-1"
    assert t.open_qty == 20.0 and t.filled_qty == 40.0
    t.audit()


def test_replace_below_fills_is_refused_ours_and_theirs():
    """We may not ask for a quantity at or below the fills; the venue may not report one."""
    t = working()
    t.on_event(OrderFilled("P-1", "e1", 40.0, 10.0, 2))
    with pytest.raises(InternalViolation, match="not above its fills"):
        t.on_event(ReplaceRequested("P-1", "P-1r", 40.0, 10.0, 3))
    t.on_event(ReplaceRequested("P-1", "P-1r", 50.0, 10.0, 3))
    t.on_event(OrderFilled("P-1", "e2", 30.0, 10.0, 4))  # 70 filled: the replace is now moot
    with pytest.raises(VenueViolation, match="below its fills"):
        t.on_event(OrderReplaced("P-1", 5, 50.0, 10.0, "P-1r"))
    assert t.filled_qty == 70.0 and t.open_qty == 30.0  # unchanged by the refused report
    t.audit()


def test_replace_to_exactly_the_fills_completes_the_child():
    """A venue that replaces to qty == cum qty has finished the order: FILLED."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "P-1r", 60.0, 10.0, 2))
    t.on_event(OrderFilled("P-1", "e1", 60.0, 10.0, 3))
    tr = t.on_event(OrderReplaced("P-1", 4, 60.0, 10.0, "P-1r"))
    assert tr.new is OrderState.FILLED and t.open_qty == 0.0 and t.n_open == 0
    t.audit()


def test_requests_the_state_forbids_are_our_bug():
    """Replace on a closed child, a second pending replace, or one during a cancel: ours."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "P-1r", 80.0, 10.0, 2))
    with pytest.raises(InternalViolation, match="not allowed"):
        t.on_event(ReplaceRequested("P-1", "P-1s", 70.0, 10.0, 3))
    t.on_event(CancelRequested("P-1", 4))
    assert t.children["P-1"].state is OrderState.PENDING_CANCEL and t.open_qty == 100.0
    with pytest.raises(InternalViolation, match="not allowed"):
        t.on_event(ReplaceRequested("P-1", "P-1s", 70.0, 10.0, 5))
    t.on_event(OrderCancelled("P-1", 6))
    assert t.on_event(CancelRequested("P-1", 7)).note == "closed"
    with pytest.raises(InternalViolation, match="not allowed"):
        t.on_event(ReplaceRequested("P-1", "P-1s", 70.0, 10.0, 8))
    with pytest.raises(InternalViolation, match="never sent"):
        t.on_event(CancelRequested("X-9", 9))
    assert t.open_qty == 0.0 and t.uncommitted_qty == 1_000.0
    t.audit()


def test_cancel_while_replace_pending_then_replace_rejected():
    """A kill during a pending replace: the cancel stands; the reserve drops back with it."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "P-1r", 150.0, 10.0, 2))
    t.on_event(CancelRequested("P-1", 3))
    assert t.open_qty == 150.0
    tr = t.on_event(OrderReplaceRejected("P-1r", 4, "cancel pending"))
    assert tr.applied and tr.new is OrderState.PENDING_CANCEL and t.open_qty == 100.0
    t.on_event(OrderCancelled("P-1", 5))
    assert t.open_qty == 0.0 and t.n_open == 0
    t.audit()


def test_replace_applied_before_cancel_then_cancelled():
    """The venue applied our replace, then our cancel: new id and terms, then closed."""
    t = working()
    t.on_event(ReplaceRequested("P-1", "P-1r", 80.0, 10.0, 2))
    t.on_event(CancelRequested("P-1", 3))
    tr = t.on_event(OrderReplaced("P-1", 4, 80.0, 10.0, "P-1r"))
    assert tr.new is OrderState.PENDING_CANCEL and t.open_qty == 80.0
    t.on_event(OrderCancelled("P-1r", 5))
    assert t.open_qty == 0.0 and t.children["P-1r"].state is OrderState.CANCELLED
    t.audit()


def test_replaced_after_filled_to_more_is_the_venues_fault():
    """A venue that amends an order it reported filled to more than its fills broke the rules."""
    t = working()
    t.on_event(OrderFilled("P-1", "e1", 100.0, 10.0, 2))
    with pytest.raises(VenueViolation):
        t.on_event(OrderReplaced("P-1", 3, 150.0, 10.0))
    assert not t.on_event(OrderReplaced("P-1", 3, 100.0, 10.0)).applied


def test_unrequested_venue_replace_within_what_is_left():
    """A venue may reduce an order on its own: applied, noted ``unrequested``."""
    t = working()
    tr = t.on_event(OrderReplaced("P-1", 2, 70.0, 10.0))
    assert tr.applied and tr.note == "unrequested" and t.open_qty == 70.0
    with pytest.raises(VenueViolation, match="more than the parent"):
        t.on_event(OrderReplaced("P-1", 3, 2_000.0, 10.0))


def test_pending_cancel_from_the_venue_and_reject_while_pending():
    """The venue's own pending cancel moves us to PENDING_CANCEL; a reject there refuses."""
    t = working()
    t.on_event(OrderFilled("P-1", "e1", 10.0, 10.0, 2))
    assert t.on_event(OrderPendingCancel("P-1", 3)).note == "unrequested"
    tr = t.on_event(OrderRejected("P-1", 4, "halted"))
    assert tr.new is OrderState.CANCELLED and tr.note == "reject_after_fill"
    assert t.open_qty == 0.0 and t.filled_qty == 10.0


def test_status_reconciles_a_pending_cancel_after_restart():
    """After a restart the venue says the order was cancelled with 30 filled: applied once."""
    t = working()
    t.on_event(CancelRequested("P-1", 2))
    st = OrderStatus("P-1", 3, "cancelled", 30.0, 10.0)
    tr = t.on_event(st)
    assert tr.applied and tr.new is OrderState.CANCELLED and tr.fill_qty == 30.0
    assert not t.on_event(st).applied
    assert t.filled_qty == 30.0 and t.open_qty == 0.0
    t.audit()


async def test_journal_round_trips_requests_and_replace_reports(tmp_path):
    """Intents, cancel/replace requests and the venue's replace reports survive the journal:
    replayed into a fresh tracker (as the daemon's restore does) they rebuild the same state."""
    events = [
        OrderAccepted("P-1", 1),
        OrderFilled("P-1", "e1", 10.0, 10.0, 2),
        ReplaceRequested("P-1", "P-1r", 50.0, 10.1, 3),
        OrderPendingReplace("P-1r", 4),
        OrderReplaced("P-1", 5, 50.0, 10.1, "P-1r"),
        OrderFilled("P-1r", "e2", 5.0, 10.1, 6),
        CancelRequested("P-1r", 7),
        OrderCancelRejected("P-1r", 8, "busy"),
        CancelRequested("P-1r", 9),
    ]
    live = OrderTracker(1_000.0)
    j = Journal(tmp_path / "j.sqlite")
    try:
        await j.intent("mpc", resting())
        live.on_submitted(resting(), 0)
        for e in events:
            if live.on_event(e).applied:
                j.event("P", "mpc", e)
        await j.flush()
        h = j.load("P")
    finally:
        j.close()
    fresh = OrderTracker(1_000.0)
    for _, item in h.items:
        if isinstance(item, ChildOrder):
            fresh.on_submitted(item, item.ts_created_ns)
        else:
            fresh.on_event(item)
    assert h.items[0][1] == resting()
    c, d = live.children["P-1r"], fresh.children["P-1r"]
    assert (d.state, d.order, d.filled_qty, d.prior_ids) == (
        c.state,
        c.order,
        c.filled_qty,
        c.prior_ids,
    )
    assert d.state is OrderState.PENDING_CANCEL and d.order.tif == "day"
    assert (fresh.filled_qty, fresh.open_qty) == (live.filled_qty, live.open_qty) == (15.0, 35.0)
