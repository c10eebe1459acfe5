"""A websocket feed server that replays an MBP-10 file to any number of clients (async shell).

It is how live mode is demonstrated and tested: one producer paces the file by event time
times ``speed`` and broadcasts every snapshot (our JSON MBP-10 message, ``feeds.jsonmsg``) to
every connected client, as a real feed does: a client that connects late joins the stream where
it is. Binds to 127.0.0.1 unless told otherwise.

Faults on request, for tests: ``drop_connections()`` aborts every TCP connection,
``stall(seconds)`` sends nothing for a while (the file keeps advancing, as the market does),
``send_garbage(n)`` broadcasts n malformed frames, ``send_raw(frame)`` any frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

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
    ) -> None:
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
        self._clients.add(ws)
        self._log.info("feed_server.client_connected", clients=len(self._clients))
        try:
            await ws.wait_closed()
        finally:
            self._clients.discard(ws)

    async def _produce(self) -> None:
        await asyncio.sleep(self.start_delay_s)
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

    def send_raw(self, frame: str | bytes) -> None:
        """Broadcast one frame as is."""
        broadcast(self._clients, frame)
