"""Value types for order-book data.

A feed hands the agent *batches* of MBP-10 snapshots in columnar form rather than one Python
object per snapshot: the replay of a million-row file then costs a few numpy operations per
chunk, and a live feed simply yields batches of one row.

Conventions (every producer must honour them, ``validate_batch`` checks them):
- ``L`` levels a side (10 for MBP-10), level 0 is the best price.
- An empty level has price ``NaN`` and size ``0``.
- Prices are float currency units (dollars), sizes are shares (float64, integral in practice).
- Timestamps are integer nanoseconds since the Unix epoch, UTC: ``ts_event_ns`` from the venue,
  ``ts_recv_ns`` from the receiver (equal to ``ts_event_ns`` when the source has only one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["N_LEVELS", "BookBatch"]

N_LEVELS = 10


@dataclass(frozen=True, slots=True)
class BookBatch:
    """A run of consecutive book snapshots of one symbol, one row per snapshot.

    Attributes:
        symbol: Instrument symbol.
        ts_event_ns: Venue event time, int64 ns, shape (n,), non-decreasing.
        ts_recv_ns: Receive time, int64 ns, shape (n,).
        bid_px: Bid prices, shape (n, L), level 0 best (highest); NaN where empty.
        bid_sz: Bid sizes in shares, shape (n, L); 0 where empty.
        ask_px: Ask prices, shape (n, L), level 0 best (lowest); NaN where empty.
        ask_sz: Ask sizes in shares, shape (n, L); 0 where empty.
    """

    symbol: str
    ts_event_ns: NDArray[np.int64]
    ts_recv_ns: NDArray[np.int64]
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.ts_event_ns.shape[0])

    @property
    def mid(self) -> NDArray[np.float64]:
        """Mid price per row, shape (n,)."""
        return 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0])

    def slice(self, start: int, stop: int) -> BookBatch:
        """Return rows ``start:stop`` as a new batch (views, no copy)."""
        return BookBatch(
            self.symbol,
            self.ts_event_ns[start:stop],
            self.ts_recv_ns[start:stop],
            self.bid_px[start:stop],
            self.bid_sz[start:stop],
            self.ask_px[start:stop],
            self.ask_sz[start:stop],
        )

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> BookBatch:
        """Return the rows selected by an integer or boolean index."""
        return BookBatch(
            self.symbol,
            self.ts_event_ns[index],
            self.ts_recv_ns[index],
            self.bid_px[index],
            self.bid_sz[index],
            self.ask_px[index],
            self.ask_sz[index],
        )

    @staticmethod
    def concat(batches: list[BookBatch]) -> BookBatch:
        """Concatenate batches of the same symbol in order."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        if len(batches) == 1:
            return batches[0]
        return BookBatch(
            batches[0].symbol,
            np.concatenate([b.ts_event_ns for b in batches]),
            np.concatenate([b.ts_recv_ns for b in batches]),
            np.concatenate([b.bid_px for b in batches]),
            np.concatenate([b.bid_sz for b in batches]),
            np.concatenate([b.ask_px for b in batches]),
            np.concatenate([b.ask_sz for b in batches]),
        )

    @staticmethod
    def empty(symbol: str, levels: int = N_LEVELS) -> BookBatch:
        """Return a batch with no rows."""
        z = np.empty((0, levels), dtype=np.float64)
        t = np.empty(0, dtype=np.int64)
        return BookBatch(symbol, t, t.copy(), z, z.copy(), z.copy(), z.copy())
