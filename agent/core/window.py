"""Rolling time window of book snapshots (pure).

Batches are kept as they arrive (no per-row copies); ``view(t)`` concatenates the rows with
``t - window_ns < ts_event_ns <= t`` once per period. A window holding more than ``max_rows``
rows is thinned by an even stride, so the once-per-period estimation stays bounded however busy
the book is.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from feeds.model import BookBatch

__all__ = ["RollingWindow"]


class RollingWindow:
    """Keep the last ``window_ns`` of snapshots of one symbol.

    Args:
        symbol: Instrument.
        window_ns: Window length in ns of event time, > 0.
        max_rows: Upper bound on the rows ``view`` returns (thinned evenly above it).
    """

    def __init__(self, symbol: str, window_ns: int, max_rows: int = 20_000) -> None:
        self.symbol = symbol
        self.window_ns = int(window_ns)
        self.max_rows = int(max_rows)
        self._batches: deque[BookBatch] = deque()

    def append(self, batch: BookBatch) -> None:
        """Add a batch of newer rows (empty batches are ignored), and drop the batches that
        have left the window behind its newest row: memory stays bounded by the window even
        when nothing reads it (the incremental estimator needs no ``view``). A window's length
        of slack is kept, so a view up to one window before the newest row stays whole."""
        if len(batch):
            self._batches.append(batch)
            self._trim(int(batch.ts_event_ns[-1]) - self.window_ns)

    def _trim(self, t_ns: int) -> None:
        lo = t_ns - self.window_ns
        while self._batches and int(self._batches[0].ts_event_ns[-1]) <= lo:
            self._batches.popleft()

    def tail(self, t_ns: int, span_ns: int) -> BookBatch:
        """Return the rows with ``t_ns - span_ns < ts_event_ns <= t_ns``, and at least the book
        in force at ``t_ns`` (the last row at or before it): the current period's estimate.

        Walks back from the newest batch, so its cost is the span's, not the window's.
        """
        self._trim(t_ns)
        lo = t_ns - int(span_ns)
        parts: list[BookBatch] = []
        for b in reversed(self._batches):
            ts = b.ts_event_ns
            j = int(np.searchsorted(ts, t_ns, side="right"))
            if j == 0:
                continue
            i = int(np.searchsorted(ts[:j], lo, side="right"))
            if not parts and i == j:  # nothing inside the span: the book in force alone
                i = j - 1
            if i < j:
                parts.append(b.slice(i, j))
            if i > 0:
                break
        if not parts:
            return BookBatch.empty(self.symbol)
        return parts[0] if len(parts) == 1 else BookBatch.concat(parts[::-1])

    def view(self, t_ns: int) -> BookBatch:
        """Return the window's rows at time ``t_ns`` (at most ``max_rows``, evenly thinned)."""
        self._trim(t_ns)
        if not self._batches:
            return BookBatch.empty(self.symbol)
        whole = BookBatch.concat(list(self._batches))
        ts = whole.ts_event_ns
        a = int(np.searchsorted(ts, t_ns - self.window_ns, side="right"))
        b = int(np.searchsorted(ts, t_ns, side="right"))
        n = b - a
        if n <= self.max_rows:
            return whole.slice(a, b)
        idx = a + (np.arange(self.max_rows, dtype=np.int64) * n) // self.max_rows
        return whole.take(idx)
