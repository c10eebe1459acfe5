"""Simulated FIX 4.4 venue (acceptor) that matches orders against a replayed book.

``FixVenue`` listens on 127.0.0.1 (TLS when given a server context), speaks FIX 4.4 through
the same pure session layer as the broker adapter (acceptor side: Logon checks, CompIDs,
password where configured, the initiator's HeartBtInt, its own heartbeats, typed fields and
Rejects), and executes each NewOrderSingle as an IOC limit order against the book in force at
its TransactTime(60) plus ``latency_ms``, read from the same MBP-10 file the feed replays.

Application rules: Side must be buy (1) or sell (2), ClOrdID non-empty and never seen before
(OrdRejReason 6), OrdType limit (2) and TimeInForce IOC (3), day (0) or GTC (1) (OrdRejReason
11 otherwise), a known symbol (OrdRejReason 1); a PossDup or PossResend order already seen gets
its status (150=I), never a second execution. A cancel of an IOC gets an OrderCancelReject (too
late, or unknown order) with OrderID, OrdStatus and CxlRejReason.

Resting orders (day, GTC) live in the execution core's ``SimVenue`` with its queue model on the
same rows (the backtest's rules). The venue's market time is the latest TransactTime plus the
latency it received: each request first gives the queue model the rows up to then, so the fills
of a resting order are reported, in time order, when the next request (a replace, a cancel, a
new order) arrives. OrderCancelReplaceRequest (35=G) answers 150=5 under the new ClOrdID (41 the
old), or an OrderCancelReject with CxlRejResponseTo 2 when the order filled meanwhile; a cancel
of a resting order answers 150=4 or, too late, 35=9. A status query, cancel or replace that
names an earlier ClOrdID of a replaced order acts on it under its current one; a replace whose
new ClOrdID was used before is refused (35=9, CxlRejReason 6).

One connection per session at a time; a second one is refused with a Logout. With
``state_dir`` the venue keeps its sequence numbers and its orders there, so a restart neither
refuses the next Logon nor executes an order twice. The queue model's state (where a resting
order stands in its queue) is not kept: a restart of the venue cancels the resting orders it
held, with what had filled and nothing more, and reports each (150=4, "venue restarted: resting
order cancelled") unsolicited once the initiator logs on again. Every ExecutionReport is
appended to ``er_log`` (JSON lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import simplefix
import structlog

from agent.brokers.fix import SeqStore
from agent.brokers.fix_session import (
    FixSession,
    SessionOutput,
    SessionState,
    _get,
    _ts,
    parse_utc_timestamp,
)
from agent.brokers.matching import match_ioc
from agent.core.venue import SimVenue
from agent.model import (
    CancelRequested,
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceRequested,
    Side,
)
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
    rests: bool = False  # day or GTC: lives in the queue model while open
    replaced_by: str = ""  # the ClOrdID a cancel/replace gave the order (it goes by that now)


class FixVenue:
    """A FIX acceptor matching against MBP-10 files.

    Args:
        files: Symbol -> MBP-10 file.
        latency_ms: Delay between TransactTime and execution.
        er_log: JSON-lines file of every ExecutionReport sent (None: not written).
        sender, target: Our SenderCompID and the initiator's (their TargetCompID / ours).
        heartbeat_s: HeartBtInt until the initiator's Logon says otherwise.
        state_dir: Folder of the persisted sequence numbers and orders (None: in memory).
        password: A Logon must carry it (None: no password checked).
        ssl_context: Serve TLS with this server context (None: clear text).
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
        state_dir: Path | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
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
        self._ssl = ssl_context
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = SeqStore(state_dir / "venue-seq.json" if state_dir else None)
        self.session = FixSession(
            sender,
            target,
            heartbeat_s,
            self.store.load(),
            acceptor=True,
            resend_app=True,
            password=password,
        )
        self._sender, self._target, self._hb0 = sender, target, heartbeat_s
        self.orders: dict[str, _Order] = {}
        self._orders_path = state_dir / "venue-orders.jsonl" if state_dir else None
        self._exec_n = 0
        if self._orders_path is not None and self._orders_path.exists():
            for line in self._orders_path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    d = json.loads(line)
                    d["side"] = Side(d["side"])
                    self._exec_n = max(self._exec_n, int(d.pop("exec_n", 0)))
                    self.orders[d["coid"]] = _Order(**d)
        # A restart loses the queue model's state: the resting orders it held are cancelled
        # (nothing more fills), and each gets an unsolicited 150=4 once the initiator logs on.
        self._restart_cancels = [
            o.coid
            for o in self.orders.values()
            if o.rests and not o.replaced_by and o.status in ("0", "1")
        ]
        for coid in self._restart_cancels:
            self.orders[coid].status = "4"
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
        self.refused_connections = 0
        self._muted = False
        self._n_new = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._active: asyncio.StreamWriter | None = None
        self._log = structlog.get_logger().bind(component="venue")
        # Resting orders (TimeInForce 0 day, 1 GTC): the execution core's venue, its queue model
        # on the replayed rows. Market time is the latest TransactTime (+ latency) received:
        # each request first gives it the rows up to then, so fills come out in time order.
        self._sim = SimVenue(0)
        self._sim_pos: dict[str, int] = {}
        self._sim_t: dict[str, int] = {}

    @property
    def port(self) -> int:
        """Return the bound port."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FixVenue:
        """Listen."""
        self._server = await asyncio.start_server(
            self._client, self.host, self._port, ssl=self._ssl
        )
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

    def _log_out(self, out: SessionOutput) -> None:
        for ev in out.events:
            if ev in out.warnings:
                self._log.warning("venue.session_warning", detail=ev)
            else:
                self._log.info("venue.session_event", detail=ev)

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        # The session is in use: answer on a throw-away session, never touch the real one.
        self.refused_connections += 1
        self._log.warning("venue.connection_refused", reason="session already active")
        tmp = FixSession(self._sender, self._target, self._hb0, acceptor=True)
        out = tmp.logout(_now(), "session already logged on from another connection")
        for raw in out.send:
            writer.write(raw)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active is not None:
            await self._refuse(writer)
            return
        self._active = writer
        self._writers.add(writer)
        s = self.session
        s.on_connect(_now())
        try:
            while True:
                try:
                    async with asyncio.timeout(_wait_s(self.session)):
                        data = await reader.read(65536)
                except TimeoutError:
                    out = s.on_timer(_now())
                else:
                    if not data:
                        break
                    out = s.receive(data, _now())
                    timer = s.on_timer(_now())
                    out.send += timer.send
                    out.persist = timer.persist or out.persist
                    out.disconnect = out.disconnect or timer.disconnect
                self._log_out(out)
                sends = list(out.send)
                for msg in out.app:
                    for raw in self._on_app(msg):
                        if not raw:
                            continue
                        if self.lose_reports > 0:  # lost on the wire: the peer sees a gap
                            self.lose_reports -= 1
                            continue
                        sends.append(raw)
                told = bool(self._restart_cancels) and s.state is SessionState.ACTIVE
                if told:
                    sends += self._restart_reports()
                self.store.save(s.seq if out.persist or out.app or told else None)
                for raw in sends:
                    writer.write(raw)
                await writer.drain()
                if out.disconnect:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self._active = None
            s.on_disconnect()
            writer.close()

    # -- application ---------------------------------------------------------------------------
    def _restart_reports(self) -> list[bytes]:
        """The unsolicited 150=4 of the resting orders a restart cancelled (once logged on)."""
        out: list[bytes] = []
        for coid in self._restart_cancels:
            o = self.orders[coid]
            self._log.warning(
                "venue.resting_cancelled_by_restart", client_order_id=coid, cum_qty=o.cum
            )
            out.append(self._report(o, "4", t58="venue restarted: resting order cancelled"))
            self._persist_order(o)
        self._restart_cancels = []
        return out

    def _persist_order(self, o: _Order) -> None:
        if self._orders_path is None:
            return
        with open(self._orders_path, "a") as f:
            f.write(json.dumps(asdict(o) | {"side": str(o.side), "exec_n": self._exec_n}) + "\n")

    def _send(self, body: simplefix.FixMessage, mtype: str) -> bytes:
        return self.session.send_app(body, mtype, _now()).send[0]

    def _report(self, o: _Order, exec_type: str, **extra: object) -> bytes:
        self._exec_n += 1
        m = simplefix.FixMessage()
        m.append_pair(37, f"V-{o.coid}" if o.symbol else "NONE")
        m.append_pair(11, o.coid)
        m.append_pair(17, f"X{self._exec_n:08d}")
        m.append_pair(150, exec_type)
        m.append_pair(39, o.status)
        if o.symbol:  # an empty field is not FIX (an unknown order has no symbol)
            m.append_pair(55, o.symbol)
        m.append_pair(54, 1 if o.side is Side.BUY else 2)
        if o.qty > 0:
            m.append_pair(38, f"{o.qty:.0f}")
        m.append_pair(14, f"{o.cum:.0f}")
        m.append_pair(6, f"{o.notional / o.cum if o.cum > 0 else 0.0:.8f}")
        m.append_pair(151, f"{max(o.qty - o.cum, 0) if o.status in '01' else 0:.0f}")
        for tag, v in extra.items():
            m.append_pair(int(tag[1:]), v)
        m.append_pair(60, _ts(_now()))
        if self.er_log is not None:
            rec = {
                "client_order_id": o.coid,
                "exec_id": f"X{self._exec_n:08d}",
                "exec_type": exec_type,
                "status": o.status,
                "cum_qty": o.cum,
            }
            if "t32" in extra:
                rec |= {"last_qty": float(str(extra["t32"])), "last_px": float(str(extra["t31"]))}
            if "t58" in extra:
                rec["text"] = extra["t58"]
            if "t41" in extra:  # a replace: the order's chain of ClOrdIDs
                rec["orig_client_order_id"] = extra["t41"]
            if self._muted:
                rec["muted"] = True
            with open(self.er_log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if self._muted:
            return b""
        return self._send(m, "8")

    def _on_app(self, msg: simplefix.FixMessage) -> list[bytes]:
        mtype = _get(msg, 35) or ""
        coid = _get(msg, 11) or ""
        side = Side.BUY if _get(msg, 54) == "1" else Side.SELL
        if mtype == "H":
            if self.ignore_status:
                return []
            o = self.orders.get(self._current(coid))
            if o is None:
                unknown = _Order(coid, "", side, 0.0, status="8")
                return [self._report(unknown, "I", t58="unknown order")]
            return [self._report(o, "I")]  # a replaced order answers by its current ClOrdID
        if mtype == "F" and self._sim.may_rest(self._current(_get(msg, 41) or "")):
            orig = self._current(_get(msg, 41) or "")
            self.cancel_requests.append(orig)
            sym = self.orders[orig].symbol
            t = self._market_t(sym, msg)
            self._sim.cancel(CancelRequested(orig, t))
            return self._resting_reports(sym, t, coid)
        if mtype == "G":
            return self._replace(msg, coid)
        if mtype == "F":  # OrderCancelRequest: IOC orders never rest, so it is always too late
            orig = _get(msg, 41) or ""
            self.cancel_requests.append(orig)
            o = self.orders.get(orig)
            m = simplefix.FixMessage()
            m.append_pair(37, f"V-{orig}" if o is not None else "NONE")
            m.append_pair(11, coid)
            m.append_pair(41, orig)
            m.append_pair(39, o.status if o is not None else "8")
            m.append_pair(434, 1)
            m.append_pair(102, 0 if o is not None else 1)  # too late to cancel / unknown order
            m.append_pair(58, "too late to cancel" if o is not None else "unknown order")
            self._log.warning("venue.cancel_rejected", client_order_id=orig)
            return [self._send(m, "9")]
        if mtype != "D":
            return []
        self._muted = bool(self.mute_every) and (self._n_new + 1) % self.mute_every == 0
        try:
            return self._new_order(msg, coid)
        finally:
            self._muted = False

    def _refuse_order(self, coid: str, symbol: str, side: Side, code: int, text: str) -> bytes:
        self._log.warning("venue.order_rejected", client_order_id=coid, reason=text, code=code)
        o = _Order(coid, symbol, side, 0.0, status="8")
        if coid not in self.orders:  # a ClOrdID is used once, refused or not
            self.orders[coid] = o
            self._persist_order(o)
        return self._report(o, "8", t103=str(code), t58=text)

    def _new_order(self, msg: simplefix.FixMessage, coid: str) -> list[bytes]:
        again = _get(msg, 97) == "Y" or _get(msg, 43) == "Y"
        symbol = _get(msg, 55) or ""
        side_s = _get(msg, 54)
        side = Side.BUY if side_s == "1" else Side.SELL
        if coid in self.orders:
            o = self.orders[coid]
            if again:  # a resend of an order we have: its status, never a second execution
                return [self._report(o, "I")]
            return [self._refuse_order(coid, o.symbol, o.side, 6, "duplicate ClOrdID")]
        if side_s not in ("1", "2"):
            return [self._refuse_order(coid, symbol, side, 11, f"unsupported Side {side_s}")]
        if _get(msg, 40) != "2":
            return [self._refuse_order(coid, symbol, side, 11, "only OrdType=2 (limit)")]
        tif = _get(msg, 59) or "0"
        if tif not in ("3", "0", "1"):
            return [self._refuse_order(coid, symbol, side, 11, "TimeInForce 0, 1 or 3 only")]
        book = self.books.get(symbol)
        if book is None:
            return [self._refuse_order(coid, symbol, side, 1, f"unknown symbol {symbol}")]
        if tif != "3":
            return self._rest(msg, coid, symbol, side)
        qty = float(_get(msg, 38) or 0)  # validated by the session: finite, > 0
        px = float(_get(msg, 44) or 0)
        t = parse_utc_timestamp(_get(msg, 60) or "")
        o = _Order(coid, symbol, side, qty)
        self.orders[coid] = o
        self._n_new += 1
        if self.reject_every and self._n_new % self.reject_every == 0:
            o.status = "8"
            self._persist_order(o)
            return [self._report(o, "8", t103="99", t58="venue refused (test fault)")]
        if t is None:  # the session checks TransactTime; never execute without one
            o.status = "8"
            return [self._refuse_order(coid, symbol, side, 99, "bad TransactTime")]
        t += self.latency_ns
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
        self._persist_order(o)
        return out

    # -- resting orders ------------------------------------------------------------------------
    def _market_t(self, symbol: str, msg: simplefix.FixMessage) -> int:
        """Return the request's market time (TransactTime + latency), never before the last."""
        t = parse_utc_timestamp(_get(msg, 60) or "")
        t = (t if t is not None else self._sim_t.get(symbol, 0)) + self.latency_ns
        t = max(t, self._sim_t.get(symbol, 0))
        self._sim_t[symbol] = t
        return t

    def _rest(self, msg: simplefix.FixMessage, coid: str, symbol: str, side: Side) -> list[bytes]:
        qty = float(_get(msg, 38) or 0)
        px = float(_get(msg, 44) or 0)
        o = _Order(coid, symbol, side, qty, rests=True)
        self.orders[coid] = o
        self._n_new += 1
        t = self._market_t(symbol, msg)
        tif: Literal["gtc", "day"] = "gtc" if _get(msg, 59) == "1" else "day"
        out = self._sim.submit(ChildOrder(coid, "", symbol, side, qty, px, t, tif=tif))
        return self._to_fix(out, coid) + self._resting_reports(symbol, t, coid)

    def _current(self, coid: str) -> str:
        """Return the ClOrdID the order known by ``coid`` goes by now (after its replaces)."""
        for _ in range(len(self.orders)):
            o = self.orders.get(coid)
            if o is None or not o.replaced_by:
                break
            coid = o.replaced_by
        return coid

    def _replace(self, msg: simplefix.FixMessage, coid: str) -> list[bytes]:
        orig = self._current(_get(msg, 41) or "")
        o = self.orders.get(orig)
        dup = coid in self.orders or coid == orig  # a ClOrdID is used once, a replace's too
        if o is None or dup or not self._sim.may_rest(orig):
            m = simplefix.FixMessage()
            m.append_pair(37, f"V-{orig}" if o is not None else "NONE")
            m.append_pair(11, coid)
            m.append_pair(41, orig)
            m.append_pair(39, o.status if o is not None else "8")
            m.append_pair(434, 2)
            # CxlRejReason: 1 unknown order, 6 duplicate ClOrdID, 0 too late
            code, why = (1, "unknown order") if o is None else (0, "too late to replace")
            if dup:
                code, why = 6, "duplicate ClOrdID"
            m.append_pair(102, code)
            m.append_pair(58, why)
            if dup:
                self._log.warning("venue.replace_rejected", client_order_id=coid, reason=why)
            return [self._send(m, "9")]
        t = self._market_t(o.symbol, msg)
        req = ReplaceRequested(orig, coid, float(_get(msg, 38) or 0), float(_get(msg, 44) or 0), t)
        return self._to_fix(self._sim.replace(req), coid) + self._resting_reports(o.symbol, t, coid)

    def _resting_reports(self, symbol: str, t: int, request_id: str) -> list[bytes]:
        """Give the core's venue the rows up to ``t``, then what reaches it by ``t``."""
        book = self.books[symbol]
        i = self._sim_pos.get(symbol, 0)
        j = int(np.searchsorted(book.ts_event_ns, t, side="right"))
        events: list[OrderEvent] = []
        if j > i:
            events += self._sim.advance(book.slice(i, j))
            self._sim_pos[symbol] = j
        events += self._sim.release(symbol, t + 1)
        return self._to_fix(events, request_id)

    def _to_fix(self, events: list[OrderEvent], request_id: str) -> list[bytes]:
        """ExecutionReports (and OrderCancelRejects) of the core venue's events."""
        out: list[bytes] = []
        for e in events:
            o = self.orders.get(e.client_order_id)
            if o is None:
                continue
            if isinstance(e, OrderAccepted):
                out.append(self._report(o, "0"))
            elif isinstance(e, OrderFilled):
                o.cum += e.qty
                o.notional += e.qty * e.px
                o.status = "2" if o.cum >= o.qty - 1e-9 else "1"
                out.append(self._report(o, "F", t32=f"{e.qty:.0f}", t31=f"{e.px:.6f}"))
            elif isinstance(e, OrderCancelled):
                o.status = "4"
                out.append(self._report(o, "4", t58=e.reason))
            elif isinstance(e, OrderRejected):
                o.status = "8"
                out.append(self._report(o, "8", t58=e.reason))
            elif isinstance(e, OrderReplaced):
                new = e.new_client_order_id or o.coid
                o2 = _Order(new, o.symbol, o.side, e.qty, o.cum, o.status, o.notional, True)
                self.orders[new] = o2
                if new != o.coid:
                    o.replaced_by = new
                out.append(self._report(o2, "5", t41=o.coid, t44=f"{e.limit_px:.6f}"))
                self._persist_order(o2)
            elif isinstance(e, OrderCancelRejected | OrderReplaceRejected):
                m = simplefix.FixMessage()
                m.append_pair(37, f"V-{o.coid}")
                m.append_pair(11, request_id)
                m.append_pair(41, o.coid)
                m.append_pair(39, o.status)
                m.append_pair(434, 1 if isinstance(e, OrderCancelRejected) else 2)
                m.append_pair(102, 0)
                m.append_pair(58, e.reason or "too late")
                out.append(self._send(m, "9"))
            self._persist_order(o)
        return out


def _now() -> int:
    return time.time_ns()


def _wait_s(session: FixSession) -> float:
    # Read until the session's next heartbeat or TestRequest is due (at most 1 s).
    if session.state is not SessionState.ACTIVE:
        return 1.0
    return max(0.001, min(1.0, (session.next_timer_ns() - time.time_ns()) / 1e9))
