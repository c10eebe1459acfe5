"""Sans-I/O FIX 4.4 session layer (initiator) and the order messages we use (pure).

No sockets and no clock here: the async adapter feeds received bytes and the time in, and
writes out what ``SessionOutput`` says. The rules follow FIX 4.4 session-level recovery as
QuickFIX's acceptance suite tests it (``../shared/docs/reliability-tests.md`` section 1.4):

- sequence numbers start at 1 and persist across reconnects (``SeqStore``);
- inbound number too high: ResendRequest ``7=<expected> 16=0``; later messages are ignored
  until the gap is filled (the peer resends them), so each is processed once, in order;
- inbound number too low without PossDupFlag: Logout and disconnect (a serious error);
  with PossDupFlag=Y: ignored, or a session Reject ``373=1`` without OrigSendingTime(122),
  the inbound number not incremented;
- SequenceReset-GapFill moves the inbound number on; SequenceReset-Reset sets it;
- a ResendRequest from the peer: admin messages are gap-filled (SequenceReset-GapFill), never
  resent; the order sender gap-fills its orders too (never resent stale: an order in doubt is
  resolved at the application level, by status request, never re-sent as new), while a venue
  (``resend_app=True``) resends its execution reports with PossDupFlag=Y and OrigSendingTime,
  so no fill is lost to a dropped connection;
- heartbeat: a Heartbeat after ``heartbeat_s`` of our silence; a TestRequest after
  ``heartbeat_s * 1.2`` of the peer's; a disconnect if that goes unanswered for another
  ``heartbeat_s``.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import simplefix

from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Side,
)

__all__ = [
    "FixSession",
    "SeqStore",
    "SessionOutput",
    "SessionState",
    "execution_report_events",
    "new_order_single",
]

SOH = b"\x01"


class SessionState(enum.StrEnum):
    """Where the session is."""

    DISCONNECTED = "disconnected"
    LOGON_SENT = "logon_sent"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"


@dataclass(slots=True)
class SeqStore:
    """Next outgoing and expected incoming sequence numbers, optionally persisted to a file.

    ``save()`` writes atomically (temp file, fsync, rename), so a crash leaves the old or the
    new numbers, never a torn file.
    """

    next_out: int = 1
    next_in: int = 1
    path: Path | None = None

    @staticmethod
    def load(path: Path) -> SeqStore:
        """Return the numbers saved at ``path`` (1 and 1 when the file does not exist)."""
        if not path.exists():
            return SeqStore(path=path)
        d = json.loads(path.read_text())
        return SeqStore(int(d["next_out"]), int(d["next_in"]), path)

    def save(self) -> None:
        """Persist the numbers (no-op without a path)."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"next_out": self.next_out, "next_in": self.next_in}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass(slots=True)
class SessionOutput:
    """What the adapter must do after feeding the session.

    Attributes:
        send: Encoded messages to write, in order.
        app: Application messages received, in sequence order, each once.
        events: Session events for the logs (``gap_detected``, ``seq_too_low``, ...).
        disconnect: Close the connection after sending.
    """

    send: list[bytes] = field(default_factory=list)
    app: list[simplefix.FixMessage] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    disconnect: bool = False


