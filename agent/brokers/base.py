"""Broker protocol: how the daemon talks to a venue.

``submit`` returns once the request is sent; acknowledgements, fills, cancels and rejects arrive
only through ``events()``. The simulated broker's venue is advanced with the books by the
execution core (``agent.core.session.SymbolSession``), not through this protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agent.model import ChildOrder, OrderEvent

__all__ = ["Broker"]


@runtime_checkable
class Broker(Protocol):
    """Venue session: sends order requests, streams order events back."""

    name: str

    async def submit(self, order: ChildOrder) -> None:
        """Send a new child order."""
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
