"""The rows a live reader has decoded and its consumer has not taken yet (pure).

The reader appends one ``BookRow`` per valid message (O(1), no numpy); the consumer takes every
row accumulated since its last take as one columnar ``BookBatch`` (``take``), which the core
then processes in one vectorised call. Nothing is conflated while the consumer keeps up: only
when more than ``max_books`` book rows wait is the oldest waiting book dropped (counted in
``conflated``), so memory and the backlog stay bounded when the consumer stalls. Trade rows are
never conflated, as the volume they carry feeds participation caps; more than ``max_trades``
waiting trades drop the oldest trade (counted in ``trades_dropped``). A consumer that is
behind in time may also ask ``take`` to conflate the books that waited longer than it can use
(``max_age_ns``): the rows taken are then fresh, so its decisions stay on time. The rows taken
are in arrival order, trades and books interleaved as they came.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from operator import itemgetter

from feeds.model import BookBatch, BookRow

__all__ = ["RowBuffer"]

_SEQ = itemgetter(0)


class RowBuffer:
    """Rows of one symbol waiting for the consumer, bounded by row counts.

    Args:
        symbol: The rows' symbol (the batches taken carry it).
        max_books: Book (non-trade) rows held before the oldest is conflated away, >= 1.
        max_trades: Trade rows held before the oldest is dropped, >= 1.
    """

    def __init__(self, symbol: str, max_books: int = 100_000, max_trades: int = 10_000) -> None:
        if max_books < 1 or max_trades < 1:
            raise ValueError(f"max_books and max_trades must be >= 1: {max_books}, {max_trades}")
        self.symbol = symbol
        self.max_books = max_books
        self.max_trades = max_trades
        self.conflated = 0
        self.trades_dropped = 0
        self._books: deque[tuple[int, BookRow]] = deque()
        self._trades: deque[tuple[int, BookRow]] = deque()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._books) + len(self._trades)

    def append(self, row: BookRow, trade: bool = False) -> bool:
        """Add a row (``trade``: a trade row); return True when a row had to be dropped."""
        self._seq += 1
        if trade:
            self._trades.append((self._seq, row))
            if len(self._trades) > self.max_trades:
                self._trades.popleft()
                self.trades_dropped += 1
                return True
            return False
        self._books.append((self._seq, row))
        if len(self._books) > self.max_books:
            self._books.popleft()
            self.conflated += 1
            return True
        return False

    def take(self, now_ns: int | None = None, max_age_ns: int | None = None) -> BookBatch | None:
        """Return every waiting row as one batch in arrival order (None when there is none).

        With ``now_ns`` and ``max_age_ns``: the books received (``BookRow[1]``, the reader's
        clock) more than ``max_age_ns`` before ``now_ns`` are conflated (counted), but for the
        newest of them, the book in force when the fresh rows begin. Trades always stay.
        """
        books, trades = self._books, self._trades
        if not books and not trades:
            return None
        if max_age_ns is not None and now_ns is not None and len(books) > 1:
            cutoff = now_ns - max_age_ns
            n_old = 0
            for _, r in books:
                if r[1] >= cutoff:
                    break
                n_old += 1
            for _ in range(n_old - 1):  # every old book but the newest one
                books.popleft()
            self.conflated += max(n_old - 1, 0)
        if not trades:
            rows = [r for _, r in books]
        elif not books:
            rows = [r for _, r in trades]
        else:
            rows = [r for _, r in sorted(chain(books, trades), key=_SEQ)]
        books.clear()
        trades.clear()
        return BookBatch.from_rows(self.symbol, rows)
