"""Sans-I/O order tracker: the single source of truth for what a parent order has left.

Invariants (checked on every event; a breach raises ``InternalViolation`` when we broke it and
``VenueViolation`` when the venue did, both ``InvariantViolation``):
- a child's filled quantity never exceeds its quantity (a fill beyond it: the venue's fault);
- what we commit never exceeds the parent: a new child, or a replace that raises a child's
  quantity, must fit in ``uncommitted_qty = parent_qty - filled_qty - open_qty`` (ours);
- ``open_qty`` counts every non-terminal child's working quantity; while a replace is pending
  that is the larger of the old and the new quantity less the fills, since either may stand;
- a fill is applied exactly once: executions are keyed by ``exec_id``, a repeat is ignored;
- a replace never takes a child below what it has filled (asked by us: ours; reported by the
  venue: theirs); a child whose fills reach its quantity is FILLED, whatever the event;
- states move along the transition table ``_TABLE`` (data below); a late or duplicate report
  never moves a child backwards (an acknowledgement after a fill is ignored).

``filled_qty``, ``open_qty`` and ``n_open`` are kept incrementally (O(1) per event, not a sum
over the children); ``audit()`` recomputes them from the children and raises on a difference.

Transition table, in short (``_TABLE`` is the exact one; ``-`` = ignored, state kept)::

    venue report   accepted fill   cancelled rejected pend_cxl replaced cxl_rej rpl_rej
    NEW            ACK      PF     CANCELLED REJECTED PEND_CXL WORK     -       -
    ACK, PF        -        PF     CANCELLED REFUSED* PEND_CXL WORK     -       -
    PEND_CANCEL    -        kept   CANCELLED REFUSED* -        kept     WORK    kept
    PEND_REPLACE   -        kept   CANCELLED REFUSED* PEND_CXL WORK     -       WORK
    FILLED         -        venue! -         -        -        venue!   -(race) -(race)
    CANCELLED,     -        late** -         -        -        -        -       -
    REJECTED

    our request    cancel_requested  replace_requested
    NEW, ACK, PF   PEND_CANCEL       PEND_REPLACE
    PEND_CANCEL    -                 ours!
    PEND_REPLACE   PEND_CANCEL       ours!
    closed         -                 ours!

    A pending-replace report only confirms our request (one we did not send is ignored: we
    cannot reserve a quantity we were never told). A status query answer reconciles from any
    state (``_fx_status``); a cancel report that carries the venue's CumQty applies the fills we
    missed the same way before it closes the child (a restart can miss fill reports, and an
    unsolicited cancel may close the child before any status query). A repeated ``exec_id``
    is ignored everywhere.
    WORK = ACKNOWLEDGED, or PARTIALLY_FILLED once something filled (PEND_REPLACE while one
    is still pending); a fill that completes the child makes it FILLED from any state.
    *  a reject after fills cannot take the fills back: the remainder is treated as cancelled.
    ** a fill reported after the venue closed the order is still a real execution: applied
       (never lost), noted ``late_fill``.
    ours! = ``InternalViolation`` (we asked what the state forbids); venue! = ``VenueViolation``
    (a new execution on a filled child, or the venue amending it to more than its fills).

The races real venues have: a fill after our cancel was sent is applied and the child stays
PENDING_CANCEL (or FILLED); the cancel reject that follows for a filled child is ignored
(``after_fill``); a replace rejected because the child just filled is ignored the same way;
while a replace is pending the child's old quantity stays reserved, so nothing is committed
twice whichever way it goes.

A fill for a client order id the tracker never saw is *not* dropped: it is kept in
``orphan_fills`` and reported, and does not count towards the parent (a human must look).
A replace may give the child a new client order id (FIX ClOrdID on 35=G): the tracker then
keys the child by its new id and still resolves the old ones (``child(coid)``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from agent.errors import InternalViolation, VenueViolation
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
    TrackerEvent,
)

__all__ = ["ChildState", "EventKind", "OrderState", "OrderTracker", "Transition"]

_EPS = 1e-9


class OrderState(enum.StrEnum):
    """Life-cycle state of a child order."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        """Return True when the venue will not work the order any more."""
        # Identity tests: cheaper than hashing an enum member into a set, on the hot path.
        return self is _FILLED or self is _CANCELLED or self is _REJECTED


_FILLED, _CANCELLED, _REJECTED = OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED


class EventKind(enum.StrEnum):
    """What an event is, for the transition table (one kind per event class)."""

    ACCEPTED = "accepted"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    STATUS = "status"
    CANCEL_REQUESTED = "cancel_requested"
    REPLACE_REQUESTED = "replace_requested"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    CANCEL_REJECTED = "cancel_rejected"
    REPLACE_REJECTED = "replace_rejected"


_KIND_OF: dict[type, EventKind] = {
    OrderAccepted: EventKind.ACCEPTED,
    OrderFilled: EventKind.FILLED,
    OrderCancelled: EventKind.CANCELLED,
    OrderRejected: EventKind.REJECTED,
    OrderStatus: EventKind.STATUS,
    CancelRequested: EventKind.CANCEL_REQUESTED,
    ReplaceRequested: EventKind.REPLACE_REQUESTED,
    OrderPendingCancel: EventKind.PENDING_CANCEL,
    OrderPendingReplace: EventKind.PENDING_REPLACE,
    OrderReplaced: EventKind.REPLACED,
    OrderCancelRejected: EventKind.CANCEL_REJECTED,
    OrderReplaceRejected: EventKind.REPLACE_REJECTED,
}

_REQUESTS = frozenset({EventKind.CANCEL_REQUESTED, EventKind.REPLACE_REQUESTED})


@dataclass(slots=True)
class ChildState:
    """What the tracker knows of one child order.

    ``order`` is the child as it stands now: after a replace, its quantity, limit price and
    client order id are the replaced ones (``prior_ids`` keeps the ids it had before).
    ``replace`` is our replace request while the venue has not answered it. ``n_status``
    counts the venue's answers to status queries (a reconciliation waits for one).
    """

    order: ChildOrder
    state: OrderState = OrderState.NEW
    filled_qty: float = 0.0
    notional: float = 0.0
    ts_submitted_ns: int = 0
    ts_last_ns: int = 0
    exec_ids: set[str] = field(default_factory=set)
    reason: str = ""
    acked: bool = False
    replace: ReplaceRequested | None = None
    ts_cancel_requested_ns: int | None = None
    prior_ids: list[str] = field(default_factory=list)
    n_status: int = 0

    @property
    def leaves_qty(self) -> float:
        """Return the quantity still working at the venue (0 once terminal)."""
        if self.state.terminal:
            return 0.0
        return self.order.qty - self.filled_qty

    @property
    def working_qty(self) -> float:
        """Return what this child holds of the parent: leaves, or while a replace is pending
        the larger of the old and the new leaves (either may stand); 0 once terminal."""
        if self.state.terminal:
            return 0.0
        qty = self.order.qty if self.replace is None else max(self.order.qty, self.replace.qty)
        return qty - self.filled_qty

    @property
    def avg_px(self) -> float:
        """Return the average fill price, NaN when nothing filled."""
        return self.notional / self.filled_qty if self.filled_qty > 0 else float("nan")

    @property
    def full(self) -> bool:
        """Return True when the fills reach the child's quantity."""
        return self.filled_qty >= self.order.qty - _EPS