def _ts(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def _get(msg: simplefix.FixMessage, tag: int) -> str | None:
    v = msg.get(tag)
    return None if v is None else v.decode()


class FixSession:
    """FIX 4.4 initiator session state machine.

    Args:
        sender: SenderCompID(49).
        target: TargetCompID(56).
        heartbeat_s: HeartBtInt(108), seconds.
        store: Sequence numbers (persisted when it has a path).
    """

    def __init__(
        self,
        sender: str,
        target: str,
        heartbeat_s: int,
        store: SeqStore,
        *,
        acceptor: bool = False,
        resend_app: bool = False,
    ) -> None:
        self.acceptor = acceptor
        # A venue must resend its execution reports (PossDup); an order sender never resends
        # its orders (they would be stale): it gap-fills everything.
        self.resend_app = resend_app
        self._sent: dict[int, tuple[str, list[tuple[int, bytes]], str]] = {}
        self.sender = sender
        self.target = target
        self.heartbeat_s = heartbeat_s
        self.store = store
        self.state = SessionState.DISCONNECTED
        self._parser = simplefix.FixParser()
        self._gap_from: int | None = None  # inbound gap being filled (expected number)
        self._gap_until = 0  # highest number seen while the gap is open
        self._last_sent_ns = 0
        self._last_recv_ns = 0
        self._test_req_ns: int | None = None

    # -- encoding ------------------------------------------------------------------------------
    def _msg(self, msg_type: str, now_ns: int, seq: int | None = None) -> simplefix.FixMessage:
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        if seq is None:
            seq = self.store.next_out
            self.store.next_out += 1
        m.append_pair(34, seq, header=True)
        m.append_pair(52, _ts(now_ns), header=True)
        return m

    def _out(self, out: SessionOutput, m: simplefix.FixMessage, now_ns: int) -> None:
        out.send.append(m.encode())
        self._last_sent_ns = now_ns

    # -- commands ------------------------------------------------------------------------------
    def logon(self, now_ns: int, password: str | None = None) -> SessionOutput:
        """Start a session on a fresh connection."""
        out = SessionOutput()
        self._parser = simplefix.FixParser()
        m = self._msg("A", now_ns)
        m.append_pair(98, 0)
        m.append_pair(108, self.heartbeat_s)
        if password is not None:
            m.append_pair(554, password)  # the adapter must never log this message
        self._out(out, m, now_ns)
        self.state = SessionState.LOGON_SENT
        self._last_recv_ns = now_ns
        self.store.save()
        return out

    def send_app(self, msg: simplefix.FixMessage, msg_type: str, now_ns: int) -> bytes:
        """Stamp an application message with the session header and the next number."""
        seq = self.store.next_out
        m = self._msg(msg_type, now_ns)
        for tag, value in msg.pairs:
            m.append_pair(tag, value)
        if self.resend_app:
            self._sent[seq] = (msg_type, list(msg.pairs), _ts(now_ns))
        self._last_sent_ns = now_ns
        self.store.save()
        return m.encode()

    def logout(self, now_ns: int, text: str = "") -> SessionOutput:
        """Ask the peer to end the session."""
        out = SessionOutput()
        m = self._msg("5", now_ns)
        if text:
            m.append_pair(58, text)
        self._out(out, m, now_ns)
        self.state = SessionState.LOGOUT_SENT
        self.store.save()
        return out

    def on_connect(self, now_ns: int) -> None:
        """A connection was accepted (acceptor side): wait for the peer's Logon."""
        self._parser = simplefix.FixParser()
        self.state = SessionState.DISCONNECTED
        self._last_recv_ns = now_ns

    def on_disconnect(self) -> None:
        """The connection dropped: numbers are kept for the next logon."""
        self.state = SessionState.DISCONNECTED
        self._gap_from = None
        self._gap_until = 0
        self._test_req_ns = None

    # -- time ----------------------------------------------------------------------------------
    def on_timer(self, now_ns: int) -> SessionOutput:
        """Heartbeat, TestRequest, or give up on a silent peer."""
        out = SessionOutput()
        if self.state not in (SessionState.ACTIVE, SessionState.LOGON_SENT):
            return out
        hb = self.heartbeat_s * 1_000_000_000
        if self._test_req_ns is not None and now_ns - self._test_req_ns >= hb:
            out.events.append("peer_silent")
            out.disconnect = True
            return out
        if self._test_req_ns is None and now_ns - self._last_recv_ns >= int(hb * 1.2):
            m = self._msg("1", now_ns)
            m.append_pair(112, f"TEST-{now_ns}")
            self._out(out, m, now_ns)
            self._test_req_ns = now_ns
            out.events.append("test_request_sent")
        elif now_ns - self._last_sent_ns >= hb:
            self._out(out, self._msg("0", now_ns), now_ns)
        self.store.save()
        return out

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, data: bytes, now_ns: int) -> SessionOutput:
        """Feed received bytes; returns what to send and the application messages."""
        out = SessionOutput()
        self._parser.append_buffer(data)
        while True:
            try:
                msg = self._parser.get_message()
            except Exception:
                out.events.append("garbled")
                self._parser = simplefix.FixParser()
                break
            if msg is None:
                break
            self._last_recv_ns = now_ns
            self._test_req_ns = None
            self._one(msg, now_ns, out)
            if out.disconnect:
                break
        self.store.save()
        return out

    def _one(self, msg: simplefix.FixMessage, now_ns: int, out: SessionOutput) -> None:
        mtype = _get(msg, 35) or ""
        seq_s = _get(msg, 34)
        if seq_s is None or not seq_s.isdigit():
            out.events.append("missing_seq")
            return
        seq = int(seq_s)
        expected = self.store.next_in
        poss_dup = _get(msg, 43) == "Y"
        if mtype == "4" and _get(msg, 123) != "Y":  # SequenceReset-Reset
            new = int(_get(msg, 36) or expected)
            if new >= expected:
                self.store.next_in = new
                self._gap_from = None
            out.events.append("sequence_reset")
            return
        if seq > expected:
            self._gap_until = max(self._gap_until, seq)
            if mtype == "A" and self.state is not SessionState.ACTIVE:
                # A Logon ahead of what we expect (our peer's Logout reply was never read, say)
                # still logs on; what lies between is asked for right after it.
                self._admin_or_app(mtype, msg, now_ns, out)
            if self._gap_from is None:
                self._gap_from = expected
                r = self._msg("2", now_ns)
                r.append_pair(7, expected)
                r.append_pair(16, 0)
                self._out(out, r, now_ns)
                out.events.append(f"gap_detected:{expected}-{seq - 1}")
            return  # processed once the gap is filled, from the peer's resend
        if seq < expected:
            if not poss_dup:
                lo = self.logout(
                    now_ns, f"MsgSeqNum too low, expecting {expected} but received {seq}"
                )
                out.send.extend(lo.send)
                out.events.append("seq_too_low")
                out.disconnect = True
            elif _get(msg, 122) is None:
                rj = self._msg("3", now_ns)
                rj.append_pair(45, seq)
                rj.append_pair(373, 1)
                rj.append_pair(58, "PossDupFlag=Y without OrigSendingTime")
                self._out(out, rj, now_ns)
                out.events.append("possdup_no_origsendingtime")
            else:
                out.events.append("possdup_ignored")
            return
        # seq == expected
        if mtype == "4":  # GapFill
            self.store.next_in = max(expected + 1, int(_get(msg, 36) or expected + 1))
        else:
            self.store.next_in = expected + 1
        if self._gap_from is not None and self.store.next_in > self._gap_until:
            self._gap_from = None  # everything seen while the gap was open has arrived
        self._admin_or_app(mtype, msg, now_ns, out)

    def _answer_resend(self, begin: int, end: int, now_ns: int, out: SessionOutput) -> None:
        """Resend stored application messages (PossDup) and gap-fill everything else."""
        seq = begin
        while seq <= end:
            stored = self._sent.get(seq)
            if stored is not None:
                mtype, pairs, orig = stored
                m = self._msg(mtype, now_ns, seq=seq)
                m.append_pair(43, "Y", header=True)
                m.append_pair(122, orig, header=True)
                for tag, value in pairs:
                    m.append_pair(tag, value)
                self._out(out, m, now_ns)
                seq += 1
                continue
            nxt = seq + 1
            while nxt <= end and nxt not in self._sent:
                nxt += 1
            gf = self._msg("4", now_ns, seq=seq)
            gf.append_pair(43, "Y", header=True)
            gf.append_pair(122, _ts(now_ns), header=True)
            gf.append_pair(123, "Y")
            gf.append_pair(36, nxt if nxt <= end else self.store.next_out)
            self._out(out, gf, now_ns)
            seq = nxt
        out.events.append(f"resend_answered:{begin}-{end}")

    def _admin_or_app(
        self, mtype: str, msg: simplefix.FixMessage, now_ns: int, out: SessionOutput
    ) -> None:
        if mtype == "A":
            if self.acceptor and self.state is not SessionState.ACTIVE:
                reply = self._msg("A", now_ns)
                reply.append_pair(98, 0)
                reply.append_pair(108, self.heartbeat_s)
                self._out(out, reply, now_ns)
            self.state = SessionState.ACTIVE
            out.events.append("logon")
        elif mtype == "0" or mtype == "4":
            pass
        elif mtype == "1":
            hb = self._msg("0", now_ns)
            hb.append_pair(112, _get(msg, 112) or "")
            self._out(out, hb, now_ns)
        elif mtype == "2":
            begin = int(_get(msg, 7) or 1)
            end = int(_get(msg, 16) or 0) or self.store.next_out - 1
            self._answer_resend(begin, min(end, self.store.next_out - 1), now_ns, out)
        elif mtype == "5":
            if self.state is not SessionState.LOGOUT_SENT:
                lo = self.logout(now_ns)
                out.send.extend(lo.send)
            out.events.append("logout")
            out.disconnect = True
        elif mtype == "3":
            out.events.append(f"reject:{_get(msg, 58) or ''}")
        else:
            out.app.append(msg)


