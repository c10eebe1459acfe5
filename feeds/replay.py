"""Replay of recorded MBP-10 files as a ``BookFeed``: the async shell around the pure readers.

Data path: ``read_books`` (in a worker thread, one chunk per ``asyncio.to_thread`` call, so the
event loop stays responsive while pandas parses) -> ``validate_batch`` (bad snapshots counted,
logged with a per-reason rate limit and skipped) -> optional pacing against a ``Clock`` -> the
consumer.

Pacing with ``speed=K``: the first valid row is released at ``t0_wall = clock.now_ns()`` and a
row with event time ``ts`` is released once ``clock.now_ns() >= t0_wall + (ts - t0_event) / K``.
Each wake-up releases the rows already due whose release times lie within ``batch_window_ns``
(10 ms of wall time by default) of the first one, and at most ``max_batch_rows`` of them: a
slow consumer gets the backlog in time-coherent slices, and a test driving a ``ManualClock``
sees exactly the rows due at each ``advance``, sliced by the window.

The feed never raises on bad data: a malformed snapshot is a counted skip. A missing or
unreadable file raises ``FeedDataError`` naming the path, from the first ``updates()`` step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from feeds.clock import Clock, WallClock
from feeds.model import BookBatch
from feeds.readers import read_books
from feeds.validate import ValidationResult, validate_batch

__all__ = ["ReplayFeed", "ReplayStats"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ReplayStats:
    """Counters of a replay, updated as chunks are read.

    Attributes:
        rows_read: Snapshots of this symbol read from the file.
        rows_valid: Snapshots that passed validation (handed on, or still queued for pacing).
        invalid: Rejected snapshots per reason name (e.g. ``"crossed"``).
        batches_out: Batches yielded by ``updates()``.
    """

    rows_read: int = 0
    rows_valid: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    batches_out: int = 0

    @property
    def rows_invalid(self) -> int:
        """Total rejected snapshots."""
        return sum(self.invalid.values())

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain JSON-able values (for a log line)."""
        return {
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "rows_invalid": self.rows_invalid,
            "invalid": dict(self.invalid),
            "batches_out": self.batches_out,
        }