@dataclass(frozen=True, slots=True)
class Transition:
    """Outcome of applying one event.

    Attributes:
        client_order_id: The child concerned, by its current id (after a replace that renamed
            it, the new one); the event's id for an unknown order.
        old: State before the event (None for an unknown order).
        new: State after the event (None for an unknown order).
        applied: False when the event changed nothing (duplicate, stale, unknown).
        note: ``""`` normally, else why: ``"duplicate"``, ``"stale"``, ``"late_fill"``,
            ``"reject_after_fill"``, ``"unknown_order"``, ``"status"``, ``"status_behind"``,
            ``"closed"`` (a cancel asked of a closed child), ``"confirmed"`` (the venue's
            pending report for our own request), ``"unrequested"`` (a venue pending/replaced
            report we did not ask for), ``"after_fill"`` (a cancel or replace reject for a
            child that filled meanwhile: the race), ``"fill_after_cancel_sent"``.
        fill_qty: Shares executed by this event (0 if none applied).
    """

    client_order_id: str
    old: OrderState | None
    new: OrderState | None
    applied: bool
    note: str = ""
    fill_qty: float = 0.0


# -- the transition table ------------------------------------------------------------------------
class _To(enum.Enum):
    """Targets computed from the child once the effect ran."""

    KEEP = "keep"  # the state it had
    WORKING = "working"  # PENDING_REPLACE if a replace is pending, else PF / ACK / NEW
    CLOSED = "closed"  # FILLED if full, else CANCELLED
    REFUSED = "refused"  # CANCELLED if anything filled, else REJECTED
    AS_SET = "as_set"  # what the effect set (status reconciliation decides for itself)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One cell of the table: the effect to run, the state to go to, the note to report."""

    effect: str  # name of an ``OrderTracker._fx_*`` method
    to: OrderState | _To
    note: str = ""
    stamps: bool = True  # a venue report moves ``ts_last_ns``; our own request does not


