"""Order value types shared by the tracker, the brokers and the daemon.

Quantities are shares (``qty``, float64 holding integral values), prices are currency (``px``),
times are integer nanoseconds since the Unix epoch (``ts_*_ns``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ChildOrder",
    "OrderAccepted",
    "OrderCancelled",
    "OrderEvent",
    "OrderFilled",
    "OrderRejected",
    "OrderStatus",
    "Side",
]


class Side(enum.StrEnum):
    """Side of a parent or child order."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """Return +1 for buys and -1 for sells."""
        return 1 if self is Side.BUY else -1


@dataclass(frozen=True, slots=True)
class ChildOrder:
    """A child order request: an immediate-or-cancel limit order.

    Attributes:
        client_order_id: Our id, unique and deterministic (parent id + sequence).
        parent_id: Id of the parent order it works.
        symbol: Instrument.
        side: Buy or sell.
        qty: Shares requested, > 0.
        limit_px: Worst acceptable price (the collar), currency.
        ts_created_ns: When the decision was taken (event time in replay).
    """

    client_order_id: str
    parent_id: str
    symbol: str
    side: Side
    qty: float
    limit_px: float
    ts_created_ns: int


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    """The venue acknowledged the order."""

    client_order_id: str
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """A (partial) execution. ``exec_id`` is unique per execution and makes fills idempotent."""

    client_order_id: str
    exec_id: str
    qty: float
    px: float
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """The venue cancelled what was left of the order (IOC remainder, or on request)."""

    client_order_id: str
    ts_event_ns: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """The venue refused the order; nothing of it was executed."""

    client_order_id: str
    ts_event_ns: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """The venue's answer to a status query: the order's state and cumulative execution.

    ``status`` is ``working``, ``filled``, ``cancelled``, ``rejected`` or ``unknown`` (the venue
    never saw the order). ``cum_qty`` and ``avg_px`` are the venue's totals for the order; the
    tracker applies whatever part of them it had not seen (fills lost while the daemon was down).
    """

    client_order_id: str
    ts_event_ns: int
    status: str
    cum_qty: float
    avg_px: float = 0.0
    reason: str = ""


OrderEvent = OrderAccepted | OrderFilled | OrderCancelled | OrderRejected | OrderStatus
