"""Order value types shared by the tracker, the brokers and the daemon.

Quantities are shares (``qty``, float64 holding integral values), prices are currency (``px``),
times are integer nanoseconds since the Unix epoch (``ts_*_ns``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, get_args

from agent.errors import InternalViolation

__all__ = [
    "CancelRequested",
    "ChildOrder",
    "OrdType",
    "OrderAccepted",
    "OrderCancelRejected",
    "OrderCancelled",
    "OrderEvent",
    "OrderFilled",
    "OrderPendingCancel",
    "OrderPendingReplace",
    "OrderRejected",
    "OrderReplaceRejected",
    "OrderReplaced",
    "OrderRequest",
    "OrderStatus",
    "ReplaceRequested",
    "Side",
    "TimeInForce",
    "TrackerEvent",
]

TimeInForce = Literal["ioc", "day", "gtc"]
"""How long a child works: immediate-or-cancel, until the session ends, or until cancelled."""

OrdType = Literal["limit"]
"""Order type. Every child is a limit order (a market order is a limit at the collar)."""

_TIFS = frozenset(get_args(TimeInForce))
_ORD_TYPES = frozenset(get_args(OrdType))


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
    """A child order request: a limit order, immediate-or-cancel unless ``tif`` says it rests.

    Attributes:
        client_order_id: Our id, unique and deterministic (parent id + sequence).
        parent_id: Id of the parent order it works.
        symbol: Instrument.
        side: Buy or sell.
        qty: Shares requested, > 0.
        limit_px: Worst acceptable price (the collar), currency.
        ts_created_ns: When the decision was taken (event time in replay).
        tif: ``"ioc"`` (default: what is not filled at once is cancelled), ``"day"`` or
            ``"gtc"`` (the order rests on the book until filled or cancelled).
        ord_type: ``"limit"``.

    Raises:
        InternalViolation: an unknown ``tif`` or ``ord_type`` (names the field and the choices).
    """

    client_order_id: str
    parent_id: str
    symbol: str
    side: Side
    qty: float
    limit_px: float
    ts_created_ns: int
    tif: TimeInForce = "ioc"
    ord_type: OrdType = "limit"

    def __post_init__(self) -> None:
        if self.tif not in _TIFS:
            raise InternalViolation(
                f"ChildOrder.tif must be one of {sorted(_TIFS)}, got {self.tif!r}"
            )
        if self.ord_type not in _ORD_TYPES:
            raise InternalViolation(
                f"ChildOrder.ord_type must be one of {sorted(_ORD_TYPES)}, got {self.ord_type!r}"
            )

    @property
    def rests(self) -> bool:
        """Return True when the order may rest on the book (``day`` or ``gtc``)."""
        return self.tif != "ioc"


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
    """The venue cancelled what was left of the order (IOC remainder, or on request).

    ``cum_qty`` and ``avg_px`` are the venue's totals for the order when its report carries them
    (FIX CumQty, AvgPx; None: not reported): fills the daemon missed (it died between the wire
    and the journal) are applied from them once, as a status answer's are.
    """

    client_order_id: str
    ts_event_ns: int
    reason: str = ""
    cum_qty: float | None = None
    avg_px: float = 0.0


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


# -- cancel and cancel/replace -------------------------------------------------------------------
# Convention: ``client_order_id`` names the order acted on, by the id the tracker knows it by
# (FIX's OrigClOrdID on 35=F/G, 35=9 and on pending/replaced reports). A replace that gives the
# order a new id (FIX ClOrdID on 35=G) carries it in ``new_client_order_id``; from the replaced
# report on, the venue's reports name the order by its new id (the tracker maps the old one too).


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """We asked the venue to cancel what is left of the order (recorded before sending)."""

    client_order_id: str
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class ReplaceRequested:
    """We asked the venue to amend the order (recorded before sending).

    ``qty`` is the new *total* quantity of the order, fills included, as FIX 4.4 defines OrderQty
    on 35=G ("Total Intended Order Quantity, including the amount already executed for this
    chain of orders"), so it must stay above what is already filled; an adapter for a venue that
    takes the new leaves instead translates. ``new_client_order_id`` is the order's id after
    the replace (FIX ClOrdID; ``""`` keeps the current one, as venues without id chains do).
    """

    client_order_id: str
    new_client_order_id: str
    qty: float
    limit_px: float
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class OrderPendingCancel:
    """The venue received our cancel and is working on it (FIX ExecType 6)."""

    client_order_id: str
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class OrderPendingReplace:
    """The venue received our replace and is working on it (FIX ExecType E)."""

    client_order_id: str
    ts_event_ns: int


@dataclass(frozen=True, slots=True)
class OrderReplaced:
    """The venue amended the order (FIX ExecType 5): its new total quantity and limit price.

    ``new_client_order_id`` is the id the order goes by from now on (``""``: unchanged).
    """

    client_order_id: str
    ts_event_ns: int
    qty: float
    limit_px: float
    new_client_order_id: str = ""


@dataclass(frozen=True, slots=True)
class OrderCancelRejected:
    """The venue refused our cancel (FIX 35=9, CxlRejResponseTo 1), e.g. "too late to cancel"."""

    client_order_id: str
    ts_event_ns: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderReplaceRejected:
    """The venue refused our replace (FIX 35=9, CxlRejResponseTo 2); the order stands as it was."""

    client_order_id: str
    ts_event_ns: int
    reason: str = ""


OrderEvent = (
    OrderAccepted
    | OrderFilled
    | OrderCancelled
    | OrderRejected
    | OrderStatus
    | OrderPendingCancel
    | OrderPendingReplace
    | OrderReplaced
    | OrderCancelRejected
    | OrderReplaceRejected
)
"""What a venue reports about an order (a broker's ``events()``)."""

OrderRequest = CancelRequested | ReplaceRequested
"""What we ask of a working order, recorded in the tracker (and the journal) before it is sent."""

TrackerEvent = OrderEvent | OrderRequest
"""Everything ``OrderTracker.on_event`` applies."""
