"""FIX 4.4 broker adapter (initiator): the asyncio shell around ``fix_session.FixSession``.

``FixBroker`` implements ``Broker``: it connects over TCP, logs on, sends NewOrderSingle for
each child (IOC limit at the collar) and turns ExecutionReports into order events. It
reconnects with backoff after a drop (sequence numbers persist, so the venue's resend fills
the gap); a child whose submit fails while disconnected raises ``BrokerUnavailable`` (the daemon
then keeps it in doubt, never re-sends it as new). The password comes from the environment
(``password_env``) and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import simplefix
import structlog

from agent.brokers.fix_session import (
    FixSession,
    SeqStore,
    SessionOutput,
    SessionState,
    _ts,
    execution_report_events,
    new_order_single,
)
from agent.errors import BrokerUnavailable
from agent.model import ChildOrder, OrderEvent

__all__ = ["FixBroker"]


class FixBroker:
    """Broker over a FIX 4.4 session.

    Args:
        host, port: The venue's acceptor.
        sender, target: SenderCompID and TargetCompID.
        heartbeat_s: HeartBtInt.
        store_path: File of the persisted sequence numbers (None: in memory).
        password_env: Environment variable holding the logon password (optional).
        password_file: File holding it (optional; wins over the environment).
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        target: str,
        *,
        heartbeat_s: int = 30,
        store_path: Path | None = None,
        password_env: str | None = None,
        password_file: Path | None = None,
        reconnect_max_s: float = 2.0,
        name: str = "fix",
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        store = SeqStore.load(store_path) if store_path else SeqStore()
        self.session = FixSession(sender, target, heartbeat_s, store)
        self._password = os.environ.get(password_env) if password_env else None
        if password_file is not None:
            self._password = Path(password_file).read_text().strip()
        self.reconnect_max_s = reconnect_max_s
        self._writer: asyncio.StreamWriter | None = None
        self._queue: asyncio.Queue[OrderEvent | None] = asyncio.Queue()
        self._active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._log = structlog.get_logger().bind(broker=name, venue=f"{host}:{port}")

    def _now(self) -> int:
        return time.time_ns()

    @property
    def available(self) -> bool:
        """True while the session is logged on (the daemon gates new orders on it)."""
        return self._writer is not None and self.session.state is SessionState.ACTIVE

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect, log on and wait until the session is active."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fix-broker")
        async with asyncio.timeout(timeout_s):
            await self._active.wait()

    async def _write(self, out: SessionOutput) -> None:
        if self._writer is None:
            return
        for raw in out.send:
            self._writer.write(raw)
        await self._writer.drain()

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as e:
                self._log.warning("broker.connect_failed", error=str(e))
            else:
                self._writer = writer
                attempt = 0
                self._log.info("broker.connected")
                try:
                    await self._write(self.session.logon(self._now(), self._password))
                    await self._session(reader)
                except (OSError, asyncio.IncompleteReadError) as e:
                    self._log.warning("broker.disconnected", error=str(e))
                finally:
                    self._active.clear()
                    self.session.on_disconnect()
                    self._writer = None
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            if self._closed:
                return
            attempt += 1
            delay = random.uniform(0, min(self.reconnect_max_s, 0.05 * 2**attempt))
            self._log.info("broker.reconnect_scheduled", delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(1.0):
                    data = await reader.read(65536)
            except TimeoutError:
                out = self.session.on_timer(self._now())
            else:
                if not data:
                    return
                out = self.session.receive(data, self._now())
            for ev in out.events:
                self._log.info("broker.session_event", detail=ev)
            if self.session.state is SessionState.ACTIVE:
                self._active.set()
            for msg in out.app:
                for e in execution_report_events(msg, self._now()):
                    self._queue.put_nowait(e)
            await self._write(out)
            if out.disconnect:
                return

    async def submit(self, order: ChildOrder) -> None:
        """Send a NewOrderSingle; ``BrokerUnavailable`` if the session is not active."""
        await self._send(new_order_single(order, order.ts_created_ns), "D")

    async def _send(self, body: simplefix.FixMessage, msg_type: str) -> None:
        if self._writer is None or self.session.state is not SessionState.ACTIVE:
            raise BrokerUnavailable(f"FIX session to {self.host}:{self.port} is not active")
        self._writer.write(self.session.send_app(body, msg_type, self._now()))
        await self._writer.drain()

    async def cancel(self, client_order_id: str) -> None:
        """Send an OrderCancelRequest (35=F) for what is left of a child."""
        m = simplefix.FixMessage()
        m.append_pair(41, client_order_id)
        m.append_pair(11, f"{client_order_id}-C{time.time_ns() % 10**9}")
        m.append_pair(60, _ts(self._now()))
        await self._send(m, "F")

    async def request_status(self, client_order_id: str) -> None:
        """Send an OrderStatusRequest (35=H); the answer arrives as an ExecutionReport 150=I."""
        m = simplefix.FixMessage()
        m.append_pair(11, client_order_id)
        await self._send(m, "H")

    async def events(self) -> AsyncIterator[OrderEvent]:
        """Yield order events until ``aclose``."""
        while True:
            e = await self._queue.get()
            if e is None:
                return
            yield e

    async def aclose(self) -> None:
        """Log out, stop and end the event stream."""
        if self._writer is not None and self.session.state is SessionState.ACTIVE:
            with contextlib.suppress(OSError):
                await self._write(self.session.logout(self._now()))
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._queue.put_nowait(None)
