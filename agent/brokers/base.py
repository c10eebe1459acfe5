"""Broker protocol: how the daemon talks to a venue.

``submit`` returns once the request is sent; acknowledgements, fills, cancels and rejects arrive
only through ``events()``. A broker that refuses an order before anything leaves (one it cannot
express, see ``check_sendable``) raises ``BrokerRejected``: the daemon frees its quantity at
once. Any other ``BrokerError`` from ``submit`` leaves the child in doubt (it may have reached
the venue), never re-sent as new. The simulated broker's venue is advanced with the books by the
execution core (``agent.core.session.SymbolSession``), not through this protocol.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Collection
from typing import Protocol, runtime_checkable

from agent.errors import BrokerRejected
from agent.model import ChildOrder, OrderEvent, TimeInForce

__all__ = ["IOC_ONLY", "Broker", "check_sendable"]


@runtime_checkable
class Broker(Protocol):
    """Venue session: sends order requests, streams order events back."""

    name: str

    async def submit(self, order: ChildOrder) -> None:
        """Send a new child order.

        Raises:
            BrokerRejected: refused before sending (nothing reached the venue).
            BrokerError: anything else; the order is in doubt.
        """
        ...

    async def cancel(self, client_order_id: str) -> None:
        """Ask the venue to cancel what is left of a child."""
        ...

    def events(self) -> AsyncIterator[OrderEvent]:
        """Stream order events in the order the venue sent them."""
        ...

    async def aclose(self) -> None:
        """Close the session; ``events()`` ends after the last event."""
        ...


IOC_ONLY: frozenset[TimeInForce] = frozenset({"ioc"})


def check_sendable(order: ChildOrder, tifs: Collection[TimeInForce] = IOC_ONLY) -> None:
    """Raise ``BrokerRejected`` unless the broker can send ``order`` exactly as it stands.

    A broker calls it first in ``submit``, so an order it would have to alter (a resting
    time in force it cannot send, a fractional share count its wire format rounds, a price that
    is no price) is refused before anything leaves, instead of reaching the venue changed.

    Args:
        order: The child about to be sent.
        tifs: The times in force this broker can send.

    Raises:
        BrokerRejected: ``reason`` is ``unsupported_tif``, ``invalid_qty`` or ``invalid_price``.
    """
    coid = order.client_order_id
    if order.tif not in tifs:
        raise BrokerRejected(
            f"{coid}: time in force {order.tif!r} is not one this broker sends "
            f"({', '.join(sorted(tifs))})",
            reason="unsupported_tif",
        )
    if not (math.isfinite(order.qty) and order.qty > 0 and order.qty == math.floor(order.qty)):
        raise BrokerRejected(
            f"{coid}: qty must be a whole number of shares > 0, got {order.qty!r}",
            reason="invalid_qty",
        )
    if not (math.isfinite(order.limit_px) and order.limit_px > 0):
        raise BrokerRejected(
            f"{coid}: limit_px must be a finite price > 0, got {order.limit_px!r}",
            reason="invalid_price",
        )