S = OrderState
K = EventKind
_IGNORE_STALE = _Rule("ignore", _To.KEEP, "stale")
_IGNORE_DUP = _Rule("ignore", _To.KEEP, "duplicate")
_FORBID = _Rule("forbid", _To.KEEP)

# Rows shared by the three working states (NEW, ACKNOWLEDGED, PARTIALLY_FILLED).
_WORKING_ROW: dict[EventKind, _Rule] = {
    K.ACCEPTED: _IGNORE_STALE,
    K.FILLED: _Rule("fill", S.PARTIALLY_FILLED),
    K.CANCELLED: _Rule("close", _To.CLOSED),
    K.REJECTED: _Rule("refuse", _To.REFUSED),
    K.STATUS: _Rule("status", _To.AS_SET, "status"),
    K.CANCEL_REQUESTED: _Rule("request_cancel", S.PENDING_CANCEL),
    K.REPLACE_REQUESTED: _Rule("request_replace", S.PENDING_REPLACE),
    K.PENDING_CANCEL: _Rule("mark", S.PENDING_CANCEL, "unrequested"),
    # We cannot reserve a quantity we were never told: wait for the venue's replaced report.
    K.PENDING_REPLACE: _Rule("ignore", _To.KEEP, "unrequested"),
    K.REPLACED: _Rule("replaced", _To.WORKING, "unrequested"),
    K.CANCEL_REJECTED: _IGNORE_STALE,
    K.REPLACE_REJECTED: _IGNORE_STALE,
}

_CLOSED_ROW: dict[EventKind, _Rule] = {
    K.ACCEPTED: _IGNORE_STALE,
    K.FILLED: _Rule("fill", S.CANCELLED, "late_fill"),
    K.CANCELLED: _IGNORE_DUP,
    K.REJECTED: _IGNORE_DUP,
    K.STATUS: _Rule("status", _To.AS_SET, "status"),
    K.CANCEL_REQUESTED: _Rule("ignore", _To.KEEP, "closed"),
    K.REPLACE_REQUESTED: _FORBID,
    K.PENDING_CANCEL: _IGNORE_STALE,
    K.PENDING_REPLACE: _IGNORE_STALE,
    K.REPLACED: _IGNORE_STALE,
    K.CANCEL_REJECTED: _IGNORE_STALE,
    K.REPLACE_REJECTED: _Rule("replace_rejected", _To.KEEP, "stale"),
}

