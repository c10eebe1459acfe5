"""The feed protocol shared by replayed and live order-book sources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from feeds.model import BookBatch

__all__ = ["BookFeed"]


@runtime_checkable
class BookFeed(Protocol):
    """Source of MBP-10 snapshots for one symbol, live or replayed.

    ``updates()`` yields validated batches in event-time order (a live feed yields every row
    received since the consumer's last batch, and empty heartbeat batches). Batches may carry
    the event columns (``BookBatch.action`` ...): trade rows hold the traded volume.
    ``aclose()`` stops the stream and releases resources; it is idempotent.
    """

    symbol: str

    def updates(self) -> AsyncIterator[BookBatch]:
        """Return the stream of validated snapshot batches."""
        ...

    async def aclose(self) -> None:
        """Stop the stream and release files or connections."""
        ...
