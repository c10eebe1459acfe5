"""Live book feed over a websocket (the async shell; parsing is in ``feeds.jsonmsg``).

``WebSocketFeed`` implements ``BookFeed``:

- connects with the ``websockets`` asyncio API (no proxy, no compression, ``max_size`` bound);
- reconnects after any drop with exponential backoff and full jitter (``reconnect_base_s``
  doubling up to ``reconnect_max_s``; reset once a book arrives);
- decodes each frame with a typed msgspec decoder and validates it with ``feeds.validate``;
  a bad frame (bad JSON, wrong types, NaN, crossed book, time going backwards, oversize) is
  counted by reason, logged (first few per reason) and skipped;
- buffers: every valid book is appended to a ``feeds.rowbuffer.RowBuffer`` as plain Python
  values (no numpy per message), and the consumer takes all the rows that arrived since its
  last take as one columnar batch, which the core processes in one vectorised call. Nothing is
  conflated while the consumer keeps up; only above ``max_buffered_rows`` waiting books is the
  oldest dropped, counted (``stats.conflated``) and logged (``feed.conflated``), so a stalled
  consumer never makes memory grow;
- degrades gracefully when it falls behind in time (``conflate_after_ms``, mbp10-json): a
  reader whose unread data (frames queued in the connection, bytes in the socket's kernel
  buffer) is more than that at the rate data arrives skips the books that newer frames
  replace without decoding them (``jsonmsg.is_plain_book``: about 1 us instead of 8.5 us), but
  for one book every ``conflate_after_ms``, so its consumer sees the market move on. Trades and
  frames that are not snapshots of the symbol (not JSON, another type) are decoded and counted
  as always; a skipped book's levels are not checked. A consumer that takes rows received
  longer ago than that gets the newest of those old books and every fresh row. Both are counted
  in ``stats.conflated``. Below that lag (every rate the reader and its consumer keep up with,
  bursts included) nothing is conflated: every book is seen;
- never starves its consumer: a reader that has run for ``yield_after_us`` without the event
  loop getting a turn (a burst of frames already buffered by the socket) yields once, so the
  consumer sees a decision-triggering book within about that time;
- wakes its consumer only when it must: the consumer may say (``hold``) the event time up to
  which new rows cannot make it act (its next decision time); such rows wait, and wake it
  within ``max_hold_ms`` at the latest, while a row past that time wakes it at once. Each
  wake-up has a fixed cost (a batch through the core), so fewer and larger batches leave the
  CPU to the books and the decisions;
- staleness: no valid book for ``stale_after_s`` (receive time) logs ``feed.stale`` and makes
  ``is_stale()`` true; the next valid book logs ``feed.resumed``.

Formats (``fmt``): ``mbp10-json`` (our message, ``feeds.jsonmsg``); ``binance-depth``: Binance's
diff stream, started from a snapshot message (``{"lastUpdateId": ...}``, sent first on each
connection by ``exec-agent serve-feed --format binance-depth``) and checked with the documented
``U``/``u`` (futures ``pu``) sequencing: a gap logs ``feed.gap_detected`` and reconnects for a
fresh snapshot; ``binance-depth10``: the partial book stream, each message a full top of book.

``updates()`` yields the batch of every row received since the last one, and an empty batch
every ``heartbeat_s`` while nothing arrives, so a consumer can act on time (check staleness,
deadlines) when the feed is silent. Trade rows (action ``T``: a Binance ``@trade`` message on
the book in force, or an MBP-10 JSON message with ``action: "T"``) are never conflated away:
the volume they carry is kept (bounded by ``max_pending``), in arrival order with the books.

Hostile data (issue 18): decoding never raises; event times beyond int64 ns are ``bad_schema``.
With ``max_clock_skew_s``, a book whose event time is further than that from ``clock.now_ns()``
(ahead or behind) is rejected (``time_ahead`` / ``time_behind``), counted and logged, so one
frame dated years ahead never becomes the feed's clock. Without it, ``clock_reset_after``
consecutive ``time_backwards`` rejections mean the earlier accepted time was the bad one: the
feed logs ``feed.clock_reset`` and accepts the frame. Streams that are not needed (bookTicker)
and diffs the procedure drops (older than the snapshot, duplicates) are counted in
``stats.ignored`` without a warning. A frame that still fails unexpectedly is logged with its
traceback (``feed.frame_failed``) and skipped; a reader task that dies makes ``updates()``
raise ``FeedError`` instead of yielding empty batches for ever. ``aclose()`` closes the
connection with 1000 (normal closure); a close by the server, normal or not, is logged as
``feed.disconnected`` and followed by a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import random
import ssl
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from feeds.binance_depth import IGNORED_REASONS, BinanceBook, DepthSnapshot, Trade, decode_message
from feeds.clock import Clock, WallClock
from feeds.errors import FeedError, SequenceGap
from feeds.jsonmsg import decode_mbp10_row, is_plain_book
from feeds.model import EV_TRADE, BookBatch, BookRow
from feeds.redact import redact_text, redact_url
from feeds.rowbuffer import RowBuffer
from feeds.validate import Reason, validate_row

__all__ = ["FORMATS", "LiveStats", "WebSocketFeed"]

FORMATS = ("mbp10-json", "binance-depth", "binance-depth10")


@dataclass(slots=True)
class LiveStats:
    """Counters of a live feed (``books``: book frames accepted, including the ones conflated
    before decoding; ``conflated``: books the consumer never got, by lag or past the buffer;
    ``skipped``: those of them the reader skipped undecoded, being behind its socket;
    ``last_ts_event_ns``: event time of the last book accepted, None before the first)."""

    frames: int = 0
    books: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    conflated: int = 0
    connects: int = 0
    disconnects: int = 0
    stale_events: int = 0
    gaps: int = 0
    trades: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    reordered: int = 0
    clock_resets: int = 0
    frame_errors: int = 0
    trades_dropped: int = 0
    skipped: int = 0
    last_ts_event_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the counters for a log line."""
        return {
            "frames": self.frames,
            "books": self.books,
            "trades": self.trades,
            "invalid": dict(self.invalid),
            "ignored": dict(self.ignored),
            "reordered": self.reordered,
            "clock_resets": self.clock_resets,
            "frame_errors": self.frame_errors,
            "trades_dropped": self.trades_dropped,
            "conflated": self.conflated,
            "skipped": self.skipped,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "stale_events": self.stale_events,
            "gaps": self.gaps,
            "last_ts_event_ns": self.last_ts_event_ns,
        }