_ROWS: dict[OrderState, dict[EventKind, _Rule]] = {
    S.NEW: _WORKING_ROW | {K.ACCEPTED: _Rule("ack", S.ACKNOWLEDGED)},
    S.ACKNOWLEDGED: _WORKING_ROW,
    S.PARTIALLY_FILLED: _WORKING_ROW,
    S.PENDING_CANCEL: {
        K.ACCEPTED: _Rule("ack", _To.KEEP, "stale"),
        K.FILLED: _Rule("fill", S.PENDING_CANCEL, "fill_after_cancel_sent"),
        K.CANCELLED: _Rule("close", _To.CLOSED),
        K.REJECTED: _Rule("refuse", _To.REFUSED),
        K.STATUS: _Rule("status", _To.AS_SET, "status"),
        K.CANCEL_REQUESTED: _IGNORE_DUP,
        K.REPLACE_REQUESTED: _FORBID,
        K.PENDING_CANCEL: _Rule("ignore", _To.KEEP, "confirmed"),
        K.PENDING_REPLACE: _IGNORE_STALE,
        # A replace the venue applied before our cancel: take its terms, the cancel stands.
        K.REPLACED: _Rule("replaced", _To.KEEP),
        K.CANCEL_REJECTED: _Rule("cancel_rejected", _To.WORKING),
        K.REPLACE_REJECTED: _Rule("replace_rejected", _To.KEEP),
    },
    S.PENDING_REPLACE: {
        K.ACCEPTED: _Rule("ack", _To.KEEP, "stale"),
        K.FILLED: _Rule("fill", S.PENDING_REPLACE),
        K.CANCELLED: _Rule("close", _To.CLOSED),
        K.REJECTED: _Rule("refuse", _To.REFUSED),
        K.STATUS: _Rule("status", _To.AS_SET, "status"),
        K.CANCEL_REQUESTED: _Rule("request_cancel", S.PENDING_CANCEL),
        K.REPLACE_REQUESTED: _FORBID,
        K.PENDING_CANCEL: _Rule("mark", S.PENDING_CANCEL, "unrequested"),
        K.PENDING_REPLACE: _Rule("ignore", _To.KEEP, "confirmed"),
        K.REPLACED: _Rule("replaced", _To.WORKING),
        K.CANCEL_REJECTED: _IGNORE_STALE,
        K.REPLACE_REJECTED: _Rule("replace_rejected", _To.WORKING),
    },
    S.FILLED: _CLOSED_ROW
    | {
        # A new execution on a filled child is an overfill: the fill effect raises.
        K.FILLED: _Rule("fill", S.FILLED),
        K.REPLACED: _Rule("replaced_closed", _To.KEEP, "stale"),
        K.CANCEL_REJECTED: _Rule("ignore", _To.KEEP, "after_fill"),
        K.REPLACE_REJECTED: _Rule("replace_rejected", _To.KEEP, "after_fill"),
    },
    S.CANCELLED: _CLOSED_ROW,
    S.REJECTED: _CLOSED_ROW,
}

_TABLE: dict[tuple[OrderState, EventKind], _Rule] = {
    (state, kind): dataclasses.replace(rule, stamps=kind not in _REQUESTS)
    for state, row in _ROWS.items()
    for kind, rule in row.items()
}
del S, K

# An effect returns (applied, note override or None, shares filled).
_Effect = tuple[bool, str | None, float]