class ReplayFeed:
    """Replay one symbol of an MBP-10 file, as fast as possible or paced by event time.

    Args:
        path: Book file (any format ``feeds.readers.read_books`` reads: MBP-10, LOBSTER).
        symbol: Symbol to replay; rows of other symbols are ignored.
        speed: ``None`` for as fast as possible; ``K > 0`` to pace at K times event time.
        clock: Clock used for pacing; defaults to ``WallClock()`` when ``speed`` is set.
        chunk_rows: File rows parsed per worker-thread step.
        max_batch_rows: Upper bound on rows per yielded batch; ``None``: whole valid chunks
            (fast mode) or every row due within the window (paced mode).
        batch_window_ns: Paced mode: a batch holds rows whose release times span at most this
            much wall time, ns.
        log_first: Rejected snapshots logged individually per reason before only counting.

    Attributes:
        symbol: The replayed symbol.
        stats: ``ReplayStats`` counters, live while replaying.
    """

    def __init__(
        self,
        path: str | Path,
        symbol: str,
        *,
        speed: float | None = None,
        clock: Clock | None = None,
        chunk_rows: int = 250_000,
        max_batch_rows: int | None = None,
        batch_window_ns: int = 10_000_000,
        log_first: int = 5,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0 or None, got {speed}")
        if max_batch_rows is not None and max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1 or None, got {max_batch_rows}")
        self.path = Path(path)
        self.symbol = symbol
        self.speed = speed
        self.clock: Clock = clock if clock is not None else WallClock()
        self.chunk_rows = chunk_rows
        self.max_batch_rows = max_batch_rows
        if batch_window_ns < 0:
            raise ValueError(f"batch_window_ns must be >= 0, got {batch_window_ns}")
        self.batch_window_ns = batch_window_ns
        self.log_first = log_first
        self.stats = ReplayStats()
        self._closed = False
        self._reader: Iterator[BookBatch] | None = None
        self._running = False
        self._prev_ts: int | None = None
        self._t0: tuple[int, int] | None = None  # (wall ns, event ns) of the first valid row
        self._log: Any = log

    async def aclose(self) -> None:
        """Stop the replay; ``updates()`` ends at its next step. Idempotent."""
        # The reader may be mid-``next`` in the worker thread; ``updates()`` closes it once that
        # step returns (closing a running generator from here would raise).
        self._closed = True
        if self._reader is not None and not self._running:
            self._close_reader()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        close = getattr(reader, "close", None)
        if close is not None:
            close()

    async def updates(self) -> AsyncIterator[BookBatch]:
        """Yield validated batches of ``symbol`` in file order.

        Raises:
            FeedDataError: The file is missing, unreadable or of an unknown format.
        """
        if self._running:
            raise RuntimeError("ReplayFeed.updates() is already being iterated")
        if self._closed:
            return
        self._running = True
        pending: asyncio.Future[tuple[BookBatch, ValidationResult] | None] | None = None
        # Bind here, not in __init__, so the logger follows the logging config at replay time.
        self._log = structlog.get_logger(__name__).bind(symbol=self.symbol, path=str(self.path))
        try:
            if self._reader is None:
                self._reader = await asyncio.to_thread(
                    read_books, self.path, self.symbol, self.chunk_rows
                )
            self._log.info("feed.replay_started", speed=self.speed)
            # Keep one chunk in flight: the worker parses (pandas tokenises without the GIL) and
            # validates chunk k+1 while the consumer works on chunk k.
            pending = asyncio.ensure_future(asyncio.to_thread(self._next_validated))
            while not self._closed:
                step = await pending
                pending = None
                if step is None or self._closed:
                    break
                pending = asyncio.ensure_future(asyncio.to_thread(self._next_validated))
                valid = self._account(*step)
                if len(valid) == 0:
                    await asyncio.sleep(0)
                    continue
                if self.speed is None:
                    for out in self._split(valid):
                        self.stats.batches_out += 1
                        yield out
                        await asyncio.sleep(0)
                        if self._closed:
                            break
                else:
                    async for out in self._paced(valid):
                        self.stats.batches_out += 1
                        yield out
        finally:
            if pending is not None:
                # The worker cannot be interrupted: let it finish before closing the reader.
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            self._running = False
            self._close_reader()
            self._log.info("feed.replay_finished", **self.stats.as_dict())

    def _next_validated(self) -> tuple[BookBatch, ValidationResult] | None:
        """Read and validate the next chunk (worker thread); ``None`` at the end of the file."""
        reader = self._reader
        chunk = next(reader, None) if reader is not None else None
        if chunk is None:
            return None
        res = validate_batch(chunk, self._prev_ts)
        self._prev_ts = res.last_ts_ns
        return chunk, res

    def _split(self, batch: BookBatch) -> Iterator[BookBatch]:
        step = self.max_batch_rows
        if step is None or len(batch) <= step:
            yield batch
            return
        for start in range(0, len(batch), step):
            yield batch.slice(start, start + step)

    async def _paced(self, batch: BookBatch) -> AsyncIterator[BookBatch]:
        speed = self.speed or 1.0  # only called when speed is set
        if self._t0 is None:
            self._t0 = (self.clock.now_ns(), int(batch.ts_event_ns[0]))
        t0_wall, t0_event = self._t0
        # Release time of each row, wall ns, shape (n,); ceil so no row is released early.
        due = t0_wall + np.ceil((batch.ts_event_ns - t0_event) / speed).astype(np.int64)
        start, n = 0, len(batch)
        while start < n and not self._closed:
            await self.clock.sleep_until(int(due[start]))
            if self._closed:
                return
            horizon = min(self.clock.now_ns(), int(due[start]) + self.batch_window_ns)
            stop = int(np.searchsorted(due, horizon, side="right"))
            stop = max(stop, start + 1)
            if self.max_batch_rows is not None:
                stop = min(stop, start + self.max_batch_rows)
            yield batch.slice(start, stop)
            start = stop

    def _account(self, chunk: BookBatch, res: ValidationResult) -> BookBatch:
        """Update the counters and log rejected rows of one validated chunk."""
        row0 = self.stats.rows_read
        self.stats.rows_read += len(chunk)
        self.stats.rows_valid += len(res.valid)
        if res.counts:
            self._report(res, chunk, row0)
        return res.valid

    def _report(self, res: ValidationResult, chunk: BookBatch, row0: int) -> None:
        """Log the first ``log_first`` rejected rows per reason, then only count them."""
        inv = self.stats.invalid
        for reason, count in res.counts.items():
            name = reason.name.lower()
            seen = inv.get(name, 0)
            inv[name] = seen + count
            room = self.log_first - seen
            if room > 0:
                rows = np.flatnonzero(res.reason == reason)[:room]
                for r in rows.tolist():  # at most log_first rows per reason per replay
                    self._log.warning(
                        "feed.invalid_snapshot",
                        reason=name,
                        ts=int(chunk.ts_event_ns[r]),
                        row=row0 + r,
                    )
            if seen < self.log_first <= seen + count:
                self._log.warning(
                    "feed.invalid_snapshot_suppressed",
                    reason=name,
                    after=self.log_first,
                    note="further rows with this reason are counted in stats only",
                )
