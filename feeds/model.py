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
- Event columns (optional, all four or none): each row is the book *after* one event; ``action``
  is the ASCII code of that event (``EV_ADD`` ... ``EV_CLEAR``, 0 unknown), ``ev_side`` the
  ASCII code of its raw side (``A`` ask, ``B`` bid, ``N`` none; on a trade, the aggressor side
  as the venue gives it), ``ev_px`` its price (NaN if none), ``ev_sz`` its size (0 if none).
  A trade row (``action == EV_TRADE``) carries the traded volume that participation caps use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EV_ADD",
    "EV_CANCEL",
    "EV_CLEAR",
    "EV_FILL",
    "EV_MODIFY",
    "EV_NONE",
    "EV_TRADE",
    "N_LEVELS",
    "SIDE_ASK",
    "SIDE_BID",
    "SIDE_NONE",
    "BookBatch",
    "BookRow",
]

N_LEVELS = 10

# ASCII codes of the event actions and sides in ``BookBatch.action`` / ``BookBatch.ev_side``.
EV_NONE = 0
EV_ADD = ord("A")
EV_CANCEL = ord("C")
EV_MODIFY = ord("M")
EV_TRADE = ord("T")
EV_FILL = ord("F")
EV_CLEAR = ord("R")
SIDE_ASK = ord("A")
SIDE_BID = ord("B")
SIDE_NONE = ord("N")


# The four optional event columns (action, ev_side, ev_px, ev_sz), and a row selector.
_Events = tuple[
    NDArray[np.uint8] | None,
    NDArray[np.uint8] | None,
    NDArray[np.float64] | None,
    NDArray[np.float64] | None,
]
_Rows = slice | NDArray[np.intp] | NDArray[np.bool_]

# One decoded, validated book as plain Python values, what a live reader buffers per message
# (no numpy per message): ``(ts_event_ns, ts_recv_ns, bid_px, bid_sz, ask_px, ask_sz, event)``,
# each side ``N_LEVELS`` long (NaN / 0 padded), ``event`` ``(action, ev_side, ev_px, ev_sz)`` or
# None. ``BookBatch.from_rows`` turns a run of them into one columnar batch.
BookRow = tuple[
    int,
    int,
    Sequence[float],
    Sequence[float],
    Sequence[float],
    Sequence[float],
    tuple[int, int, float, float] | None,
]
_NO_EVENT = (EV_NONE, SIDE_NONE, float("nan"), 0.0)


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
        action: Event action per row, ASCII code (``EV_*``), uint8, shape (n,); or ``None``.
        ev_side: Event side per row, ASCII code (``SIDE_*``), uint8, shape (n,); or ``None``.
        ev_px: Event price per row, dollars, shape (n,); NaN if none; or ``None``.
        ev_sz: Event size per row, shares, shape (n,); 0 if none; or ``None``.
    """

    symbol: str
    ts_event_ns: NDArray[np.int64]
    ts_recv_ns: NDArray[np.int64]
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]
    action: NDArray[np.uint8] | None = None
    ev_side: NDArray[np.uint8] | None = None
    ev_px: NDArray[np.float64] | None = None
    ev_sz: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        # A partial set of event columns is a producer's bug: slices and concats would drop it.
        n_none = (
            (self.action is None)
            + (self.ev_side is None)
            + (self.ev_px is None)
            + (self.ev_sz is None)
        )
        if 0 < n_none < 4:
            names = ("action", "ev_side", "ev_px", "ev_sz")
            missing = [n for n in names if getattr(self, n) is None]
            raise ValueError(
                f"BookBatch({self.symbol}): the event columns come all four or none; "
                f"missing {', '.join(missing)}"
            )

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
            *self._event_rows(slice(start, stop)),
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
            *self._event_rows(index),
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
            *_concat_events(batches),
        )

    @staticmethod
    def from_rows(symbol: str, rows: Sequence[BookRow]) -> BookBatch:
        """Return rows decoded one by one as one batch (a few numpy calls, not one per row).

        The batch has event columns when any row has an event; a row without one then gets
        the unknown event (``concat``'s rule).
        """
        if not rows:
            raise ValueError("from_rows needs at least one row")
        f64 = np.float64
        evs = [r[6] for r in rows]
        cols: _Events = (None, None, None, None)
        if any(e is not None for e in evs):
            ev = [_NO_EVENT if e is None else e for e in evs]
            cols = (
                np.array([e[0] for e in ev], np.uint8),
                np.array([e[1] for e in ev], np.uint8),
                np.array([e[2] for e in ev], f64),
                np.array([e[3] for e in ev], f64),
            )
        return BookBatch(
            symbol,
            np.array([r[0] for r in rows], np.int64),
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], f64).reshape(len(rows), -1),
            np.array([r[3] for r in rows], f64).reshape(len(rows), -1),
            np.array([r[4] for r in rows], f64).reshape(len(rows), -1),
            np.array([r[5] for r in rows], f64).reshape(len(rows), -1),
            *cols,
        )

    @staticmethod
    def empty(symbol: str, levels: int = N_LEVELS, *, events: bool = False) -> BookBatch:
        """Return a batch with no rows (with empty event columns when ``events``)."""
        z = np.empty((0, levels), dtype=np.float64)
        t = np.empty(0, dtype=np.int64)
        if not events:
            return BookBatch(symbol, t, t.copy(), z, z.copy(), z.copy(), z.copy())
        u, f = np.empty(0, np.uint8), np.empty(0, np.float64)
        return BookBatch(
            symbol, t, t.copy(), z, z.copy(), z.copy(), z.copy(), u, u.copy(), f, f.copy()
        )

    @property
    def has_events(self) -> bool:
        """Return True when the batch carries the four event columns."""
        return self.action is not None

    @property
    def is_trade(self) -> NDArray[np.bool_]:
        """Return the rows whose event is a trade, shape (n,) (all False without events)."""
        if self.action is None:
            return np.zeros(len(self), dtype=np.bool_)
        return np.asarray(self.action == EV_TRADE, dtype=np.bool_)

    def _event_rows(self, index: _Rows) -> _Events:
        """Return the four event columns at ``index`` (all ``None`` without events)."""
        if self.action is None or self.ev_side is None or self.ev_px is None or self.ev_sz is None:
            return None, None, None, None
        return self.action[index], self.ev_side[index], self.ev_px[index], self.ev_sz[index]


def _concat_events(batches: list[BookBatch]) -> _Events:
    """Concatenate the event columns; a batch without them contributes unknown events."""
    if all(b.action is None for b in batches):
        return None, None, None, None
    parts: list[
        tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.float64], NDArray[np.float64]]
    ] = []
    for b in batches:
        if b.action is None or b.ev_side is None or b.ev_px is None or b.ev_sz is None:
            n = len(b)
            parts.append(
                (np.zeros(n, np.uint8), np.full(n, SIDE_NONE, np.uint8), np.full(n, np.nan),
                 np.zeros(n))
            )  # fmt: skip
        else:
            parts.append((b.action, b.ev_side, b.ev_px, b.ev_sz))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[3] for p in parts]),
    )
