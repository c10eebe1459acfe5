"""FIX 4.4 broker adapter (initiator): the asyncio shell around ``fix_session.FixSession``.

``FixBroker`` implements ``Broker``: it connects over TCP (TLS with certificate checking when
configured), logs on, sends NewOrderSingle for each child (IOC limit at the collar) and turns
ExecutionReports into order events. It persists what the pure session says to persist (the
sequence numbers, before each write) and the symbol and side of each child it sent (so a
cancel or status request after a restart carries the Side(54) FIX 4.4 requires). It
reconnects with backoff after a drop (the venue's resend fills the gap); a child whose submit
fails while disconnected raises ``BrokerUnavailable`` (the daemon keeps it in doubt, never
re-sends it as new). The password comes from the environment (``password_env``) or a file
and is never logged. Each NewOrderSingle is logged once written (``broker.order_sent``: ClOrdID,
MsgSeqNum and ``written_ns``, the wall time right after the transport write).

Rejects of every kind reach the daemon tied to the child's ClOrdID and are logged at warning:
an ExecutionReport 150=8, a session Reject (35=3) or a BusinessMessageReject (35=j) of a
NewOrderSingle become ``OrderRejected``; a rejected cancel (35=9, or 35=3/35=j of a 35=F) is
escalated to a status request, whose answer (``OrderStatus``) settles the child. A rejected
cancel/replace (35=9 with 434=2, or 35=3/35=j of a 35=G) becomes ``OrderReplaceRejected``: the
order stands as it was. Resting children go out with their TimeInForce (59=0 day, 1 GTC);
35=G carries a new ClOrdID and its reports (150=5 replaced, 6 pending cancel, E pending
replace, 4 cancelled) name the order by OrigClOrdID(41).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import simplefix
import structlog

from agent.brokers.base import check_sendable
from agent.brokers.fix_session import (
    FixSession,
    PeerReject,
    SeqNumbers,
    SessionOutput,
    SessionState,
    _get,
    cancel_reject_event,
    execution_report_events,
    new_order_single,
    order_cancel_replace_request,
    order_cancel_request,
    order_status_request,
)
from agent.errors import BrokerRejected, BrokerUnavailable, ConfigError
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderEvent,
    OrderRejected,
    OrderReplaceRejected,
    OrderStatus,
    ReplaceRequested,
    Side,
)

if TYPE_CHECKING:
    from agent.config import BrokerConfig

__all__ = ["FixBroker", "OrderRefs", "SeqStore", "is_loopback"]


def _wait_s(session: FixSession) -> float:
    # Read until the session's next heartbeat or TestRequest is due (at most 1 s).
    if session.state is not SessionState.ACTIVE:
        return 1.0
    return max(0.001, min(1.0, (session.next_timer_ns() - time.time_ns()) / 1e9))


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback addresses (clear text is fine there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class SeqStore:
    """The file that keeps a session's sequence numbers across restarts.

    ``save()`` writes atomically (temp file, fsync, rename), so a crash leaves the old or the
    new numbers, never a torn file.
    """

    path: Path | None = None

    def load(self) -> SeqNumbers:
        """Return the numbers saved (1 and 1 when there is no file)."""
        if self.path is None or not self.path.exists():
            return SeqNumbers()
        try:
            d = json.loads(self.path.read_text())
            return SeqNumbers(int(d["next_out"]), int(d["next_in"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{self.path}: FIX sequence store is unreadable ({e}); fix or remove it "
                "(a removed store starts again at 1 and the venue will see numbers too low)"
            ) from e

    def save(self, seq: SeqNumbers | None) -> None:
        """Persist the numbers (no-op without a path or without a change)."""
        if self.path is None or seq is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"next_out": seq.next_out, "next_in": seq.next_in}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class OrderRefs:
    """Symbol, side and quantity of every child sent, by ClOrdID (JSON lines next to the store).

    A cancel or status request needs them (FIX 4.4 requires Side and Instrument), also for a
    child sent before a restart.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.orders: dict[str, tuple[str, Side, float]] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    d = json.loads(line)
                    self.orders[d["id"]] = (d["symbol"], Side(d["side"]), float(d["qty"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a crash: that child was never sent
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._f = open(path, "a") if path is not None else None  # noqa: SIM115

    def add(self, order: ChildOrder) -> None:
        """Record a child before it is sent."""
        self.orders[order.client_order_id] = (order.symbol, order.side, order.qty)
        if self._f is not None:
            rec = {"id": order.client_order_id, "symbol": order.symbol, "side": str(order.side)}
            self._f.write(json.dumps(rec | {"qty": order.qty}) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())  # durable before the order can reach the wire

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()
            self._f = None


class FixBroker:
    """Broker over a FIX 4.4 session.

    Args:
        host, port: The venue's acceptor.
        sender, target: SenderCompID and TargetCompID (the venue's Logon must carry them
            mirrored, or the session is refused).
        heartbeat_s: HeartBtInt.
        store_path: File of the persisted sequence numbers (None: in memory).
        password_env: Environment variable holding the logon password (optional).
        password_file: File holding it (optional; wins over the environment).
        tls: Connect over TLS, checking the venue's certificate and host name.
        tls_ca_file: CA bundle to check it with (None: the system's).
        allow_insecure: Allow clear text to a host that is not loopback.
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
        tls: bool = False,
        tls_ca_file: Path | None = None,
        allow_insecure: bool = False,
        name: str = "fix",
    ) -> None:
        if not tls and not allow_insecure and not is_loopback(host):
            raise ConfigError(
                f"broker.host: clear-text FIX to {host} (set broker.tls = true, or "
                "broker.allow_insecure = true to accept it)"
            )
        self.name = name
        self.host = host
        self.port = port
        self.store = SeqStore(store_path)
        self.refs = OrderRefs(
            store_path.with_suffix(".orders.jsonl") if store_path is not None else None
        )
        self.session = FixSession(sender, target, heartbeat_s, self.store.load())
        self._replacing: dict[str, str] = {}  # 35=G ClOrdID -> the order's id when sent
        self._password = os.environ.get(password_env) if password_env else None
        if password_file is not None:
            self._password = Path(password_file).read_text().strip()
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl.create_default_context(
                cafile=str(tls_ca_file) if tls_ca_file is not None else None
            )
        self.reconnect_max_s = reconnect_max_s
        self._writer: asyncio.StreamWriter | None = None
        self._queue: asyncio.Queue[OrderEvent | None] = asyncio.Queue()
        self._active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = False  # logged out: wait for the reply, do not reconnect
        self._attempt = 0
        self._log = structlog.get_logger().bind(broker=name, venue=f"{host}:{port}")

    @classmethod
    def from_config(cls, b: BrokerConfig) -> FixBroker:
        """Build the adapter from ``[broker]``."""
        return cls(
            b.host,
            b.port,
            b.sender_comp_id,
            b.target_comp_id,
            heartbeat_s=b.heartbeat_s,
            store_path=b.store_path,
            password_env=b.password_env,
            password_file=b.password_file,
            tls=b.tls,
            tls_ca_file=b.tls_ca_file,
            allow_insecure=b.allow_insecure,
        )

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

    async def _write(self, out: SessionOutput) -> int | None:
        """Send what the session numbered; return the wall time (ns) right after the transport
        write (clear text: the bytes are in the kernel's socket buffer), None if not connected."""
        # The numbers are durable before a message that uses them leaves.
        self.store.save(out.persist)
        if self._writer is None:
            return None
        for raw in out.send:
            self._writer.write(raw)
        written_ns = time.time_ns()
        await self._writer.drain()
        return written_ns

    async def _run(self) -> None:
        self._attempt = 0
        while not self._closed:
            try:
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
            except (OSError, ssl.SSLError) as e:
                self._log.warning("broker.connect_failed", error=str(e))
            else:
                self._writer = writer
                self._log.info("broker.connected", tls=self._ssl is not None)
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
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
            if self._closed or self._closing:
                return
            self._attempt += 1
            delay = random.uniform(0, min(self.reconnect_max_s, 0.05 * 2**self._attempt))
            self._log.info("broker.reconnect_scheduled", delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(_wait_s(self.session)):
                    data = await reader.read(65536)
            except TimeoutError:
                out = self.session.on_timer(self._now())
            else:
                if not data:
                    return
                out = self.session.receive(data, self._now())
                # our own heartbeat is due whatever the peer sends
                timer = self.session.on_timer(self._now())
                out.send += timer.send
                out.persist = timer.persist or out.persist
                out.events += timer.events
                out.warnings += timer.warnings
                out.disconnect = out.disconnect or timer.disconnect
            self._log_events(out)
            if self.session.state is SessionState.ACTIVE:
                self._active.set()
                self._attempt = 0  # the backoff starts again only after a real logon
            # What the session numbered goes out first: a request sent while handling a
            # reject below takes the next number and must follow it on the wire.
            await self._write(out)
            for rj in out.rejected:
                await self._on_peer_reject(rj)
            for msg in out.app:
                await self._on_app(msg)
            if out.disconnect:
                return

    def _log_events(self, out: SessionOutput) -> None:
        for ev in out.events:
            if ev in out.warnings:
                level = (
                    "error" if ev.startswith(("compid_mismatch", "logon_refused")) else "warning"
                )
                self._log.log(30 if level == "warning" else 40, "broker.session_warning", detail=ev)
            else:
                self._log.info("broker.session_event", detail=ev)

    # -- rejects ---------------------------------------------------------------------------
    def _reject_order(self, coid: str, reason: str, source: str) -> None:
        self._log.warning(
            "broker.order_rejected", client_order_id=coid, reason=reason, source=source
        )
        self._queue.put_nowait(OrderRejected(coid, self._now(), reason))

    def _reject_replace(self, coid: str, reason: str, source: str) -> None:
        """A replace the peer refused at the session level: the order stands as it was. The
        reject names the replace's new ClOrdID; the event names the order's current one."""
        orig = self._replacing.pop(coid, coid)
        self._log.warning(
            "broker.replace_rejected", client_order_id=orig, reason=reason, source=source
        )
        self._queue.put_nowait(OrderReplaceRejected(orig, self._now(), reason))

    async def _escalate_cancel(self, coid: str, reason: str, source: str) -> None:
        """A cancel was refused: ask the child's status, whose answer settles it."""
        self._log.warning(
            "broker.cancel_rejected", client_order_id=coid, reason=reason, source=source
        )
        if coid in self.refs.orders:
            with contextlib.suppress(BrokerUnavailable):
                await self.request_status(coid)

    async def _on_peer_reject(self, rj: PeerReject) -> None:
        reason = f"session reject: {rj.reason}"
        if rj.ref_msg_type == "D" and rj.client_order_id:
            self._reject_order(rj.client_order_id, reason, "35=3")
        elif rj.ref_msg_type == "F" and rj.client_order_id:
            await self._escalate_cancel(rj.client_order_id, reason, "35=3")
        elif rj.ref_msg_type == "G" and rj.client_order_id:
            self._reject_replace(rj.client_order_id, reason, "35=3")
        else:
            self._log.warning(
                "broker.request_rejected",
                client_order_id=rj.client_order_id or None,
                msg_type=rj.ref_msg_type or None,
                ref_seq=rj.ref_seq,
                reason=reason,
                source="35=3",
            )

    async def _on_app(self, msg: simplefix.FixMessage) -> None:
        mtype = _get(msg, 35)
        if mtype == "8":
            for e in execution_report_events(msg, self._now()):
                if isinstance(e, OrderRejected):
                    self._log.warning(
                        "broker.order_rejected",
                        client_order_id=e.client_order_id,
                        reason=e.reason,
                        source="35=8",
                    )
                self._queue.put_nowait(e)
        elif mtype == "9" and _get(msg, 434) == "2":
            # A refused replace: the order stands as it was (a fill may have raced it).
            ev = cancel_reject_event(msg, self._now())
            self._log.warning(
                "broker.replace_rejected", client_order_id=ev.client_order_id, source="35=9"
            )
            self._queue.put_nowait(ev)
        elif mtype == "9":
            why = _get(msg, 58) or f"CxlRejReason={_get(msg, 102) or '?'}"
            await self._escalate_cancel(
                _get(msg, 41) or "", f"{why} (OrdStatus={_get(msg, 39)})", "35=9"
            )
        elif mtype == "j":
            ref_type = _get(msg, 372) or ""
            ref_seq = _get(msg, 45)
            coid = _get(msg, 379) or ""
            sent = self.session.sent_ref(int(ref_seq)) if ref_seq else None
            if sent is not None and not coid:
                coid = sent[1]
            reason = f"business reject {_get(msg, 380)}: {_get(msg, 58) or ''}".rstrip(": ")
            if ref_type == "D" and coid:
                self._reject_order(coid, reason, "35=j")
            elif ref_type == "F" and coid:
                await self._escalate_cancel(coid, reason, "35=j")
            elif ref_type == "G" and coid:
                self._reject_replace(coid, reason, "35=j")
            else:
                self._log.warning(
                    "broker.request_rejected",
                    client_order_id=coid or None,
                    msg_type=ref_type,
                    reason=reason,
                    source="35=j",
                )

    # -- orders ----------------------------------------------------------------------------
    async def submit(self, order: ChildOrder) -> None:
        """Send a NewOrderSingle; ``BrokerUnavailable`` if the session is not active,
        ``BrokerRejected`` (nothing sent) if the wire format would alter the order."""
        check_sendable(order, ("ioc", "day", "gtc"))
        self._check_active()
        self.refs.add(order)
        seq = self.session.seq.next_out
        written_ns = await self._send(new_order_single(order, order.ts_created_ns), "D")
        # When the order reached the socket, by ClOrdID (what bench/bench_live.py times).
        self._log.info(
            "broker.order_sent",
            client_order_id=order.client_order_id,
            msg_seq_num=seq,
            written_ns=written_ns,
        )

    def _check_active(self) -> None:
        if self._writer is None or self.session.state is not SessionState.ACTIVE:
            raise BrokerUnavailable(f"FIX session to {self.host}:{self.port} is not active")

    async def _send(self, body: simplefix.FixMessage, msg_type: str) -> int | None:
        self._check_active()
        return await self._write(self.session.send_app(body, msg_type, self._now()))

    def _ref(self, client_order_id: str) -> tuple[str, Side, float] | None:
        """Return the child's symbol, side and quantity; None when it was never sent.

        Every child is in the record (durable) before its NewOrderSingle can leave, so a child
        missing from it never reached the venue (the daemon died between its intent and the
        send): the adapter answers for the venue with status ``unknown``, and the shares go
        back to the plan.
        """
        ref = self.refs.orders.get(client_order_id)
        if ref is None:
            reason = "never sent on this FIX session (not in its order record)"
            self._log.warning(
                "broker.order_never_sent", client_order_id=client_order_id, reason=reason
            )
            self._queue.put_nowait(
                OrderStatus(client_order_id, self._now(), "unknown", 0.0, 0.0, reason)
            )
        return ref

    async def cancel(self, client_order_id: str, ts_ns: int | None = None) -> None:
        """Send an OrderCancelRequest (35=F) for what is left of a child (TransactTime: ``ts_ns``,
        the request's time, else now)."""
        ref = self._ref(client_order_id)
        if ref is None:
            return
        symbol, side, qty = ref
        now = self._now() if ts_ns is None else ts_ns
        cancel_id = f"{client_order_id}-C{now % 10**9}"
        await self._send(
            order_cancel_request(client_order_id, cancel_id, symbol, side, qty, now), "F"
        )

    async def replace(self, request: ReplaceRequested) -> None:
        """Send an OrderCancelReplaceRequest (35=G): new total quantity and price under the
        request's new ClOrdID (recorded first, so a report naming it after a restart is ours)."""
        coid = request.client_order_id
        ref = self._ref(coid)
        if ref is None:
            return
        symbol, side, _qty = ref
        new = request.new_client_order_id
        if not new or new == coid:
            raise BrokerRejected(f"replace of {coid}: FIX 35=G needs a new ClOrdID", "no_new_id")
        self.refs.add(
            ChildOrder(
                new, "", symbol, side, request.qty, request.limit_px, request.ts_event_ns, "day"
            )
        )
        self._replacing[new] = coid
        # TransactTime is the request's own time, as 35=D carries the child's: a replay venue
        # executes it on the book in force then.
        body = order_cancel_replace_request(request, symbol, side, "day", request.ts_event_ns)
        await self._send(body, "G")

    async def cancel_request(self, request: CancelRequested) -> None:
        """Send a recorded cancel request (35=F at the request's time)."""
        await self.cancel(request.client_order_id, request.ts_event_ns)

    async def request_status(self, client_order_id: str) -> None:
        """Send an OrderStatusRequest (35=H); the answer arrives as an ExecutionReport 150=I."""
        ref = self._ref(client_order_id)
        if ref is None:
            return
        symbol, side, _qty = ref
        await self._send(order_status_request(client_order_id, symbol, side), "H")

    async def events(self) -> AsyncIterator[OrderEvent]:
        """Yield order events until ``aclose``."""
        while True:
            e = await self._queue.get()
            if e is None:
                return
            yield e

    async def aclose(self) -> None:
        """Log out, stop and end the event stream."""
        self._closing = True
        if self._writer is not None and self.session.state is SessionState.ACTIVE:
            with contextlib.suppress(OSError):
                await self._write(self.session.logout(self._now()))
            if self._task is not None:  # read the peer's Logout, so its number is not a gap
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), 1.0)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.refs.close()
        self._queue.put_nowait(None)
