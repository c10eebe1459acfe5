"""Order tracker, property-based: the incremental totals equal the ones recomputed from the
children over random event sequences (duplicates, races, refused events included)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvariantViolation
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
    TrackerEvent,
)
from agent.orders.tracker import OrderTracker

PARENT = 1_000.0
OPS = (
    "submit",
    "accept",
    "fill",
    "fill_dup",
    "cancel_req",
    "replace_req",
    "pending_cancel",
    "pending_replace",
    "replaced",
    "replaced_unasked",
    "cancelled",
    "rejected",
    "cancel_rejected",
    "replace_rejected",
    "status",
)

# Weighted so that sequences reach the replace paths often; closing events are rarer.
WEIGHTED = (*OPS, "submit", "submit", "accept", "fill", "fill", "replace_req", "replace_req")
WEIGHTED += ("replaced", "replaced", "replaced", "pending_replace", "cancel_req")
step = st.tuples(st.sampled_from(WEIGHTED), st.integers(0, 4), st.integers(1, 400))


def recomputed(t: OrderTracker) -> tuple[float, float, int]:
    """Filled, open and number open, summed over the children from scratch."""
    filled = math.fsum(c.filled_qty for c in t.children.values())
    open_qty = math.fsum(c.working_qty for c in t.children.values())
    n_open = sum(1 for c in t.children.values() if not c.state.terminal)
    return filled, open_qty, n_open


def make_event(t: OrderTracker, op: str, i: int, n: int, k: int) -> TrackerEvent | None:
    """Turn a drawn step into one event about child i (by its current id, or a prior one)."""
    ids = list(t.children)
    if not ids:
        return None
    c = t.children[ids[i % len(ids)]]
    coid = c.order.client_order_id
    if c.prior_ids and n % 3 == 0:
        coid = c.prior_ids[-1]  # the venue may still use the old id
    leaves = max(c.order.qty - c.filled_qty, 0.0)
    last = sorted(c.exec_ids)[-1] if c.exec_ids else "none"
    match op:
        case "accept":
            return OrderAccepted(coid, k)
        case "fill":
            qty = float(min(n, leaves)) if leaves >= 1 else float(n)  # sometimes an overfill
            return OrderFilled(coid, f"x{k}", qty, 10.0 + n / 1_000, k)
        case "fill_dup":
            return OrderFilled(coid, last, 1.0, 10.0, k)
        case "cancel_req":
            return CancelRequested(coid, k)
        case "replace_req":
            return ReplaceRequested(coid, f"{ids[i % len(ids)]}.{k}", float(n), 10.0, k)
        case "pending_cancel":
            return OrderPendingCancel(coid, k)
        case "pending_replace":
            return OrderPendingReplace(coid, k)
        case "replaced":
            req = c.replace
            if req is None:
                return None
            return OrderReplaced(coid, k, req.qty, req.limit_px, req.new_client_order_id)
        case "replaced_unasked":
            return OrderReplaced(coid, k, float(n), 10.0)
        case "cancelled":
            return OrderCancelled(coid, k)
        case "rejected":
            return OrderRejected(coid, k)
        case "cancel_rejected":
            return OrderCancelRejected(coid, k)
        case "replace_rejected":
            return OrderReplaceRejected(coid, k)
        case "status":
            cum = min(c.filled_qty + n % 50, c.order.qty)
            return OrderStatus(coid, k, ("working", "cancelled", "unknown")[n % 3], cum, 10.0)
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=60))
def test_incremental_totals_equal_recomputed(steps):
    """After every event (applied, ignored or refused) the O(1) totals equal the sums over
    the children, fills are counted once, and a refused event changes nothing."""
    t = OrderTracker(PARENT)
    applied_fills = 0.0
    n_sub = 0
    for k, (op, i, n) in enumerate(steps, start=1):
        before = (t.filled_qty, t.open_qty, t.n_open, len(t.children))
        try:
            if op == "submit":
                n_sub += 1
                t.on_submitted(
                    ChildOrder(f"C{n_sub}", "P", "S", Side.BUY, float(n), 10.0, k, tif="day"), k
                )
            else:
                ev = make_event(t, op, i, n, k)
                if ev is None:
                    continue
                applied_fills += t.on_event(ev).fill_qty
        except InvariantViolation:
            assert (t.filled_qty, t.open_qty, t.n_open, len(t.children)) == before
        filled, open_qty, n_open = recomputed(t)
        assert t.filled_qty == filled == applied_fills
        assert math.isclose(t.open_qty, open_qty, abs_tol=1e-9)
        assert t.n_open == n_open == sum(1 for _ in t.open_children())
        assert t.uncommitted_qty == max(0.0, PARENT - filled - open_qty)
        assert t.filled_qty <= PARENT
        for c in t.children.values():
            assert 0.0 <= c.filled_qty <= c.order.qty
        t.audit()
