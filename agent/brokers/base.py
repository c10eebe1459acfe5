"""Broker protocol: how the daemon talks to a venue.

``submit`` returns once the request is sent; acknowledgements, fills, cancels and rejects arrive
only through ``events()``. Brokers that need market data (the simulated one) also expose
``on_book``; the daemon feeds it every validated batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agent.model import ChildOrder, OrderEvent
from feeds.model import BookBatch

__all__ = ["BookDrivenBroker", "Broker"]


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


@runtime_checkable
class BookDrivenBroker(Broker, Protocol):
    """A broker that matches against the replayed book and must see it."""

    def on_book(self, batch: BookBatch) -> None:
        """Advance the venue to the end of ``batch``, executing orders that became due."""
        ...

    def on_end(self, symbol: str) -> None:
        """The feed of ``symbol`` ended: execute what is due against the last book."""
        ...

    def pending_events(self) -> int:
        """Return how many events wait to be read from ``events()``."""
        ...
