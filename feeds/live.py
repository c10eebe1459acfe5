"""Live book feed over a websocket (the async shell; parsing is in ``feeds.jsonmsg``).

``WebSocketFeed`` implements ``BookFeed``:

- connects with the ``websockets`` asyncio API (no proxy, no compression, ``max_size`` bound);
- reconnects after any drop with exponential backoff and full jitter (``reconnect_base_s``
  doubling up to ``reconnect_max_s``; reset once a book arrives);
- decodes each frame with a typed msgspec decoder and validates it with ``feeds.validate``;
  a bad frame (bad JSON, wrong types, NaN, crossed book, time going backwards, oversize) is
  counted by reason, logged (first few per reason) and skipped;
- conflates: the reader keeps only the latest unread book (a slot, not a queue), so a slow
  consumer never makes memory grow; replaced books are counted (``feed.conflated``);
- staleness: no valid book for ``stale_after_s`` (receive time) logs ``feed.stale`` and makes
  ``is_stale()`` true; the next valid book logs ``feed.resumed``.

Formats (``fmt``): ``mbp10-json`` (our message, ``feeds.jsonmsg``); ``binance-depth``: Binance's
diff stream, started from a snapshot message (``{"lastUpdateId": ...}``, sent first on each
connection by ``exec-agent serve-feed --format binance-depth``) and checked with the documented
``U``/``u`` (futures ``pu``) sequencing: a gap logs ``feed.gap_detected`` and reconnects for a
fresh snapshot; ``binance-depth10``: the partial book stream, each message a full top of book.

``updates()`` yields one-row batches, and an empty batch every ``heartbeat_s`` while nothing
arrives, so a consumer can act on time (check staleness, deadlines) when the feed is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from feeds.binance_depth import BinanceBook, DepthSnapshot, decode_message
from feeds.clock import Clock, WallClock
from feeds.errors import SequenceGap
from feeds.jsonmsg import decode_mbp10
from feeds.model import BookBatch
from feeds.redact import redact_text, redact_url
from feeds.validate import Reason, validate_row

__all__ = ["FORMATS", "LiveStats", "WebSocketFeed"]

FORMATS = ("mbp10-json", "binance-depth", "binance-depth10")


@dataclass(slots=True)
class LiveStats:
    """Counters of a live feed."""

    frames: int = 0
    books: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    conflated: int = 0
    connects: int = 0
    disconnects: int = 0
    stale_events: int = 0
    gaps: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters for a log line."""
        return {
            "frames": self.frames,
            "books": self.books,
            "invalid": dict(self.invalid),
            "conflated": self.conflated,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "stale_events": self.stale_events,
            "gaps": self.gaps,
        }


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
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
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
        self._slot: BookBatch | None = None
        self._new = asyncio.Event()
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
        n = self.stats.invalid.get(reason, 0) + 1
        self.stats.invalid[reason] = n
        if n <= self.log_first:
            self._log.warning("feed.invalid_message", reason=reason, count=n, **kw)

    # -- reader --------------------------------------------------------------------------------
    def _decode(self, raw: bytes | str, now: int) -> tuple[BookBatch | None, str]:
        """Turn one frame into a checked one-row batch, per ``fmt`` (never raises but for gaps)."""
        if self.fmt == "mbp10-json":
            return decode_mbp10(raw, now, self.symbol, self._prev_ts)
        msg, reason = decode_message(raw)
        if msg is None:
            return None, reason
        if isinstance(msg, DepthSnapshot):
            if self.fmt == "binance-depth10":
                book = BinanceBook(self.symbol)
                if not book.apply_snapshot(msg):
                    return None, "bad_levels"
                return self._checked(book, msg.E or now // 1_000_000, now)
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

    def _checked(self, book: BinanceBook, e_ms: int, now: int) -> tuple[BookBatch | None, str]:
        bp, bs, ap, az = book.top()
        ts = e_ms * 1_000_000
        r = validate_row(bp.tolist(), bs.tolist(), ap.tolist(), az.tolist(), ts, self._prev_ts)
        if r is not Reason.OK:
            return None, r.name.lower()
        return book.batch(ts, now), ""

    def _on_frame(self, raw: bytes | str) -> None:
        self.stats.frames += 1
        now = self.clock.now_ns()
        batch, reason = self._decode(raw, now)
        if batch is None:
            if reason:
                self._invalid(reason, size=len(raw))
            return
        self._prev_ts = int(batch.ts_event_ns[0])
        self.stats.books += 1
        self.last_update_ns = now
        if self._stale:
            self._stale = False
            self._log.info("feed.resumed")
        if self._slot is not None:
            self.stats.conflated += 1
            if self.stats.conflated in (1, 10, 100, 1000) or self.stats.conflated % 10_000 == 0:
                self._log.info("feed.conflated", conflated=self.stats.conflated)
        self._slot = batch
        self._new.set()

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
                    async for raw in ws:
                        try:
                            self._on_frame(raw)
                        except SequenceGap as gap:
                            # Out of sync: a new connection brings a fresh snapshot.
                            self.stats.gaps += 1
                            self._log.warning("feed.gap_detected", detail=str(gap))
                            break
                        if self.stats.books > got:
                            attempt = 0
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
            self._check_stale()
            if self._slot is not None:
                batch, self._slot = self._slot, None
                self._new.clear()
                yield batch
            else:
                self._new.clear()
                yield empty

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        self._closed = True
        self._new.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