_RATE_WINDOW_NS = 500_000_000  # how often the arrival rate of a feed's bytes is measured
# How long the kernel's unread byte count (a system call) stands for the lag estimate: the lag
# that matters is conflate_after_ms (50 ms by default), and a call per frame costs about 5 us.
_KERNEL_EVERY_NS = 1_000_000


def _unread_bytes(ws: Any) -> int:
    """Return the bytes received by the kernel that the connection has not read yet (0 when
    unknown: no socket, or not Linux)."""
    transport = getattr(ws, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buf, sys.byteorder, signed=True)


class WebSocketFeed:
    """Book feed of one symbol from a websocket URL (our MBP-10 JSON messages).

    Args:
        url: ``ws://`` or ``wss://`` address.
        symbol: Symbol expected in the messages.
        clock: Receive-time clock (``WallClock`` by default).
        stale_after_s: Silence that makes the feed stale, seconds.
        heartbeat_s: Empty-batch interval while silent, seconds.
        reconnect_base_s, reconnect_max_s: Backoff bounds, seconds.
        max_size: Largest frame accepted, bytes (bigger: the connection is failed, counted).
        rng: Random source for the jitter (tests pass a seeded one).
        log_first: Bad frames logged per reason before only counting.
        fmt: ``mbp10-json``, ``binance-depth`` or ``binance-depth10``.
        futures: Binance USD-M futures sequencing.
        max_clock_skew_s: Largest distance between a book's event time and ``clock.now_ns()``,
            seconds; ``None``: not checked (replayed recordings served with old times).
        clock_reset_after: Consecutive ``time_backwards`` rejections after which the last
            accepted event time is deemed bad and dropped (>= 1).
        reorder_ms: Binance only: an event time at most this far behind the last accepted one
            (depth and trade streams are not ordered with each other) is raised to it, ms.
        max_pending: Trade rows kept while the consumer is busy (older ones are then dropped,
            counted in ``stats.trades_dropped``).
        max_buffered_rows: Book rows kept while the consumer is busy; above it the oldest
            waiting book is conflated away (``stats.conflated``). Trades are not counted here.
        yield_after_us: Longest run of the reader, microseconds, before it lets the event loop
            (the consumer) have a turn.
        conflate_after_ms: Lag, ms of ``clock`` time, past which books that newer ones replace
            are conflated (see the module docstring); ``inf``: never (only ``max_buffered_rows``).
        max_hold_ms: Longest wait of a row that cannot make the consumer act (see ``hold``),
            ms; 0: every row wakes the consumer.
        ssl_context: TLS settings of a ``wss://`` URL; ``ssl.create_default_context()`` when
            None (certificates and host name checked against the system's CAs).

    The URL is logged only through ``feeds.redact.redact_url`` (no token, no user-info).
    """

    def __init__(
        self,
        url: str,
        symbol: str,
        *,
        clock: Clock | None = None,
        stale_after_s: float = 5.0,
        heartbeat_s: float = 0.5,
        reconnect_base_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        max_size: int = 64 * 1024,
        rng: random.Random | None = None,
        log_first: int = 5,
        fmt: str = "mbp10-json",
        futures: bool = False,
        max_clock_skew_s: float | None = None,
        clock_reset_after: int = 3,
        reorder_ms: int = 100,
        max_pending: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
        max_buffered_rows: int = 100_000,
        yield_after_us: float = 200.0,
        max_hold_ms: float = 5.0,
        conflate_after_ms: float = 50.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
        if max_clock_skew_s is not None and not max_clock_skew_s > 0:
            raise ValueError(f"max_clock_skew_s must be > 0 or None, got {max_clock_skew_s}")
        if clock_reset_after < 1 or reorder_ms < 0 or max_pending < 1 or max_buffered_rows < 1:
            raise ValueError(
                "clock_reset_after, max_pending and max_buffered_rows must be >= 1, reorder_ms >= 0"
            )
        if not yield_after_us >= 0 or not max_hold_ms >= 0:
            raise ValueError(
                f"yield_after_us and max_hold_ms must be >= 0, got {yield_after_us}, {max_hold_ms}"
            )
        if not conflate_after_ms > 0:
            raise ValueError(f"conflate_after_ms must be > 0 (inf: never), got {conflate_after_ms}")
        self.conflate_after_ns = (
            None if math.isinf(conflate_after_ms) else int(conflate_after_ms * 1_000_000)
        )
        self._frame_bytes = 0.0  # running mean size of a frame (of the frames queued)
        self._read_bytes = 0  # bytes read since the rate's mark
        self._rate_mark: tuple[int | None, float] = (None, 0.0)  # (clock ns, bytes unread)
        self._bytes_per_ns = 0.0  # arrival rate, bytes per ns of ``clock`` (0: not known yet)
        self._kept_ns = -(2**62)  # clock time of the last book decoded while behind
        self._kernel_bytes, self._kernel_ns = 0, -(2**62)  # FIONREAD, and when it was read
        self._kernel_queued = self._kernel_reads = 0  # frames queued then, read since
        self.max_hold_s = max_hold_ms / 1000.0
        self.hold_until_ns: int | None = None  # see ``hold``
        self._held = False  # rows wait without having woken the consumer (a timer will)
        self._hold_timer: asyncio.TimerHandle | None = None
        self.yield_after_ns = int(yield_after_us * 1000)
        self.max_skew_ns = None if max_clock_skew_s is None else int(max_clock_skew_s * 1e9)
        self.clock_reset_after = clock_reset_after
        self.reorder_ns = reorder_ms * 1_000_000
        self.max_pending = max_pending
        self._backwards = 0  # consecutive time_backwards rejections
        self._buf = RowBuffer(symbol, max_buffered_rows, max_pending)  # rows not yet taken
        self._ws: Any = None
        self._queue: Any = None  # the connection's queue of frames not read yet (_lag_queue)
        self.fmt = fmt
        self.futures = futures
        self._book = BinanceBook(symbol, futures=futures)
        self.url = url
        self._tls: dict[str, Any] = (
            {"ssl": ssl_context or ssl.create_default_context()} if url.startswith("wss:") else {}
        )
        self.symbol = symbol
        self.clock = clock or WallClock()
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.heartbeat_s = heartbeat_s
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_max_s = reconnect_max_s
        self.max_size = max_size
        self.rng = rng or random.Random()
        self.log_first = log_first
        self.stats = LiveStats()
        self.last_update_ns = self.clock.now_ns()
        self._stale = False
        self._new = asyncio.Event()  # set while rows wait for the consumer
        # Told when rows start waiting for the consumer (a reader process tells its parent).
        self.on_wake: Callable[[], None] | None = None
        self._waiting_since = 0  # perf_counter_ns of the first of them
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        self._prev_ts: int | None = None
        self._log = structlog.get_logger().bind(symbol=symbol, url=redact_url(url))

    # -- state ---------------------------------------------------------------------------------
    def is_stale(self, now_ns: int | None = None) -> bool:
        """Return True when no valid book arrived for ``stale_after_s``."""
        now = self.clock.now_ns() if now_ns is None else now_ns
        return now - self.last_update_ns > self.stale_after_ns

    def _check_stale(self) -> None:
        stale = self.is_stale()
        if stale and not self._stale:
            self._stale = True
            self.stats.stale_events += 1
            self._log.warning(
                "feed.stale", silent_s=(self.clock.now_ns() - self.last_update_ns) / 1e9
            )

    def _invalid(self, reason: str, **kw: Any) -> None:
        if reason in IGNORED_REASONS:
            self.stats.ignored[reason] = self.stats.ignored.get(reason, 0) + 1
            return
        n = self.stats.invalid.get(reason, 0) + 1
        self.stats.invalid[reason] = n
        if n <= self.log_first:
            self._log.warning("feed.invalid_message", reason=reason, count=n, **kw)

    # -- reader --------------------------------------------------------------------------------
    def _decode(self, raw: bytes | str, now: int) -> tuple[BookRow | None, str]:
        """Turn one frame into a checked row, per ``fmt`` (never raises but for gaps)."""
        if self.fmt == "mbp10-json":
            return decode_mbp10_row(
                raw, now, self.symbol, self._prev_ts, max_skew_ns=self.max_skew_ns
            )
        msg, reason = decode_message(raw)
        if msg is None:
            return None, reason
        if isinstance(msg, Trade):
            if msg.s and msg.s.upper() != self.symbol.upper():
                return None, "wrong_symbol"
            if self._book.snapshot_id is None or (
                self.fmt == "binance-depth" and not self._book.synced
            ):
                return None, "no_book"
            return self._checked(self._book, msg.E or msg.T, now, msg)
        if isinstance(msg, DepthSnapshot):
            if self.fmt == "binance-depth10":
                book = BinanceBook(self.symbol)
                if not book.apply_snapshot(msg):
                    return None, "bad_levels"
                out = self._checked(book, msg.E or now // 1_000_000, now)
                if out[0] is not None:
                    self._book = book  # the book in force, for the trades that follow
                return out
            if self._book.apply_snapshot(msg):  # diff stream: (re)start from this snapshot
                self._log.info("feed.snapshot", last_update_id=msg.lastUpdateId)
                return None, ""
            return None, "bad_levels"
        if self.fmt != "binance-depth":
            return None, "bad_schema"
        r = self._book.apply_diff(msg)  # SequenceGap propagates: the reader resyncs
        if r != "applied":
            return None, r
        return self._checked(self._book, msg.E, now)

    def _time_ok(self, ts_ns: int, now_ns: int) -> str:
        """Return ``""`` when an event time is within the clock tolerance, else the reason."""
        if self.max_skew_ns is None:
            return ""
        if ts_ns > now_ns + self.max_skew_ns:
            return "time_ahead"
        if ts_ns < now_ns - self.max_skew_ns:
            return "time_behind"
        return ""

    def _checked(
        self, book: BinanceBook, e_ms: int, now: int, trade: Trade | None = None
    ) -> tuple[BookRow | None, str]:
        ts = e_ms * 1_000_000
        prev = self._prev_ts
        if prev is not None and prev - self.reorder_ns <= ts < prev:
            ts = prev  # another stream of the same venue, a few ms behind: keep the order
            self.stats.reordered += 1
        skew = self._time_ok(ts, now)
        if skew:
            return None, skew
        row = book.row(ts, now, trade)
        _, _, bp, bs, ap, az, ev = row
        r = validate_row(bp, bs, ap, az, ts, prev, ev if trade is not None else None)  # type: ignore[arg-type]
        if r is not Reason.OK:
            return None, r.name.lower()
        return row, ""

    def _on_frame(self, raw: bytes | str, now: int | None = None) -> None:
        """Decode, check and buffer one frame received at ``now`` (default: the clock's now)."""
        self.stats.frames += 1
        if now is None:
            now = self.clock.now_ns()
        row, reason = self._decode(raw, now)
        if row is None and reason == "time_backwards":
            self._backwards += 1
            if self._backwards >= self.clock_reset_after:
                # The frames keep disagreeing with the last accepted time, and with each other
                # not at all: that time was the bad one. Forget it and take this frame.
                old, self._prev_ts = self._prev_ts, None
                row, reason = self._decode(raw, now)
                if row is not None:
                    self.stats.clock_resets += 1
                    self._log.warning(
                        "feed.clock_reset", last_ts=old, ts=row[0], rejected=self._backwards
                    )
                else:
                    self._prev_ts = old
        if row is None:
            if reason:
                self._invalid(reason, size=len(raw))
            return
        self._backwards = 0
        self._prev_ts = self.stats.last_ts_event_ns = row[0]
        self.stats.books += 1
        self.last_update_ns = now
        if self._stale:
            self._stale = False
            self._log.info("feed.resumed")
        ev = row[6]
        trade = ev is not None and ev[0] == EV_TRADE
        if trade:
            self.stats.trades += 1
        if not self._new.is_set() and not self._held:
            self._waiting_since = time.perf_counter_ns()  # the first row the consumer awaits
        if self._buf.append(row, trade):
            self._dropped(trade)
        hold = self.hold_until_ns
        if hold is None or row[0] > hold or not self.max_hold_s:
            self._wake()
        elif not self._held and not self._new.is_set():
            self._hold_rows()

    def idle(self) -> bool:
        """Return True when no row waits to wake the consumer (held rows may wait): a good
        moment for the consumer's deferred work."""
        return not self._new.is_set()

    def hold(self, until_ns: int | None) -> None:
        """Let rows with event time <= ``until_ns`` wait (at most ``max_hold_ms``) instead of
        waking the consumer; ``None``: every row wakes it.

        The consumer calls it before asking for the next batch, with the earliest event time
        at which a row can make it act (its next decision); a later row wakes it at once.
        """
        self.hold_until_ns = until_ns

    def _hold_rows(self) -> None:
        """Start the wait of held rows: a timer wakes the consumer after ``max_hold_ms``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing can wait
            self._wake()
            return
        self._held = True
        self._hold_timer = loop.call_later(self.max_hold_s, self._release)

    def _release(self) -> None:
        self._held = False
        self._hold_timer = None
        self._wake()

    def _wake(self) -> None:
        """Wake the consumer: rows wait for it (``on_wake`` hears it first)."""
        if self.on_wake is not None and not self._new.is_set():
            self.on_wake()
        self._new.set()

    def _dropped(self, trade: bool) -> None:
        """Count and log (1st, 10th, 100th, 1000th, then every 10,000th) a row the buffer
        dropped: the oldest waiting book (conflated) or, past ``max_pending``, trade."""
        buf = self._buf
        if trade:
            n = self.stats.trades_dropped = buf.trades_dropped
            if n in (1, 10, 100, 1000) or n % 10_000 == 0:
                self._log.warning("feed.trades_dropped", dropped=n, kept=self.max_pending)
            return
        self._count_conflated("buffer")

    def _take(self) -> BookBatch | None:
        """Return every row received since the last take as one batch (None: no row); rows
        older than ``conflate_after_ms`` but the newest book among them are conflated."""
        buf = self._buf
        if self.conflate_after_ns is None or not len(buf):
            return buf.take()
        before = buf.conflated
        batch = buf.take(self.clock.now_ns(), self.conflate_after_ns)
        if buf.conflated != before:
            self._count_conflated("consumer")
        return batch

    def _lag_queue(self, ws: Any) -> Any:
        """Return the frames ``ws`` has parsed and not handed out yet, looked up once per
        connection; None when this feed never conflates by lag (off, or a diff stream), and
        an empty tuple when ``websockets`` no longer has that queue (the kernel's bytes only)."""
        if self.conflate_after_ns is None or self.fmt != "mbp10-json":
            return None
        frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
        return () if frames is None else frames

    def _behind(self, ws: Any, size: int, now: int) -> bool:
        """Return True when the frame being read (``size`` bytes) is more than
        ``conflate_after_ms`` behind the newest data received (see the module docstring).

        The lag is the data not read yet over the rate it arrives at. Not read yet: the frames
        queued in the ``websockets`` connection (``recv_messages.frames``, not a documented
        attribute: a test pins it) and the bytes in the socket's kernel buffer (``FIONREAD``, read
        at most once a millisecond).
        The arrival rate is measured every ``_RATE_WINDOW_NS``: bytes read plus the change of
        what waits. A reader that keeps up has nothing unread: no lag, whatever the rate.
        """
        frames, after = self._queue, self.conflate_after_ns
        if frames is None or after is None:  # never conflated (see _lag_queue)
            return False
        self._frame_bytes += (size - self._frame_bytes) / 64.0
        n_queued = len(frames)
        unread = n_queued * self._frame_bytes
        self._read_bytes += size
        rate = self._bytes_per_ns
        limit = rate * after if rate > 0 else math.inf
        t0, u0 = self._rate_mark
        due = t0 is None or now - t0 >= _RATE_WINDOW_NS
        # The kernel's share (a system call, at most once a ms) only when it can matter: at the
        # rate's mark, or with frames queued but fewer than the limit. A reader that keeps up
        # finds the queue empty (it reads every frame the connection parsed): no call then.
        self._kernel_reads += 1
        if due or (n_queued and unread <= limit):
            if due or now - self._kernel_ns >= _KERNEL_EVERY_NS:
                self._kernel_bytes, self._kernel_ns = _unread_bytes(ws), now
                self._kernel_queued, self._kernel_reads = n_queued, 0
            # What the connection took from the kernel since the count: the frames queued
            # since, and the ones read. (New arrivals wait for the next count: at most 1 ms.)
            moved = (n_queued - self._kernel_queued + self._kernel_reads) * self._frame_bytes
            unread += max(self._kernel_bytes - moved, 0.0)
        if due:
            if t0 is not None:
                r = (self._read_bytes + unread - u0) / (now - t0)  # bytes arrived per ns
                self._bytes_per_ns = r if rate <= 0 else 0.5 * (r + rate)
                limit = self._bytes_per_ns * after
            self._rate_mark, self._read_bytes = (now, unread), 0
        if not (limit > 0 and unread > limit):
            return False
        # However far behind, a book is decoded every conflate_after_ms: the consumer sees the
        # market move on (its decisions come due) while the backlog is skipped.
        if now - self._kept_ns >= after:
            self._kept_ns = now
            return False
        return True

    def _skip(self, raw: bytes | str, now: int) -> bool:
        """Conflate a book frame without decoding it, when a newer frame replaces it; return
        False for a frame that must be decoded (a trade, or not a well-formed snapshot)."""
        if not is_plain_book(raw, self.symbol):
            return False
        st = self.stats
        st.frames += 1
        st.books += 1
        self.last_update_ns = now
        st.skipped += 1
        self._count_conflated("reader")
        return True

    def _count_conflated(self, by: str) -> None:
        """Update ``stats.conflated`` (the buffer's and the reader's) and log the 1st, 10th,
        100th, 1000th, then every 10,000th: ``by`` is ``buffer`` (past ``max_buffered_rows``),
        or by lag the ``reader`` (skipped undecoded) or the ``consumer``'s take."""
        before = self.stats.conflated
        n = self.stats.conflated = self._buf.conflated + self.stats.skipped
        if not any(before < mark <= n for mark in (1, 10, 100, 1000)) and (
            before // 10_000 == n // 10_000
        ):
            return
        if by == "buffer":
            self._log.info("feed.conflated", conflated=n, kept=self._buf.max_books)
        else:
            self._log.info("feed.conflated", conflated=n, reason="lag", by=by)

    def _on_frame_safe(self, raw: bytes | str, now: int | None = None) -> None:
        """``_on_frame`` that survives our own bugs: log, count, skip the frame."""
        try:
            self._on_frame(raw, now)
        except SequenceGap:
            raise
        except Exception:  # the reader must not die on one frame; the traceback is logged
            self.stats.frame_errors += 1
            self._log.exception("feed.frame_failed", size=len(raw))

    async def _read(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with connect(
                    self.url,
                    proxy=None,
                    compression=None,
                    max_size=self.max_size,
                    open_timeout=5,
                    ping_interval=5,
                    ping_timeout=5,
                    close_timeout=1,
                    **self._tls,
                ) as ws:
                    self.stats.connects += 1
                    self._log.info("feed.connected", attempt=attempt)
                    self._book = BinanceBook(self.symbol, futures=self.futures)
                    got = self.stats.books
                    self._ws = ws
                    self._queue = self._lag_queue(ws)
                    yielded = 0
                    now_ns = self.clock.now_ns
                    async for raw in ws:
                        now = now_ns()
                        try:
                            if not (self._behind(ws, len(raw), now) and self._skip(raw, now)):
                                self._on_frame_safe(raw, now)
                        except SequenceGap as gap:
                            # Out of sync: a new connection brings a fresh snapshot.
                            self.stats.gaps += 1
                            self._log.warning("feed.gap_detected", detail=str(gap))
                            break
                        if self.stats.books > got:
                            attempt = 0
                        if self._new.is_set():
                            # Frames the socket already holds come without a pause: give the
                            # consumer a turn once the oldest row has waited yield_after_us.
                            t = time.perf_counter_ns()
                            wait = self.yield_after_ns
                            if t - self._waiting_since > wait and t - yielded > wait:
                                await asyncio.sleep(0)
                                yielded = time.perf_counter_ns()
                    else:
                        if not self._closed:  # the server closed (1000 / 1001 too)
                            self.stats.disconnects += 1
                            self._log.warning(
                                "feed.disconnected",
                                code=ws.close_code,
                                reason=(ws.close_reason or "")[:200],
                            )
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as e:
                code = e.sent.code if e.sent is not None else None
                if code == 1009:
                    self._invalid("oversize")
                self.stats.disconnects += 1
                self._log.warning("feed.disconnected", code=code, reason=redact_text(str(e))[:200])
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
                err = redact_text(f"{type(e).__name__}: {e}")
                self._log.warning("feed.connect_failed", error=err[:200])
            if self._closed:
                return
            delay = self.rng.uniform(
                0, min(self.reconnect_max_s, self.reconnect_base_s * 2**attempt)
            )
            attempt += 1
            self._log.info("feed.reconnect_scheduled", delay_s=round(delay, 4), attempt=attempt)
            await asyncio.sleep(delay)

    # -- consumer ------------------------------------------------------------------------------
    async def updates(self) -> AsyncIterator[BookBatch]:
        """Yield the latest valid book as it arrives, or an empty batch every heartbeat."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name=f"feed-{self.symbol}")
        empty = BookBatch.empty(self.symbol)
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._new.wait()
            self._check_reader()
            self._check_stale()
            batch = self._take()
            self._new.clear()
            self._held = False
            if self._hold_timer is not None:
                self._hold_timer.cancel()
                self._hold_timer = None
            yield empty if batch is None else batch

    def _check_reader(self) -> None:
        """Raise ``FeedError`` if the reader task died: never yield empty batches for ever."""
        r = self._reader
        if r is None or not r.done() or r.cancelled() or self._closed:
            return
        exc = r.exception()
        if exc is None:
            return
        self._log.error("feed.reader_failed", error=repr(exc)[:200])
        raise FeedError(f"{self.symbol}: the feed reader stopped: {exc!r}") from exc

    async def aclose(self) -> None:
        """Stop reading and close the connection with 1000 (normal closure). Idempotent."""
        self._closed = True
        self._new.set()
        reader, ws = self._reader, self._ws
        if reader is None or reader.done():
            return
        if ws is not None:
            # A clean close ends the reader's ``async for``; cancelling instead would make the
            # connection close with 1011 (internal error).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close(1000, "client closing")
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(reader)
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
