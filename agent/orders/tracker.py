"""Sans-I/O order tracker: the single source of truth for what a parent order has left.

Invariants (checked on every event; a breach raises ``InvariantViolation``):
- a child's filled quantity never exceeds its requested quantity;
- the parent's filled quantity plus the open (working) quantity of its children never exceeds
  the parent quantity: ``filled_qty + open_qty <= parent_qty``;
- a fill is applied exactly once: executions are keyed by ``exec_id``, a repeat is ignored;
- states only move forward along the transition table below; a late or duplicate report never
  moves a child backwards (an acknowledgement after a fill is ignored).

Transition table (event -> new state; ``-`` = ignored, state kept)::

    state \\ event      accepted       filled (partial / full)      cancelled    rejected
    NEW                ACKNOWLEDGED   PARTIALLY_FILLED / FILLED    CANCELLED    REJECTED
    ACKNOWLEDGED       -              PARTIALLY_FILLED / FILLED    CANCELLED    REJECTED
    PARTIALLY_FILLED   -              PARTIALLY_FILLED / FILLED    CANCELLED    CANCELLED*
    FILLED             -              (duplicate only)             -            -
    CANCELLED          -              applied, state kept**        -            -
    REJECTED           -              applied, CANCELLED**         -            -

    *  a reject after fills cannot take the fills back: the remainder is treated as cancelled.
    ** a fill that arrives after the venue closed the order is still a real execution: it is
       applied (never lost) and reported as ``late``.

A fill for a client order id the tracker never saw is *not* dropped: it is kept in
``orphan_fills`` and reported, and does not count towards the parent (a human must look).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.errors import InvariantViolation
from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatus,
)

__all__ = ["ChildState", "OrderState", "OrderTracker", "Transition"]

_EPS = 1e-9


class OrderState(enum.StrEnum):
    """Life-cycle state of a child order."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        """Return True when the venue will not work the order any more."""
        return self in _TERMINAL


_TERMINAL = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED})


@dataclass(slots=True)
class ChildState:
    """What the tracker knows of one child order."""

    order: ChildOrder
    state: OrderState = OrderState.NEW
    filled_qty: float = 0.0
    notional: float = 0.0
    ts_submitted_ns: int = 0
    ts_last_ns: int = 0
    exec_ids: set[str] = field(default_factory=set)
    reason: str = ""

    @property
    def leaves_qty(self) -> float:
        """Return the quantity still working at the venue (0 once terminal)."""
        if self.state.terminal:
            return 0.0
        return self.order.qty - self.filled_qty

    @property
    def avg_px(self) -> float:
        """Return the average fill price, NaN when nothing filled."""
        return self.notional / self.filled_qty if self.filled_qty > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class Transition:
    """Outcome of applying one event.

    Attributes:
        client_order_id: The child concerned.
        old: State before the event (None for an unknown order).
        new: State after the event (None for an unknown order).
        applied: False when the event changed nothing (duplicate, stale, unknown).
        note: ``""`` normally; ``"duplicate"``, ``"stale"``, ``"late_fill"``,
            ``"reject_after_fill"`` or ``"unknown_order"`` otherwise.
        fill_qty: Shares executed by this event (0 if none applied).
    """

    client_order_id: str
    old: OrderState | None
    new: OrderState | None
    applied: bool
    note: str = ""
    fill_qty: float = 0.0


class OrderTracker:
    """Track the children of one parent order.

    Args:
        parent_qty: Shares the parent order must execute, > 0.
    """

    def __init__(self, parent_qty: float) -> None:
        if not parent_qty > 0:
            raise InvariantViolation(f"parent_qty must be > 0, got {parent_qty}")
        self.parent_qty = float(parent_qty)
        self.children: dict[str, ChildState] = {}
        self.orphan_fills: list[OrderFilled] = []
        self._filled = 0.0
        self._notional = 0.0

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
        """Return shares working at the venue (sent, not yet filled or closed)."""
        return sum(c.leaves_qty for c in self.children.values() if not c.state.terminal)

    @property
    def remaining_qty(self) -> float:
        """Return shares not yet executed: ``parent_qty - filled_qty``."""
        return self.parent_qty - self._filled

    @property
    def uncommitted_qty(self) -> float:
        """Return shares neither executed nor working: what a new child may still take."""
        return max(0.0, self.parent_qty - self._filled - self.open_qty)

    @property
    def n_open(self) -> int:
        """Return how many children are not yet terminal."""
        return sum(1 for c in self.children.values() if not c.state.terminal)

    # -- commands ------------------------------------------------------------------------------
    def on_submitted(self, order: ChildOrder, ts_ns: int) -> None:
        """Record a child about to be sent.

        Raises:
            InvariantViolation: duplicate client order id, non-positive quantity, or a child
                that would take filled + open above the parent quantity.
        """
        if order.client_order_id in self.children:
            raise InvariantViolation(f"duplicate client_order_id {order.client_order_id}")
        if not order.qty > 0:
            raise InvariantViolation(f"child qty must be > 0, got {order.qty}")
        if order.qty > self.uncommitted_qty + _EPS:
            raise InvariantViolation(
                f"child {order.client_order_id} qty {order.qty} exceeds uncommitted "
                f"{self.uncommitted_qty} (filled {self._filled}, open {self.open_qty})"
            )
        self.children[order.client_order_id] = ChildState(
            order=order, ts_submitted_ns=ts_ns, ts_last_ns=ts_ns
        )

    def on_event(self, event: OrderEvent) -> Transition:
        """Apply one broker event; idempotent for duplicates.

        Raises:
            InvariantViolation: a fill that would overfill its child or the parent.
        """
        coid = event.client_order_id
        child = self.children.get(coid)
        if child is None:
            if isinstance(event, OrderFilled) and all(
                f.exec_id != event.exec_id for f in self.orphan_fills
            ):
                self.orphan_fills.append(event)
            return Transition(coid, None, None, applied=False, note="unknown_order")
        old = child.state
        if isinstance(event, OrderFilled):
            return self._apply_fill(child, event)
        if isinstance(event, OrderStatus):
            return self._apply_status(child, event)
        child.ts_last_ns = max(child.ts_last_ns, event.ts_event_ns)
        if isinstance(event, OrderAccepted):
            if old is OrderState.NEW:
                child.state = OrderState.ACKNOWLEDGED
                return Transition(coid, old, child.state, applied=True)
            return Transition(coid, old, old, applied=False, note="stale")
        if isinstance(event, OrderCancelled):
            if old.terminal:
                return Transition(coid, old, old, applied=False, note="duplicate")
            child.state = OrderState.CANCELLED
            child.reason = event.reason
            return Transition(coid, old, child.state, applied=True)
        if isinstance(event, OrderRejected):
            if old.terminal:
                return Transition(coid, old, old, applied=False, note="duplicate")
            child.reason = event.reason
            if child.filled_qty > 0:
                child.state = OrderState.CANCELLED
                return Transition(coid, old, child.state, applied=True, note="reject_after_fill")
            child.state = OrderState.REJECTED
            return Transition(coid, old, child.state, applied=True)
        raise InvariantViolation(f"unknown event type {type(event).__name__}")

    def _apply_status(self, child: ChildState, st: OrderStatus) -> Transition:
        """Reconcile with the venue's status: apply unseen execution, then its final state.

        A venue's cumulative quantity above ours means fill reports were lost (the daemon died
        between the wire and the journal); the difference is applied once, as one fill at the
        price that makes our average equal the venue's, with an ExecID derived from the
        cumulative quantity (so the same status applied twice changes nothing).
        """
        coid = child.order.client_order_id
        old = child.state
        applied = False
        fill_qty = 0.0
        missing = st.cum_qty - child.filled_qty
        if missing > _EPS:
            px = (st.cum_qty * st.avg_px - child.notional) / missing if st.avg_px > 0 else 0.0
            tr = self._apply_fill(
                child,
                OrderFilled(coid, f"status:{coid}:{st.cum_qty:g}", missing, px, st.ts_event_ns),
            )
            applied = tr.applied
            fill_qty = tr.fill_qty
        elif missing < -_EPS:
            # The venue knows less than we do: keep ours (fills are never taken back) and say so.
            return Transition(coid, old, child.state, applied=False, note="status_behind")
        if not child.state.terminal:
            if st.status in ("cancelled", "filled"):
                child.state = (
                    OrderState.FILLED
                    if child.filled_qty >= child.order.qty - _EPS
                    else OrderState.CANCELLED
                )
                child.reason = st.reason or child.reason
                applied = True
            elif st.status in ("rejected", "unknown"):
                child.state = OrderState.CANCELLED if child.filled_qty > 0 else OrderState.REJECTED
                child.reason = st.reason or st.status
                applied = True
            elif st.status == "working" and child.state is OrderState.NEW:
                child.state = OrderState.ACKNOWLEDGED
                applied = True
        return Transition(coid, old, child.state, applied=applied, note="status", fill_qty=fill_qty)

    def _apply_fill(self, child: ChildState, fill: OrderFilled) -> Transition:
        coid = fill.client_order_id
        old = child.state
        if fill.exec_id in child.exec_ids:
            return Transition(coid, old, old, applied=False, note="duplicate")
        if not fill.qty > 0:
            raise InvariantViolation(f"fill {fill.exec_id} on {coid} has qty {fill.qty} <= 0")
        if child.filled_qty + fill.qty > child.order.qty + _EPS:
            raise InvariantViolation(
                f"fill {fill.exec_id} overfills {coid}: {child.filled_qty} + {fill.qty} > "
                f"{child.order.qty}"
            )
        if self._filled + fill.qty > self.parent_qty + _EPS:
            raise InvariantViolation(
                f"fill {fill.exec_id} overfills the parent: {self._filled} + {fill.qty} > "
                f"{self.parent_qty}"
            )
        child.exec_ids.add(fill.exec_id)
        child.filled_qty += fill.qty
        child.notional += fill.qty * fill.px
        child.ts_last_ns = max(child.ts_last_ns, fill.ts_event_ns)
        self._filled += fill.qty
        self._notional += fill.qty * fill.px
        full = child.filled_qty >= child.order.qty - _EPS
        note = ""
        if old in (OrderState.CANCELLED, OrderState.REJECTED):
            note = "late_fill"
            child.state = OrderState.FILLED if full else OrderState.CANCELLED
        else:
            child.state = OrderState.FILLED if full else OrderState.PARTIALLY_FILLED
        return Transition(coid, old, child.state, applied=True, note=note, fill_qty=fill.qty)
