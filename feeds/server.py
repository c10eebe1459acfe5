"""A websocket feed server that replays an MBP-10 file to any number of clients (async shell).

It is how live mode is demonstrated and tested: one producer paces the file by event time
times ``speed`` and broadcasts every snapshot (our JSON MBP-10 message, ``feeds.jsonmsg``) to
every connected client, as a real feed does: a client that connects late joins the stream where
it is. Binds to 127.0.0.1 unless told otherwise.

``fmt = "binance-depth"`` replays a recorded Binance session instead (``<recv ns> <raw JSON>``
lines, as in ``../shared/data/binance-ws``): the depth diffs, paced by the recorded receive
time, after a snapshot of the server's own book sent to each new connection.

Trade frames of the recording are forwarded too (the feed uses their volume); other streams
are not. A sequence gap inside the recording is logged (``feed_server.gap``) and the server's
own book follows the diffs regardless, so the producer never dies on it; any other failure of
the producer is logged with its traceback and ends the replay (``error`` is set).

``restamp = True`` sends each message with the event time set to the wall-clock time it is
sent (``ts_event`` of our message, ``E`` of a Binance frame), as a live venue would; live
clients that check event times against their clock (``max_clock_skew_s``) need it.

Slow clients: every connection is pinged (``ping_interval_s``; no pong within
``ping_timeout_s`` drops it) and one whose unsent data exceeds ``max_buffer_bytes`` is dropped
at once (``feed_server.client_dropped``), so a stalled client cannot grow the server's memory.
What clients send is read and discarded, so the closing handshake at the end is never stuck
behind unread frames.

Faults on request, for tests: ``drop_connections()`` aborts every TCP connection,
``stall(seconds)`` sends nothing for a while (the file keeps advancing, as the market does),
``send_garbage(n)`` broadcasts n malformed frames, ``send_raw(frame)`` any frame,
``skip_sequence()`` drops the next Binance diff (a gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from feeds.binance_depth import BinanceBook, DepthDiff, DepthSnapshot, Trade, decode_message
from feeds.errors import SequenceGap
from feeds.jsonmsg import encode_mbp10
from feeds.readers import read_books

__all__ = ["FeedServer"]


class FeedServer:
    """Replay ``path`` over websockets.

    Args:
        path: MBP-10 file (CSV, .gz, .zst, DBN).
        symbol: Keep only this symbol (None: all).
        speed: Event time runs ``speed`` times faster than wall time (> 0).
        host, port: Where to listen (port 0 = any free port; see ``port``).
        loop: Start the file again when it ends.
        start_delay_s: Wait this long before the first message (lets clients connect).
        wait_for_clients: Send nothing before this many clients are connected (then
            ``start_delay_s``): a test whose client takes long to start (a reader process on a
            busy machine) misses no book; 0: start at once.
        fmt: ``mbp10-json`` (any book file ``read_books`` reads) or ``binance-depth`` (a
            recorded Binance session).
        futures: Binance USD-M futures sequencing.
        restamp: Send event times of now (wall clock) instead of the recorded ones.
        max_buffer_bytes: Unsent bytes after which a client is dropped.
        ping_interval_s, ping_timeout_s: Keepalive of each connection, seconds.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str | None = None,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: bool = False,
        start_delay_s: float = 0.0,
        wait_for_clients: int = 0,
        fmt: str = "mbp10-json",
        futures: bool = False,
        restamp: bool = False,
        max_buffer_bytes: int = 1 << 20,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 5.0,
    ) -> None:
        if fmt not in ("mbp10-json", "binance-depth"):
            raise ValueError(f"fmt must be mbp10-json or binance-depth, got {fmt!r}")
        self.fmt = fmt
        self._book = BinanceBook(symbol or "BTCUSDT", futures=futures)
        self._skip_next = False
        self._book_ready = asyncio.Event()
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.path = Path(path)
        self.symbol = symbol
        self.speed = speed
        self.host = host
        self._port = port
        self.loop = loop
        self.start_delay_s = start_delay_s
        self.wait_for_clients = wait_for_clients
        self._enough_clients = asyncio.Event()
        self.sent = 0
        self.restamp = restamp
        self.max_buffer_bytes = max_buffer_bytes
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.dropped_slow = 0
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        self._clients: set[ServerConnection] = set()
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self._stall_until = 0.0
        self._log = structlog.get_logger().bind(component="feed_server")

    @property
    def port(self) -> int:
        """Return the bound port."""
        if self._server is None:
            return self._port
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """Return the ``ws://`` address."""
        return f"ws://{self.host}:{self.port}"

    async def _handler(self, ws: ServerConnection) -> None:
        if self.fmt == "binance-depth":
            # Each connection starts from a snapshot of the server's own book, as a client
            # would fetch one over REST; the diffs that follow chain on its lastUpdateId.
            await self._book_ready.wait()
            bp = sorted(self._book.bids, reverse=True)[:1000]
            ap = sorted(self._book.asks)[:1000]
            snap = {
                "lastUpdateId": self._book.last_u,
                "bids": [[repr(p), repr(self._book.bids[p])] for p in bp],
                "asks": [[repr(p), repr(self._book.asks[p])] for p in ap],
            }
            # Send and join in one step (``broadcast`` writes at once, no await): a diff
            # broadcast in between would be missing from this client's chain.
            broadcast([ws], json.dumps(snap))
        self._clients.add(ws)
        if len(self._clients) >= self.wait_for_clients:
            self._enough_clients.set()
        self._log.info("feed_server.client_connected", clients=len(self._clients))
        try:
            # Read and drop what the client sends: unread frames would hold back its close
            # frame (backpressure) and delay every closing handshake by the close timeout.
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
        finally:
            self._clients.discard(ws)
            self._log.info(
                "feed_server.client_disconnected", code=ws.close_code, clients=len(self._clients)
            )

    def _broadcast(self, frame: str) -> None:
        """Send one frame to every client, first dropping those that do not keep up."""
        for ws in list(self._clients):
            if ws.transport.get_write_buffer_size() > self.max_buffer_bytes:
                self._clients.discard(ws)
                self.dropped_slow += 1
                self._log.warning(
                    "feed_server.client_dropped",
                    reason="slow_consumer",
                    buffered_bytes=ws.transport.get_write_buffer_size(),
                    clients=len(self._clients),
                )
                ws.transport.abort()  # a close frame would queue behind the backlog
        broadcast(self._clients, frame)

    async def _produce(self) -> None:
        try:
            if self.wait_for_clients:
                await self._enough_clients.wait()
            await asyncio.sleep(self.start_delay_s)
            if self.fmt == "binance-depth":
                await self._produce_binance()
            else:
                await self._produce_books()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the shell's top-level task: log it, end the replay
            self.error = e
            self._log.exception("feed_server.failed", error=repr(e)[:200])
        finally:
            self.done.set()

    async def _produce_books(self) -> None:
        while True:
            t0_wall = time.perf_counter()
            t0_evt: int | None = None
            for batch in read_books(self.path, symbol=self.symbol):
                ts = batch.ts_event_ns
                if t0_evt is None:
                    t0_evt = int(ts[0])
                due = (ts - t0_evt) / 1e9 / self.speed  # seconds after t0_wall
                i = 0
                n = len(batch)
                while i < n:
                    now = time.perf_counter() - t0_wall
                    j = int(np.searchsorted(due, now, side="right"))
                    if j <= i:
                        await asyncio.sleep(min(float(due[i]) - now, 0.05))
                        continue
                    if time.perf_counter() >= self._stall_until:
                        stamp = time.time_ns() if self.restamp else None
                        for k in range(i, j):  # the rows now due (a few per tick)
                            self._broadcast(encode_mbp10(batch, k, stamp).decode())
                            self.sent += 1
                    i = j
                    await asyncio.sleep(0)
            if not self.loop:
                break
        self._log.info("feed_server.replay_finished", sent=self.sent)

    async def start(self) -> FeedServer:
        """Listen and start the replay."""
        self._server = await serve(
            self._handler,
            self.host,
            self._port,
            compression=None,
            max_size=2**16,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_timeout_s,
            close_timeout=2,
        )
        self._producer = asyncio.create_task(self._produce(), name="feed-server")
        self._log.info("feed_server.listening", url=self.url, path=str(self.path), speed=self.speed)
        return self

    async def aclose(self) -> None:
        """Stop the replay and close every connection."""
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FeedServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _produce_binance(self) -> None:
        """Replay a recorded Binance session (``<recv ns> <raw JSON>`` lines, gzip or plain).

        The server keeps the book itself (snapshot, then diffs) so that every new connection
        gets a fresh snapshot; depth diffs and trades are forwarded, paced by the recorded
        receive time.
        """
        opener = gzip.open if self.path.suffix == ".gz" else open
        t0_wall = time.perf_counter()
        t0_rec: int | None = None
        pending: list[DepthDiff] = []
        with opener(self.path, "rb") as f:
            for line in f:
                head, _, raw = line.partition(b" ")
                msg, _reason = decode_message(raw)
                if msg is None:
                    continue
                if isinstance(msg, DepthSnapshot):
                    if self._book.snapshot_id is None and self._book.apply_snapshot(msg):
                        for ev in pending:
                            self._apply(ev)
                    continue
                if isinstance(msg, Trade):
                    if not self._book_ready.is_set():
                        continue
                elif self._book.snapshot_id is None:
                    pending.append(msg)
                    continue
                elif self._apply(msg) != "applied":
                    continue
                self._book_ready.set()
                try:
                    rec = int(head)
                except ValueError:
                    continue
                t0_rec = rec if t0_rec is None else t0_rec
                delay = (rec - t0_rec) / 1e9 / self.speed - (time.perf_counter() - t0_wall)
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._skip_next and not isinstance(msg, Trade):
                    self._skip_next = False
                    continue
                if time.perf_counter() >= self._stall_until:
                    frame = raw.decode().strip()
                    self._broadcast(_restamp(frame) if self.restamp else frame)
                    self.sent += 1
        self._log.info("feed_server.replay_finished", sent=self.sent)

    def _apply(self, ev: DepthDiff) -> str:
        """Apply a recorded diff to the server's book; a gap in the recording is logged."""
        try:
            return self._book.apply_diff(ev)
        except SequenceGap as gap:
            self._log.warning("feed_server.gap", detail=str(gap))
            return self._book.apply_diff(ev, check=False)

    # -- faults --------------------------------------------------------------------------------
    def drop_connections(self) -> int:
        """Abort every client's TCP connection (no close handshake); return how many."""
        n = 0
        for ws in list(self._clients):
            ws.transport.abort()
            n += 1
        self._log.info("feed_server.dropped", n=n)
        return n

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds`` of wall time (the replay keeps advancing)."""
        self._stall_until = time.perf_counter() + seconds
        self._log.info("feed_server.stall", seconds=seconds)

    def send_garbage(self, n: int = 1) -> None:
        """Broadcast ``n`` malformed frames."""
        frames = ['{"not json', '{"symbol": 5}', "[]", '{"type":"mbp10","symbol":"X"}']
        for i in range(n):
            self._broadcast(frames[i % len(frames)])

    def skip_sequence(self) -> None:
        """Drop the next Binance diff: clients see a sequence gap and must resync."""
        self._skip_next = True

    def send_raw(self, frame: str | bytes) -> None:
        """Broadcast one frame as is."""
        broadcast(self._clients, frame)


def _restamp(frame: str) -> str:
    """Return a Binance frame with its event time ``E`` (ms) set to now."""
    try:
        msg = msgspec.json.decode(frame)
        body = msg["data"] if isinstance(msg, dict) and "data" in msg else msg
        if isinstance(body, dict):
            body["E"] = time.time_ns() // 1_000_000
        return msgspec.json.encode(msg).decode()
    except (msgspec.DecodeError, TypeError):
        return frame