class OrderTracker:
    """Track the children of one parent order.

    Args:
        parent_qty: Shares the parent order must execute, > 0.

    Raises:
        InternalViolation: ``parent_qty <= 0``.
    """

    def __init__(self, parent_qty: float) -> None:
        if not parent_qty > 0:
            raise InternalViolation(f"parent_qty must be > 0, got {parent_qty}")
        self.parent_qty = float(parent_qty)
        self.children: dict[str, ChildState] = {}
        self.orphan_fills: list[OrderFilled] = []
        self._filled = 0.0
        self._notional = 0.0
        self._open = 0.0
        self._open_ids: dict[str, None] = {}  # current ids of the non-terminal children, in order
        self._ids: dict[str, str] = {}  # prior or pending id -> id it maps to (chains resolve)
        self._orphan_exec_ids: set[str] = set()

    # -- queries -------------------------------------------------------------------------------
    @property
    def filled_qty(self) -> float:
        """Return shares executed so far across all children."""
        return self._filled

    @property
    def notional(self) -> float:
        """Return the currency value of all executions (sum of qty * px)."""
        return self._notional

    @property
    def avg_px(self) -> float:
        """Return the parent's average execution price, NaN before the first fill."""
        return self._notional / self._filled if self._filled > 0 else float("nan")

    @property
    def open_qty(self) -> float:
        """Return shares working at the venue (sent, not yet filled or closed); O(1)."""
        return self._open

    @property
    def remaining_qty(self) -> float:
        """Return shares not yet executed: ``parent_qty - filled_qty``."""
        return self.parent_qty - self._filled

    @property
    def uncommitted_qty(self) -> float:
        """Return shares neither executed nor working: what a new child may still take."""
        return max(0.0, self.parent_qty - self._filled - self._open)

    @property
    def n_open(self) -> int:
        """Return how many children are not yet terminal."""
        return len(self._open_ids)

    def open_children(self) -> Iterator[ChildState]:
        """Yield the non-terminal children in the order they were sent (no scan of the rest)."""
        for coid in list(self._open_ids):
            yield self.children[coid]

    def child(self, client_order_id: str) -> ChildState | None:
        """Return the child known by this id: current, prior (before a replace) or pending."""
        coid = client_order_id
        for _ in range(len(self._ids) + 1):
            c = self.children.get(coid)
            if c is not None:
                return c
            nxt = self._ids.get(coid)
            if nxt is None:
                return None
            coid = nxt
        return None

    def knows(self, client_order_id: str) -> bool:
        """Return True when events for this id belong to this tracker."""
        return self.child(client_order_id) is not None

    def audit(self) -> None:
        """Recompute filled, notional, open and the open set from the children; raise on drift.

        Raises:
            InternalViolation: an incremental total differs from the recomputed one.
        """
        filled = math.fsum(c.filled_qty for c in self.children.values())
        notional = math.fsum(c.notional for c in self.children.values())
        open_qty = math.fsum(c.working_qty for c in self.children.values())
        open_ids = [k for k, c in self.children.items() if not c.state.terminal]
        tol = 1e-9 * max(1.0, self.parent_qty)
        if (
            abs(filled - self._filled) > tol
            or abs(open_qty - self._open) > tol
            or abs(notional - self._notional) > 1e-9 * max(1.0, abs(notional))
            or sorted(open_ids) != sorted(self._open_ids)
        ):
            raise InternalViolation(
                f"tracker totals drifted: filled {self._filled} vs {filled}, open {self._open} "
                f"vs {open_qty}, open ids {sorted(self._open_ids)} vs {sorted(open_ids)}"
            )

    # -- commands ------------------------------------------------------------------------------
    def on_submitted(self, order: ChildOrder, ts_ns: int) -> None:
        """Record a child about to be sent.

        Raises:
            InternalViolation: duplicate client order id, non-positive quantity, or a child
                that would take filled + open above the parent quantity.
        """
        coid = order.client_order_id
        if coid in self.children or coid in self._ids:
            raise InternalViolation(f"duplicate client_order_id {coid}")
        if not order.qty > 0:
            raise InternalViolation(f"child qty must be > 0, got {order.qty}")
        if order.qty > self.uncommitted_qty + _EPS:
            raise InternalViolation(
                f"child {coid} qty {order.qty} exceeds uncommitted "
                f"{self.uncommitted_qty} (filled {self._filled}, open {self._open})"
            )
        self.children[coid] = ChildState(order=order, ts_submitted_ns=ts_ns, ts_last_ns=ts_ns)
        self._open_ids[coid] = None
        self._open += order.qty

    def on_event(self, event: TrackerEvent) -> Transition:
        """Apply one venue report or one of our requests; idempotent for duplicates.

        Raises:
            InternalViolation: a request the child's state forbids (a replace while a cancel
                or another replace is pending, or on a closed child), a replace below the
                child's fills or above what the parent has left, a request for an unknown id.
            VenueViolation: a fill that overfills its child or (after the venue closed it) the
                parent, a replaced report below the fills or above what the parent has left.
        """
        by_state = _BY_TYPE.get(type(event))
        if by_state is None:
            raise InternalViolation(f"unknown event type {type(event).__name__}")
        coid = event.client_order_id
        child = self.children.get(coid) or self.child(coid)
        if child is None:
            return self._unknown(event, _KIND_OF[type(event)])
        old = child.state
        rule = by_state[old]
        working_before = child.working_qty
        applied, note, fill_qty = _EFFECTS[rule.effect](self, child, event, rule)
        if applied:
            if rule.stamps:
                child.ts_last_ns = max(child.ts_last_ns, event.ts_event_ns)
            child.state = self._target(child, old, rule.to)
        self._account(child, old, working_before)
        return Transition(
            child.order.client_order_id,
            old,
            child.state,
            applied,
            rule.note if note is None else note,
            fill_qty,
        )

    # -- internals -----------------------------------------------------------------------------
    def _unknown(self, event: TrackerEvent, kind: EventKind) -> Transition:
        coid = event.client_order_id
        if kind in _REQUESTS:
            raise InternalViolation(f"{type(event).__name__} for {coid}, a child never sent")
        if isinstance(event, OrderFilled) and event.exec_id not in self._orphan_exec_ids:
            self._orphan_exec_ids.add(event.exec_id)
            self.orphan_fills.append(event)
        return Transition(coid, None, None, applied=False, note="unknown_order")

    @staticmethod
    def _target(child: ChildState, old: OrderState, to: OrderState | _To) -> OrderState:
        if child.full:
            return OrderState.FILLED
        if isinstance(to, OrderState):
            return to
        if to is _To.KEEP:
            return old
        if to is _To.AS_SET:
            return child.state
        if to is _To.WORKING:
            if child.replace is not None:
                return OrderState.PENDING_REPLACE
            if child.filled_qty > 0:
                return OrderState.PARTIALLY_FILLED
            return OrderState.ACKNOWLEDGED if child.acked else OrderState.NEW
        if to is _To.CLOSED:
            return OrderState.CANCELLED
        return OrderState.CANCELLED if child.filled_qty > 0 else OrderState.REJECTED

    def _account(self, child: ChildState, old: OrderState, working_before: float) -> None:
        """Carry the child's change into the running totals (the only place that does)."""
        self._open += child.working_qty - working_before
        if -_EPS < self._open < _EPS:
            self._open = 0.0
        now, was = child.state.terminal, old.terminal
        if now and not was:
            self._open_ids.pop(child.order.client_order_id, None)
        elif was and not now:  # pragma: no cover - no row of the table reopens a child today
            self._open_ids[child.order.client_order_id] = None

    # Effects. Each returns (applied, note or None for the rule's note, shares filled).
    def _fx_ignore(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        return False, None, 0.0

    def _fx_forbid(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        raise InternalViolation(
            f"{type(event).__name__} on {child.order.client_order_id} in state "
            f"{child.state}: not allowed (a replace needs a working child with no cancel or "
            f"replace pending)"
        )

    def _fx_ack(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        child.acked = True
        return rule.to is not _To.KEEP, None, 0.0

    def _fx_mark(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        child.acked = True
        return True, None, 0.0

    def _fx_close(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderCancelled, event)
        fill_qty = 0.0
        if event.cum_qty is not None:  # the venue's total: apply fills we missed, once
            fill_qty = self._catch_up(child, event.cum_qty, event.avg_px, event.ts_event_ns)
        child.reason = event.reason
        self._drop_replace(child)
        return True, ("missed_fills" if fill_qty else None), fill_qty

    def _catch_up(self, child: ChildState, cum_qty: float, avg_px: float, ts_ns: int) -> float:
        """Apply what the venue's cumulative quantity has above ours, once; return it (0: none).

        One fill at the price that makes our average equal the venue's, with an ExecID derived
        from the cumulative quantity (the same total applied twice changes nothing).
        """
        coid = child.order.client_order_id
        missing = cum_qty - child.filled_qty
        exec_id = f"status:{coid}:{cum_qty:g}"
        if not missing > _EPS or exec_id in child.exec_ids:
            return 0.0
        px = (cum_qty * avg_px - child.notional) / missing if avg_px > 0 else 0.0
        self._fill(child, OrderFilled(coid, exec_id, missing, px, ts_ns))
        return missing

    def _fx_refuse(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderRejected, event)
        child.reason = event.reason
        self._drop_replace(child)
        return True, ("reject_after_fill" if child.filled_qty > 0 else None), 0.0

    def _fx_fill(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderFilled, event)
        if event.exec_id in child.exec_ids:
            return False, "duplicate", 0.0
        self._fill(child, event)
        return True, None, event.qty

    def _fill(self, child: ChildState, fill: OrderFilled) -> None:
        """Apply one execution to the child and the parent (the only place that adds fills)."""
        coid = child.order.client_order_id
        if not fill.qty > 0:
            raise VenueViolation(f"fill {fill.exec_id} on {coid} has qty {fill.qty} <= 0")
        if child.filled_qty + fill.qty > child.order.qty + _EPS:
            raise VenueViolation(
                f"fill {fill.exec_id} overfills {coid}: {child.filled_qty} + {fill.qty} > "
                f"{child.order.qty}"
            )
        if self._filled + fill.qty > self.parent_qty + _EPS:
            # Within its child's quantity: a working child had that reserved, so only a fill
            # after the venue closed the child (whose shares we then re-used) gets here.
            cls = VenueViolation if child.state.terminal else InternalViolation
            raise cls(
                f"fill {fill.exec_id} on {coid} overfills the parent: {self._filled} + "
                f"{fill.qty} > {self.parent_qty}"
                + (" (reported after the venue closed the order)" if child.state.terminal else "")
            )
        child.exec_ids.add(fill.exec_id)
        child.filled_qty += fill.qty
        child.notional += fill.qty * fill.px
        child.ts_last_ns = max(child.ts_last_ns, fill.ts_event_ns)
        self._filled += fill.qty
        self._notional += fill.qty * fill.px

    def _fx_status(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        """Reconcile with the venue's status: apply unseen execution, then its final state.

        A venue's cumulative quantity above ours means fill reports were lost (the daemon died
        between the wire and the journal); the difference is applied once, as one fill at the
        price that makes our average equal the venue's, with an ExecID derived from the
        cumulative quantity (so the same status applied twice changes nothing).
        """
        st = cast(OrderStatus, event)
        child.n_status += 1
        applied = False
        missing = st.cum_qty - child.filled_qty
        fill_qty = self._catch_up(child, st.cum_qty, st.avg_px, st.ts_event_ns)
        if fill_qty:
            applied = True
            if child.state in (OrderState.NEW, OrderState.ACKNOWLEDGED):
                child.state = OrderState.PARTIALLY_FILLED
        elif missing < -_EPS and st.status != "unknown":
            # The venue knows less than we do: keep ours (fills are never taken back) and say so.
            # (One that no longer knows the order at all closes it below, our fills kept.)
            return False, "status_behind", 0.0
        if not child.state.terminal:
            if st.status in ("cancelled", "filled"):
                self._close_now(child, OrderState.CANCELLED, st.reason or child.reason)
                applied = True
            elif st.status in ("rejected", "unknown"):
                # A child the venue had acknowledged (or filled) and no longer knows (a venue
                # restart that forgot its resting orders) was cancelled there, not refused.
                had = child.filled_qty > 0 or (child.acked and st.status == "unknown")
                to = OrderState.CANCELLED if had else OrderState.REJECTED
                self._close_now(child, to, st.reason or st.status)
                applied = True
            elif st.status == "working" and child.state is OrderState.NEW:
                child.acked = True
                child.state = OrderState.ACKNOWLEDGED
                applied = True
        return applied, None, fill_qty

    def _close_now(self, child: ChildState, to: OrderState, reason: str) -> None:
        child.state = to
        child.reason = reason
        self._drop_replace(child)

    def _fx_request_cancel(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        child.ts_cancel_requested_ns = event.ts_event_ns
        return True, None, 0.0

    def _fx_request_replace(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(ReplaceRequested, event)
        coid = child.order.client_order_id
        if not event.qty > child.filled_qty + _EPS:
            raise InternalViolation(
                f"replace of {coid} to qty {event.qty} is not above its fills "
                f"{child.filled_qty}: cancel it instead"
            )
        if not (math.isfinite(event.limit_px) and event.limit_px > 0):
            raise InternalViolation(f"replace of {coid} to limit_px {event.limit_px}")
        extra = max(0.0, event.qty - child.order.qty)
        if extra > self.uncommitted_qty + _EPS:
            raise InternalViolation(
                f"replace of {coid} to qty {event.qty} takes {extra} more than the uncommitted "
                f"{self.uncommitted_qty} (filled {self._filled}, open {self._open})"
            )
        new = event.new_client_order_id
        if new and new != coid:
            if new in self.children or new in self._ids:
                raise InternalViolation(f"replace of {coid}: duplicate client_order_id {new}")
            self._ids[new] = coid
        child.replace = event
        return True, None, 0.0

    def _fx_replaced(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderReplaced, event)
        coid = child.order.client_order_id
        req = child.replace
        new = event.new_client_order_id or (req.new_client_order_id if req else "") or coid
        if event.qty < child.filled_qty - _EPS:
            raise VenueViolation(
                f"venue replaced {coid} to qty {event.qty}, below its fills {child.filled_qty}"
            )
        if new != coid and (new in self.children or self._ids.get(new, coid) != coid):
            raise VenueViolation(f"venue replaced {coid} with the id {new} of another order")
        reserved = child.working_qty
        if event.qty - child.filled_qty > reserved + self.uncommitted_qty + _EPS:
            raise VenueViolation(
                f"venue replaced {coid} to qty {event.qty} (we asked "
                f"{req.qty if req else 'nothing'}): more than the parent has left"
            )
        self._drop_replace(child)
        child.order = dataclasses.replace(
            child.order, client_order_id=new, qty=event.qty, limit_px=event.limit_px
        )
        if new != coid:
            child.prior_ids.append(coid)
            self.children[new] = self.children.pop(coid)
            self._ids[coid] = new
            if coid in self._open_ids:
                # Keep the open set keyed by the current id (order of sending is not kept here).
                del self._open_ids[coid]
                self._open_ids[new] = None
        child.acked = True
        return True, None, 0.0

    def _fx_replaced_closed(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderReplaced, event)
        if event.qty > child.filled_qty + _EPS:
            raise VenueViolation(
                f"venue replaced {child.order.client_order_id} to qty {event.qty} after "
                f"reporting it filled ({child.filled_qty})"
            )
        return False, None, 0.0

    def _fx_cancel_rejected(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        event = cast(OrderCancelRejected, event)
        child.ts_cancel_requested_ns = None
        child.reason = event.reason
        return True, None, 0.0

    def _fx_replace_rejected(self, child: ChildState, event: TrackerEvent, rule: _Rule) -> _Effect:
        had = child.replace is not None
        self._drop_replace(child)
        if child.state.terminal:
            return False, None, 0.0
        if isinstance(event, OrderReplaceRejected):
            child.reason = event.reason
        return had, (None if had else "stale"), 0.0

    def _drop_replace(self, child: ChildState) -> None:
        req = child.replace
        if req is None:
            return
        child.replace = None
        new = req.new_client_order_id
        if new and new != child.order.client_order_id and new not in self.children:
            self._ids.pop(new, None)


# Fast lookups derived from the table (the table stays the one source): event class -> state ->
# rule, and effect name -> function.
_BY_TYPE: dict[type, dict[OrderState, _Rule]] = {
    cls: {state: _TABLE[(state, kind)] for state in OrderState} for cls, kind in _KIND_OF.items()
}
_EFFECTS: dict[str, Callable[[OrderTracker, ChildState, TrackerEvent, _Rule], _Effect]] = {
    rule.effect: getattr(OrderTracker, "_fx_" + rule.effect) for rule in _TABLE.values()
}