# -- application messages ---------------------------------------------------------------------
def new_order_single(
    order: ChildOrder, now_ns: int, *, poss_resend: bool = False
) -> simplefix.FixMessage:
    """Return the body of a NewOrderSingle(35=D): an IOC limit order at the collar."""
    m = simplefix.FixMessage()
    m.append_pair(11, order.client_order_id)
    m.append_pair(55, order.symbol)
    m.append_pair(54, 1 if order.side is Side.BUY else 2)
    m.append_pair(38, f"{order.qty:.0f}")
    m.append_pair(40, 2)  # limit
    m.append_pair(44, f"{order.limit_px:.6f}")
    m.append_pair(59, 3)  # immediate or cancel
    m.append_pair(60, _ts(now_ns))
    if poss_resend:
        m.append_pair(97, "Y")
    return m


# OrdStatus (39) -> OrderStatus.status; "8" with "unknown order" text means never seen.
_ORD_STATUS = {
    "0": "working",
    "1": "working",
    "2": "filled",
    "4": "cancelled",
    "C": "cancelled",
    "8": "rejected",
}


def execution_report_events(msg: simplefix.FixMessage, now_ns: int) -> list[OrderEvent]:
    """Map an ExecutionReport(35=8) onto order events (ExecID keeps fills idempotent).

    ``150=I`` (order status, the answer to a status query or a PossResend) becomes an
    ``OrderStatus`` with the venue's CumQty and AvgPx; unknown exec types carry no event.
    """
    if _get(msg, 35) not in (None, "8"):
        return []
    coid = _get(msg, 11) or ""
    exec_type = _get(msg, 150)
    text = _get(msg, 58) or ""
    if exec_type == "0":
        return [OrderAccepted(coid, now_ns)]
    if exec_type in ("F", "1", "2"):
        qty = float(_get(msg, 32) or 0)
        px = float(_get(msg, 31) or 0)
        if qty <= 0:
            return []
        return [OrderFilled(coid, _get(msg, 17) or f"{coid}-?", qty, px, now_ns)]
    if exec_type in ("4", "C"):
        return [OrderCancelled(coid, now_ns, text or ("expired" if exec_type == "C" else ""))]
    if exec_type == "8":
        return [OrderRejected(coid, now_ns, text)]
    if exec_type == "I":
        return [
            OrderStatus(
                coid,
                now_ns,
                "unknown"
                if text == "unknown order"
                else _ORD_STATUS.get(_get(msg, 39) or "", "working"),
                float(_get(msg, 14) or 0),
                float(_get(msg, 6) or 0),
                text,
            )
        ]
    return []
