"""Simulated FIX 4.4 venue (acceptor) that matches orders against a replayed book.

``FixVenue`` listens on 127.0.0.1, speaks FIX 4.4 through the same pure session layer as the
broker adapter (acceptor side), and executes each NewOrderSingle as an IOC limit order against
the book in force at its TransactTime(60) plus ``latency_ms``, read from the same MBP-10 file
the feed replays: matching is in step with the feed whatever the pacing. Every
ExecutionReport it sends is appended to ``er_log`` (JSON lines) so tests can compare what the
venue did with what the daemon believes. A ClOrdID seen before is rejected as a duplicate
(OrdRejReason 6) unless PossResend(97)=Y, which gets an order-status report (150=I) instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import simplefix
import structlog

from agent.brokers.fix_session import FixSession, SeqStore
from agent.brokers.matching import match_ioc
from agent.model import Side
from feeds.model import BookBatch
from feeds.readers import read_mbp10
from feeds.validate import validate_batch

__all__ = ["FixVenue"]


@dataclass(slots=True)
class _Order:
    coid: str
    symbol: str
    side: Side
    qty: float
    cum: float = 0.0
    status: str = "0"
    notional: float = 0.0


def _parse_ts(s: str) -> int:
    dt = datetime.strptime(s, "%Y%m%d-%H:%M:%S.%f").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


class FixVenue:
    """A FIX acceptor matching against MBP-10 files.

    Args:
        files: Symbol -> MBP-10 file.
        latency_ms: Delay between TransactTime and execution.
        er_log: JSON-lines file of every ExecutionReport sent (None: not written).
        sender, target: Our SenderCompID and the initiator's (their TargetCompID / ours).
    """

    def __init__(
        self,
        files: dict[str, Path],
        *,
        latency_ms: float = 50.0,
        er_log: Path | None = None,
        sender: str = "VENUE",
        target: str = "AGENT",
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_s: int = 30,
        store_path: Path | None = None,
    ) -> None:
        self.books: dict[str, BookBatch] = {}
        for sym, path in files.items():
            parts, prev = [], None
            for b in read_mbp10(path, symbol=sym):
                res = validate_batch(b, prev)
                prev = res.last_ts_ns
                parts.append(res.valid)
            self.books[sym] = BookBatch.concat(parts)
        self.latency_ns = int(latency_ms * 1e6)
        self.er_log = er_log
        self.host = host
        self._port = port
        store = SeqStore.load(store_path) if store_path else SeqStore()
        self.session = FixSession(
            sender, target, heartbeat_s, store, acceptor=True, resend_app=True
        )
        self.orders: dict[str, _Order] = {}
        # Faults for tests: send every fill report twice (same ExecID, new sequence number);
        # reject every n-th new order (0 = never).
        self.duplicate_fills = False
        self.lose_reports = 0  # the next n reports get a sequence number but are never sent
        self.reject_every = 0
        # every n-th new order executes, but none of its reports is ever sent (nor sequenced):
        # a lost acknowledgement that only a status query can resolve (0 = never)
        self.mute_every = 0
        self.ignore_status = False  # status queries go unanswered
        self.cancel_requests: list[str] = []  # OrigClOrdID of each OrderCancelRequest
        self._muted = False
        self._n_new = 0
        self._exec_n = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._log = structlog.get_logger().bind(component="venue")

    @property
    def port(self) -> int:
        """Return the bound port."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FixVenue:
        """Listen."""
        self._server = await asyncio.start_server(self._client, self.host, self._port)
        self._log.info("venue.listening", port=self.port, symbols=sorted(self.books))
        return self

    async def aclose(self) -> None:
        """Stop listening and drop the connections."""
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FixVenue:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def drop_connections(self) -> None:
        """Abort every TCP connection (a network failure)."""
        for w in list(self._writers):
            w.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.session.on_connect(_now())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                out = self.session.receive(data, _now())
                for raw in out.send:
                    writer.write(raw)
                for msg in out.app:
                    for raw in self._on_app(msg):
                        if not raw:
                            continue
                        if self.lose_reports > 0:  # lost on the wire: the peer sees a gap
                            self.lose_reports -= 1
                            continue
                        writer.write(raw)
                await writer.drain()
                if out.disconnect:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self.session.on_disconnect()
            writer.close()

    # -- application ---------------------------------------------------------------------------
    def _report(self, o: _Order, exec_type: str, **extra: object) -> bytes:
        self._exec_n += 1
        m = simplefix.FixMessage()
        m.append_pair(37, f"V-{o.coid}")
        m.append_pair(11, o.coid)
        m.append_pair(17, f"X{self._exec_n:08d}")
        m.append_pair(150, exec_type)
        m.append_pair(39, o.status)
        if o.symbol:  # an empty field is not FIX (an unknown order has no symbol)
            m.append_pair(55, o.symbol)
        m.append_pair(54, 1 if o.side is Side.BUY else 2)
        m.append_pair(14, f"{o.cum:.0f}")
        m.append_pair(6, f"{o.notional / o.cum if o.cum > 0 else 0.0:.8f}")
        m.append_pair(151, f"{max(o.qty - o.cum, 0) if o.status in '01' else 0:.0f}")
        for tag, v in extra.items():
            m.append_pair(int(tag[1:]), v)
        if self.er_log is not None:
            rec = {
                "client_order_id": o.coid,
                "exec_id": f"X{self._exec_n:08d}",
                "exec_type": exec_type,
                "status": o.status,
                "cum_qty": o.cum,
            }
            if "t32" in extra:
                rec |= {"last_qty": float(extra["t32"]), "last_px": float(extra["t31"])}
            if "t58" in extra:
                rec["text"] = extra["t58"]
            if self._muted:
                rec["muted"] = True
            with open(self.er_log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if self._muted:
            return b""
        return self.session.send_app(m, "8", _now())

    def _on_app(self, msg: simplefix.FixMessage) -> list[bytes]:
        mtype = (msg.get(35) or b"").decode()
        coid = (msg.get(11) or b"").decode()
        if mtype == "H":
            if self.ignore_status:
                return []
            o = self.orders.get(coid)
            if o is None:
                unknown = _Order(coid, "", Side.BUY, 0.0, status="8")
                return [self._report(unknown, "I", t58="unknown order")]
            return [self._report(o, "I")]
        if mtype == "F":  # OrderCancelRequest: IOC orders never rest, so it is always too late
            self.cancel_requests.append((msg.get(41) or b"").decode())
            m = simplefix.FixMessage()
            m.append_pair(11, coid)
            m.append_pair(41, (msg.get(41) or b"").decode())
            m.append_pair(39, self.orders[coid].status if coid in self.orders else "8")
            m.append_pair(102, 1)  # too late to cancel
            m.append_pair(434, 1)
            return [self.session.send_app(m, "9", _now())]
        if mtype != "D":
            return []
        self._muted = bool(self.mute_every) and (self._n_new + 1) % self.mute_every == 0
        try:
            return self._new_order(msg, coid)
        finally:
            self._muted = False

    def _new_order(self, msg: simplefix.FixMessage, coid: str) -> list[bytes]:
        poss_resend = msg.get(97) == b"Y"
        if coid in self.orders:
            o = self.orders[coid]
            if poss_resend:
                return [self._report(o, "I")]
            dup = _Order(coid, o.symbol, o.side, 0.0, status="8")
            return [self._report(dup, "8", t103="6", t58="duplicate ClOrdID")]
        symbol = (msg.get(55) or b"").decode()
        side = Side.BUY if msg.get(54) == b"1" else Side.SELL
        qty = float(msg.get(38) or 0)
        px = float(msg.get(44) or "nan")
        o = _Order(coid, symbol, side, qty)
        self.orders[coid] = o
        self._n_new += 1
        book = self.books.get(symbol)
        if self.reject_every and self._n_new % self.reject_every == 0:
            o.status = "8"
            return [self._report(o, "8", t58="venue refused (test fault)")]
        if book is None or not qty > 0:
            o.status = "8"
            return [self._report(o, "8", t58="unknown symbol or bad quantity")]
        t = _parse_ts((msg.get(60) or b"").decode()) + self.latency_ns
        i = max(int(np.searchsorted(book.ts_event_ns, t, side="right")) - 1, 0)
        bpx, bsz = (
            (book.ask_px[i], book.ask_sz[i])
            if side is Side.BUY
            else (book.bid_px[i], book.bid_sz[i])
        )
        out = [self._report(o, "0")]
        fq, fp = match_ioc(side, qty, px, bpx, bsz)
        for q, p in zip(fq.tolist(), fp.tolist(), strict=True):
            o.cum += q
            o.notional += q * p
            o.status = "2" if o.cum >= o.qty - 1e-9 else "1"
            out.append(self._report(o, "F", t32=f"{q:.0f}", t31=f"{p:.6f}"))
            if self.duplicate_fills:  # same ExecID again, as a venue bug or a replay would
                self._exec_n -= 1
                out.append(self._report(o, "F", t32=f"{q:.0f}", t31=f"{p:.6f}"))
        if o.cum < o.qty - 1e-9:
            o.status = "4"
            out.append(self._report(o, "4", t58="IOC remainder"))
        return out


def _now() -> int:
    return time.time_ns()
