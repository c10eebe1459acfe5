"""A websocket feed server that replays an MBP-10 file to any number of clients (async shell).

It is how live mode is demonstrated and tested: one producer paces the file by event time
times ``speed`` and broadcasts every snapshot (our JSON MBP-10 message, ``feeds.jsonmsg``) to
every connected client, as a real feed does: a client that connects late joins the stream where
it is. Binds to 127.0.0.1 unless told otherwise.

``fmt = "binance-depth"`` replays a recorded Binance session instead (``<recv ns> <raw JSON>``
lines, as in ``../shared/data/binance-ws``): the depth diffs, paced by the recorded receive
time, after a snapshot of the server's own book sent to each new connection.

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

import numpy as np
import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from feeds.binance_depth import BinanceBook, DepthDiff, DepthSnapshot, decode_message
from feeds.jsonmsg import encode_mbp10
from feeds.readers import read_mbp10

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
        fmt: str = "mbp10-json",
        futures: bool = False,
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
        self.sent = 0
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
            await ws.send(json.dumps(snap))
        self._clients.add(ws)
        self._log.info("feed_server.client_connected", clients=len(self._clients))
        try:
            await ws.wait_closed()
        finally:
            self._clients.discard(ws)

    async def _produce(self) -> None:
        await asyncio.sleep(self.start_delay_s)
        if self.fmt == "binance-depth":
            await self._produce_binance()
            self.done.set()
            return
        while True:
            t0_wall = time.perf_counter()
            t0_evt: int | None = None
            for batch in read_mbp10(self.path, symbol=self.symbol):
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
                        for k in range(i, j):  # the rows now due (a few per tick)
                            broadcast(self._clients, encode_mbp10(batch, k).decode())
                            self.sent += 1
                    i = j
                    await asyncio.sleep(0)
            if not self.loop:
                break
        self.done.set()
        self._log.info("feed_server.replay_finished", sent=self.sent)

    async def start(self) -> FeedServer:
        """Listen and start the replay."""
        self._server = await serve(
            self._handler, self.host, self._port, compression=None, max_size=2**16
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
        gets a fresh snapshot; only depth diffs are forwarded, paced by the recorded receive time.
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
                            self._book.apply_diff(ev)
                    continue
                if self._book.snapshot_id is None:
                    pending.append(msg)
                    continue
                if self._book.apply_diff(msg) != "applied":
                    continue
                self._book_ready.set()
                rec = int(head)
                t0_rec = rec if t0_rec is None else t0_rec
                delay = (rec - t0_rec) / 1e9 / self.speed - (time.perf_counter() - t0_wall)
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._skip_next:
                    self._skip_next = False
                    continue
                if time.perf_counter() >= self._stall_until:
                    broadcast(self._clients, raw.decode().strip())
                    self.sent += 1
        self._log.info("feed_server.replay_finished", sent=self.sent)

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
            broadcast(self._clients, frames[i % len(frames)])

    def skip_sequence(self) -> None:
        """Drop the next Binance diff: clients see a sequence gap and must resync."""
        self._skip_next = True

    def send_raw(self, frame: str | bytes) -> None:
        """Broadcast one frame as is."""
        broadcast(self._clients, frame)
