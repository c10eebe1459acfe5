"""Sans-I/O FIX 4.4 session layer (initiator and acceptor) and the order messages we use.

Pure: no sockets, no files, no clock. The I/O shell feeds received bytes and the time in,
persists ``SessionOutput.persist`` (the sequence numbers) and then writes ``SessionOutput.send``.
The rules are FIX 4.4 session-level recovery as QuickFIX's acceptance suite tests it
(``../shared/docs/reliability-tests.md`` section 1.4):

- framing is checked before anything is read: BodyLength(9) must point at the trailer and
  CheckSum(10) must match; a garbled message gets a Reject (35=3, RefTagID 9 or 10) and does not
  consume its sequence number, so the next message shows a gap and the peer's resend brings it
  back intact; bytes before ``8=FIX`` are skipped;
- every field of a message we act on is typed: a bad value (``LastQty=abc``, ``nan``, ``inf``,
  a negative quantity, ``NewSeqNo=abc``) or a missing required tag is a Reject with RefSeqNum,
  RefTagID and SessionRejectReason; the message's number is consumed and nothing is applied;
- a wrong BeginString, a wrong CompID or a first message that is not a Logon: Logout and
  disconnect (the counterparty is not the one configured); a missing or wrong password, where
  one is required, the same;
- sequence numbers start at 1 and persist across reconnects (the shell saves them);
- inbound number too high: ResendRequest ``7=<expected> 16=0``; later messages are ignored
  until the gap is filled (the peer resends them), so each is processed once, in order; a
  ResendRequest inside the gap is answered at once (both sides can have a gap);
- inbound number too low without PossDupFlag: Logout and disconnect; with PossDupFlag=Y:
  ignored, or a Reject ``373=1`` without OrigSendingTime(122), the number not incremented;
- SequenceReset-GapFill moves the inbound number on; SequenceReset-Reset sets it (a lower
  NewSeqNo is a Reject ``373=5``); Logon with ResetSeqNumFlag(141)=Y restarts both at 1;
- a ResendRequest from the peer: admin messages are gap-filled, never resent; the order sender
  gap-fills its orders too (never resent stale: an order in doubt is resolved by a status
  request), while a venue (``resend_app=True``) resends its execution reports with
  PossDupFlag=Y and OrigSendingTime, so no fill is lost to a dropped connection;
- heartbeat: ours after ``heartbeat_s`` of our silence, however chatty the peer; a TestRequest
  after ``heartbeat_s * 1.2`` of the peer's silence; a disconnect if that goes unanswered for
  another ``heartbeat_s``. An acceptor uses the HeartBtInt(108) of the initiator's Logon.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simplefix

from agent.model import (
    ChildOrder,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderEvent,
    OrderFilled,
    OrderPendingCancel,
    OrderPendingReplace,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderStatus,
    ReplaceRequested,
    Side,
)

__all__ = [
    "BEGIN_STRING",
    "FixSession",
    "PeerReject",
    "SeqNumbers",
    "SessionOutput",
    "SessionState",
    "execution_report_events",
    "fix_side",
    "new_order_single",
    "order_cancel_request",
    "order_status_request",
    "parse_utc_timestamp",
]

SOH = b"\x01"
BEGIN_STRING = "FIX.4.4"
_MAX_FRAME = 1 << 20  # bytes of one message, at most; beyond that the stream is garbage
_MAX_REFS = 1 << 16  # sent application messages remembered for tying a Reject to an order
_TRAILER = re.compile(rb"\x0110=(\d{3})\x01")
_TS = re.compile(r"^(\d{8})-(\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}|\d{6}|\d{9}))?$")
# Every MsgType of QuickFIX's FIX44.xml: anything else is an invalid MsgType (373=11).
_FIX44_TYPES = frozenset(
    [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "A",
        "AA",
        "AB",
        "AC",
        "AD",
        "AE",
        "AF",
        "AG",
        "AH",
        "AI",
        "AJ",
        "AK",
        "AL",
        "AM",
        "AN",
        "AO",
        "AP",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AV",
        "AW",
        "AX",
        "AY",
        "AZ",
        "B",
        "BA",
        "BB",
        "BC",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "C",
        "D",
        "E",
        "F",
        "G",
        "H",
        "J",
        "K",
        "L",
        "M",
        "N",
        "P",
        "Q",
        "R",
        "S",
        "T",
        "V",
        "W",
        "X",
        "Y",
        "Z",
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
        "g",
        "h",
        "i",
        "j",
        "k",
        "l",
        "m",
        "n",
        "o",
        "p",
        "q",
        "r",
        "s",
        "t",
        "u",
        "v",
        "w",
        "x",
        "y",
        "z",
    ]
)
_ADMIN_TYPES = frozenset("012345A")


class SessionState(enum.StrEnum):
    """Where the session is."""

    DISCONNECTED = "disconnected"
    LOGON_SENT = "logon_sent"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"


class RejectReason(enum.IntEnum):
    """SessionRejectReason(373) values we send."""

    INVALID_TAG = 0
    REQUIRED_TAG_MISSING = 1
    UNDEFINED_TAG = 3
    TAG_WITHOUT_VALUE = 4
    VALUE_INCORRECT = 5
    INCORRECT_FORMAT = 6
    COMPID_PROBLEM = 9
    INVALID_MSGTYPE = 11
    OUT_OF_ORDER = 14


@dataclass(slots=True)
class SeqNumbers:
    """Next outgoing and expected incoming sequence numbers (the shell persists them)."""

    next_out: int = 1
    next_in: int = 1


@dataclass(frozen=True, slots=True)
class PeerReject:
    """The peer refused one of our messages at the session level (35=3).

    Attributes:
        ref_seq: RefSeqNum(45): the number of our message.
        ref_msg_type: MsgType of our message ("" when we no longer remember it).
        client_order_id: ClOrdID of the order the message concerns ("" when none): for a
            cancel or status request, the OrigClOrdID / ClOrdID of the child.
        reason: The peer's Text(58), RefTagID(371) and SessionRejectReason(373), in words.
    """

    ref_seq: int
    ref_msg_type: str
    client_order_id: str
    reason: str


@dataclass(slots=True)
class SessionOutput:
    """What the shell must do after feeding the session, in this order.

    Attributes:
        persist: Sequence numbers to save before anything is sent (None: unchanged).
        send: Encoded messages to write, in order.
        app: Application messages received and validated, in sequence order, each once.
        events: Session events for the logs (``gap_detected:2-4``, ``reject_sent:...``).
        rejected: Our messages the peer rejected at the session level.
        disconnect: Close the connection after sending.
        warnings: Events among ``events`` a human should see (logged at warning or above).
    """

    persist: SeqNumbers | None = None
    send: list[bytes] = field(default_factory=list)
    app: list[simplefix.FixMessage] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    rejected: list[PeerReject] = field(default_factory=list)
    disconnect: bool = False
    warnings: list[str] = field(default_factory=list)


def _ts(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def parse_utc_timestamp(s: str) -> int | None:
    """Return a FIX UTCTimestamp (seconds, milli-, micro- or nanoseconds optional) in ns.

    None when ``s`` is not one (the caller rejects the message).
    """
    m = _TS.match(s)
    if m is None:
        return None
    day, hh, mm, ss, frac = m.groups()
    try:
        dt = datetime.strptime(f"{day}{hh}{mm}{ss}", "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    if int(ss) > 60:
        return None
    sub = int((frac or "0").ljust(9, "0"))
    return int(dt.timestamp()) * 1_000_000_000 + sub


def _get(msg: simplefix.FixMessage, tag: int) -> str | None:
    v = msg.get(tag)
    return None if v is None else v.decode(errors="replace")


# -- typed fields -----------------------------------------------------------------------------
class _FieldError(Exception):
    def __init__(self, tag: int, reason: RejectReason, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.reason = reason
        self.text = text


Check = Callable[[str], bool]


def _is_int(v: str) -> bool:
    return v.isascii() and v.isdigit() and len(v) < 19


def _is_seq(v: str) -> bool:
    return _is_int(v) and int(v) >= 0


def _num(v: str) -> float | None:
    # FIX floats: optional sign, digits, optional point; never exponents, nan or inf.
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", v):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _is_qty(v: str) -> bool:
    x = _num(v)
    return x is not None and x >= 0


def _is_pos_qty(v: str) -> bool:
    x = _num(v)
    return x is not None and x > 0


def _is_px(v: str) -> bool:
    return _num(v) is not None


def _is_ts(v: str) -> bool:
    return parse_utc_timestamp(v) is not None


def _is_bool(v: str) -> bool:
    return v in ("Y", "N")


def _is_str(v: str) -> bool:
    return bool(v)


def _one_of(*values: str) -> Check:
    allowed = frozenset(values)
    return lambda v: v in allowed


INT, SEQ, QTY, POS_QTY, PX, TS, BOOL, STR = (
    _is_int,
    _is_seq,
    _is_qty,
    _is_pos_qty,
    _is_px,
    _is_ts,
    _is_bool,
    _is_str,
)
_FORMAT_CHECKS = {_is_int, _is_seq, _is_qty, _is_pos_qty, _is_px, _is_ts, _is_bool}

# MsgType -> (required tags, optional tags we read), each tag -> its check.
Schema = dict[str, tuple[dict[int, Check], dict[int, Check]]]
_HEADER: dict[int, Check] = {49: STR, 56: STR, 34: SEQ, 52: TS}
_HEADER_OPT: dict[int, Check] = {43: BOOL, 97: BOOL, 122: TS}
ADMIN_SCHEMA: Schema = {
    "0": ({}, {112: STR}),
    "1": ({112: STR}, {}),
    "2": ({7: SEQ, 16: SEQ}, {}),
    "3": ({45: SEQ}, {371: INT, 372: STR, 373: INT, 58: STR}),
    "4": ({36: SEQ}, {123: BOOL}),
    "5": ({}, {58: STR}),
    "A": ({98: _one_of("0"), 108: INT}, {141: BOOL, 554: STR}),
}
_EXEC_TYPES = _one_of(*"0345678ABCDEFGHI9")
_ORD_STATUSES = _one_of(*"012346789ABCDE")
_SIDES = _one_of(*"123456789ABCDEFG")
# What the order sender receives (FIX 4.4 required fields of each, and what we read).
INITIATOR_SCHEMA: Schema = {
    "8": (
        {
            37: STR,
            17: STR,
            150: _EXEC_TYPES,
            39: _ORD_STATUSES,
            54: _SIDES,
            151: QTY,
            14: QTY,
            6: PX,
        },
        {11: STR, 32: QTY, 31: PX, 58: STR, 103: INT, 41: STR, 38: QTY, 44: PX},
    ),
    "9": (
        {37: STR, 11: STR, 41: STR, 39: _ORD_STATUSES, 434: _one_of("1", "2")},
        {102: INT, 58: STR},
    ),
    "j": ({372: STR, 380: INT}, {45: SEQ, 379: STR, 58: STR}),
}
# What a venue receives.
ACCEPTOR_SCHEMA: Schema = {
    "D": (
        {11: STR, 55: STR, 54: _SIDES, 60: TS, 38: POS_QTY, 40: STR},
        {44: PX, 59: STR},
    ),
    "F": ({41: STR, 11: STR, 54: _SIDES, 55: STR, 60: TS}, {38: QTY}),
    "G": (
        {41: STR, 11: STR, 54: _SIDES, 55: STR, 60: TS, 38: POS_QTY, 40: STR},
        {44: PX, 59: STR},
    ),
    "H": ({11: STR, 54: _SIDES, 55: STR}, {}),
    "j": ({372: STR, 380: INT}, {45: SEQ, 379: STR, 58: STR}),
}


def _check_fields(msg: simplefix.FixMessage, req: dict[int, Check], opt: dict[int, Check]) -> None:
    for tag, ok in req.items():
        v = _get(msg, tag)
        if v is None:
            raise _FieldError(tag, RejectReason.REQUIRED_TAG_MISSING, f"required tag {tag} missing")
        if v == "":
            raise _FieldError(tag, RejectReason.TAG_WITHOUT_VALUE, f"tag {tag} has no value")
        if not ok(v):
            reason = (
                RejectReason.INCORRECT_FORMAT
                if ok in _FORMAT_CHECKS
                else RejectReason.VALUE_INCORRECT
            )
            raise _FieldError(tag, reason, f"tag {tag} has a bad value {v[:32]!r}")
    for tag, ok in opt.items():
        v = _get(msg, tag)
        if v is not None and not ok(v):
            reason = (
                RejectReason.INCORRECT_FORMAT
                if ok in _FORMAT_CHECKS
                else RejectReason.VALUE_INCORRECT
            )
            raise _FieldError(tag, reason, f"tag {tag} has a bad value {v[:32]!r}")


# -- framing ----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Frame:
    msg: simplefix.FixMessage | None  # None: garbled (bad BodyLength, CheckSum or field)
    bad_tag: int = 0  # 9 (BodyLength), 10 (CheckSum) or the malformed tag
    text: str = ""
    seq: int | None = None  # MsgSeqNum, when it could be read
    msg_type: str = ""


class _Framer:
    """Cut a byte stream into FIX messages, verifying BodyLength and CheckSum."""

    def __init__(self) -> None:
        self.buf = b""
        self.skipped = 0  # garbage bytes dropped since the last call

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> _Frame | None:
        b = self.buf
        start = b.find(b"8=FIX")
        if start < 0:
            keep = min(len(b), 4)  # a "8=FI" split across reads
            self.skipped += len(b) - keep
            self.buf = b[len(b) - keep :]
            return None
        if start > 0:
            self.skipped += start
            b = self.buf = b[start:]
        e1 = b.find(SOH)
        if e1 < 0:
            return self._wait_or_drop()
        if b[e1 + 1 : e1 + 3] != b"9=":
            if len(b) < e1 + 3:
                return None
            return self._drop_to_next(9, "BodyLength(9) is not the second field")
        e2 = b.find(SOH, e1 + 1)
        if e2 < 0:
            return self._wait_or_drop()
        length_s = b[e1 + 3 : e2]
        body_at = e2 + 1
        declared = int(length_s) if length_s.isdigit() and len(length_s) < 9 else -1
        end = body_at + declared
        if declared >= 0 and len(b) >= end + 7:
            m = _TRAILER.match(b, end - 1) if end > 0 else None
            if m is not None and m.start() == end - 1:
                return self._frame(b[: end + 7], end, int(m.group(1)))
        # The declared length does not land on a trailer: find the real one.
        m = _TRAILER.search(b, body_at - 1)
        if m is None:
            return self._wait_or_drop()
        raw = b[: m.end()]
        self.buf = b[m.end() :]
        f = _fields_of(raw)
        return _Frame(None, 9, "BodyLength(9) does not match the message", f[0], f[1])

    def _frame(self, raw: bytes, end: int, checksum: int) -> _Frame:
        self.buf = self.buf[len(raw) :]
        seq, mtype = _fields_of(raw)
        if sum(raw[:end]) % 256 != checksum:
            return _Frame(None, 10, "CheckSum(10) does not match the message", seq, mtype)
        msg = simplefix.FixMessage()
        for part in raw[:-1].split(SOH):
            tag_s, eq, value = part.partition(b"=")
            if not eq or not tag_s.isdigit() or tag_s.startswith(b"0"):
                return _Frame(None, 0, f"malformed field {part[:32]!r} (not tag=value)", seq, mtype)
            msg.append_pair(int(tag_s), value)
        return _Frame(msg, seq=seq, msg_type=mtype)

    def _wait_or_drop(self) -> _Frame | None:
        if len(self.buf) <= _MAX_FRAME:
            return None
        return self._drop_to_next(9, "no trailer within 1 MiB")

    def _drop_to_next(self, tag: int, text: str) -> _Frame:
        nxt = self.buf.find(b"8=FIX", 1)
        raw = self.buf if nxt < 0 else self.buf[:nxt]
        self.buf = b"" if nxt < 0 else self.buf[nxt:]
        seq, mtype = _fields_of(raw)
        return _Frame(None, tag, text, seq, mtype)


def _fields_of(raw: bytes) -> tuple[int | None, str]:
    """Best-effort MsgSeqNum and MsgType of a garbled message (for the Reject)."""
    seq: int | None = None
    mtype = ""
    for part in raw.split(SOH):
        if part.startswith(b"34=") and part[3:].isdigit() and len(part) < 22:
            seq = int(part[3:])
        elif part.startswith(b"35="):
            mtype = part[3:].decode(errors="replace")
    return seq, mtype


# -- the session ------------------------------------------------------------------------------
class FixSession:
    """FIX 4.4 session state machine, initiator (order sender) or acceptor (venue).

    Args:
        sender: Our SenderCompID(49).
        target: The peer's CompID (its SenderCompID, our TargetCompID(56)).
        heartbeat_s: HeartBtInt(108), seconds (an acceptor takes the initiator's).
        seq: Sequence numbers to start from (loaded by the shell).
        acceptor: Answer Logons instead of sending one.
        resend_app: Resend our application messages on a ResendRequest (a venue's reports).
        password: Where set (acceptor), a Logon must carry this Password(554).
        schema: Application messages accepted, with their typed fields; others get a
            BusinessMessageReject (valid FIX 4.4 type) or a session Reject (invalid type).
    """

    def __init__(
        self,
        sender: str,
        target: str,
        heartbeat_s: int,
        seq: SeqNumbers | None = None,
        *,
        acceptor: bool = False,
        resend_app: bool = False,
        password: str | None = None,
        schema: Schema | None = None,
    ) -> None:
        self.acceptor = acceptor
        self.resend_app = resend_app
        self._sent: dict[int, tuple[str, list[tuple[int, bytes]], str]] = {}
        self._refs: dict[int, tuple[str, str]] = {}  # our seq -> (MsgType, ClOrdID)
        self.sender = sender
        self.target = target
        self.heartbeat_s = heartbeat_s
        self.seq = seq if seq is not None else SeqNumbers()
        self.password = password
        self.schema = (
            schema if schema is not None else (ACCEPTOR_SCHEMA if acceptor else INITIATOR_SCHEMA)
        )
        self.state = SessionState.DISCONNECTED
        self._framer = _Framer()
        self._gap_from: int | None = None
        self._gap_until = 0
        self._last_sent_ns = 0
        self._last_recv_ns = 0
        self._test_req_ns: int | None = None
        self._saved = (self.seq.next_out, self.seq.next_in)

    # -- encoding ------------------------------------------------------------------------------
    def _msg(self, msg_type: str, now_ns: int, seq: int | None = None) -> simplefix.FixMessage:
        m = simplefix.FixMessage()
        m.append_pair(8, BEGIN_STRING, header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        if seq is None:
            seq = self.seq.next_out
            self.seq.next_out += 1
        m.append_pair(34, seq, header=True)
        m.append_pair(52, _ts(now_ns), header=True)
        return m

    def _out(self, out: SessionOutput, m: simplefix.FixMessage, now_ns: int) -> None:
        out.send.append(m.encode())
        self._last_sent_ns = now_ns

    def _done(self, out: SessionOutput) -> SessionOutput:
        now = (self.seq.next_out, self.seq.next_in)
        if now != self._saved:
            out.persist = SeqNumbers(*now)
            self._saved = now
        return out

    def _reject(
        self,
        out: SessionOutput,
        now_ns: int,
        ref_seq: int,
        reason: RejectReason,
        text: str,
        *,
        ref_tag: int | None = None,
        ref_type: str = "",
    ) -> None:
        rj = self._msg("3", now_ns)
        rj.append_pair(45, ref_seq)
        if ref_tag:
            rj.append_pair(371, ref_tag)
        if ref_type and ref_type in _FIX44_TYPES:
            rj.append_pair(372, ref_type)
        rj.append_pair(373, int(reason))
        rj.append_pair(58, text)
        self._out(out, rj, now_ns)
        ev = f"reject_sent:{ref_seq}:{ref_tag or ''}:{text}"
        out.events.append(ev)
        out.warnings.append(ev)

    def _fatal(self, out: SessionOutput, now_ns: int, event: str, text: str) -> None:
        lo = self._msg("5", now_ns)
        lo.append_pair(58, text)
        self._out(out, lo, now_ns)
        self.state = SessionState.LOGOUT_SENT
        out.events.append(f"{event}:{text}")
        out.warnings.append(f"{event}:{text}")
        out.disconnect = True

    # -- commands ------------------------------------------------------------------------------
    def logon(
        self, now_ns: int, password: str | None = None, *, reset: bool = False
    ) -> SessionOutput:
        """Start a session on a fresh connection (initiator).

        ``reset``: send ResetSeqNumFlag(141)=Y and start both numbers again at 1.
        """
        out = SessionOutput()
        self._framer = _Framer()
        if reset:
            self.seq.next_out = self.seq.next_in = 1
            self._sent.clear()
        m = self._msg("A", now_ns)
        m.append_pair(98, 0)
        m.append_pair(108, self.heartbeat_s)
        if reset:
            m.append_pair(141, "Y")
        if password is not None:
            m.append_pair(554, password)  # the shell must never log this message
        self._out(out, m, now_ns)
        self.state = SessionState.LOGON_SENT
        self._last_recv_ns = now_ns
        return self._done(out)

    def send_app(self, msg: simplefix.FixMessage, msg_type: str, now_ns: int) -> SessionOutput:
        """Stamp an application message with the session header and the next number."""
        out = SessionOutput()
        seq = self.seq.next_out
        m = self._msg(msg_type, now_ns)
        for tag, value in msg.pairs:
            m.append_pair(tag, value)
        if self.resend_app:
            self._sent[seq] = (msg_type, list(msg.pairs), _ts(now_ns))
        ref = _get(msg, 41) or _get(msg, 11) or ""
        self._refs[seq] = (msg_type, ref)
        if len(self._refs) > _MAX_REFS:
            del self._refs[next(iter(self._refs))]
        self._out(out, m, now_ns)
        return self._done(out)

    def sent_ref(self, seq: int) -> tuple[str, str] | None:
        """Return (MsgType, ClOrdID) of the application message we sent as ``seq``."""
        return self._refs.get(seq)

    def logout(self, now_ns: int, text: str = "") -> SessionOutput:
        """Ask the peer to end the session."""
        out = SessionOutput()
        m = self._msg("5", now_ns)
        if text:
            m.append_pair(58, text)
        self._out(out, m, now_ns)
        self.state = SessionState.LOGOUT_SENT
        return self._done(out)

    def on_connect(self, now_ns: int) -> None:
        """A connection was accepted (acceptor side): wait for the peer's Logon."""
        self._framer = _Framer()
        self.state = SessionState.DISCONNECTED
        self._last_recv_ns = now_ns

    def on_disconnect(self) -> None:
        """The connection dropped: numbers are kept for the next logon."""
        self.state = SessionState.DISCONNECTED
        self._gap_from = None
        self._gap_until = 0
        self._test_req_ns = None

    # -- time ----------------------------------------------------------------------------------
    def next_timer_ns(self) -> int:
        """Return when ``on_timer`` has something to do next (heartbeat or TestRequest due)."""
        hb = self.heartbeat_s * 1_000_000_000
        if self._test_req_ns is not None:
            return self._test_req_ns + hb
        return min(self._last_sent_ns + hb, self._last_recv_ns + int(hb * 1.2))

    def on_timer(self, now_ns: int) -> SessionOutput:
        """Heartbeat, TestRequest, or give up on a silent peer."""
        out = SessionOutput()
        if self.state not in (SessionState.ACTIVE, SessionState.LOGON_SENT):
            return out
        hb = self.heartbeat_s * 1_000_000_000
        if self._test_req_ns is not None and now_ns - self._test_req_ns >= hb:
            out.events.append("peer_silent")
            out.warnings.append("peer_silent")
            out.disconnect = True
            return out
        if self.state is not SessionState.ACTIVE:
            return out
        if self._test_req_ns is None and now_ns - self._last_recv_ns >= int(hb * 1.2):
            m = self._msg("1", now_ns)
            m.append_pair(112, f"TEST-{now_ns}")
            self._out(out, m, now_ns)
            self._test_req_ns = now_ns
            out.events.append("test_request_sent")
        elif now_ns - self._last_sent_ns >= hb:
            self._out(out, self._msg("0", now_ns), now_ns)
        return self._done(out)

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, data: bytes, now_ns: int) -> SessionOutput:
        """Feed received bytes; return what to persist and send, and the application messages."""
        out = SessionOutput()
        self._framer.feed(data)
        while not out.disconnect:
            frame = self._framer.next()
            if self._framer.skipped:
                ev = f"garbage_skipped:{self._framer.skipped}"
                out.events.append(ev)
                out.warnings.append(ev)
                self._framer.skipped = 0
            if frame is None:
                break
            self._last_recv_ns = now_ns
            self._test_req_ns = None
            if frame.msg is None:
                self._garbled(frame, now_ns, out)
            else:
                self._one(frame.msg, now_ns, out)
        return self._done(out)

    def _garbled(self, frame: _Frame, now_ns: int, out: SessionOutput) -> None:
        # Not processed and its number not consumed: the next message shows a gap and the
        # peer's resend brings this one back intact.
        if frame.seq is None or self.state is not SessionState.ACTIVE:
            ev = f"garbled_ignored:{frame.text}"
            out.events.append(ev)
            out.warnings.append(ev)
            return
        reason = (
            RejectReason.VALUE_INCORRECT if frame.bad_tag in (9, 10) else (RejectReason.INVALID_TAG)
        )
        self._reject(
            out,
            now_ns,
            frame.seq,
            reason,
            frame.text,
            ref_tag=frame.bad_tag or None,
            ref_type=frame.msg_type,
        )

    def _one(self, msg: simplefix.FixMessage, now_ns: int, out: SessionOutput) -> None:
        pairs = msg.pairs
        mtype = _get(msg, 35) or ""
        if len(pairs) < 3 or pairs[2][0] != b"35" or not mtype:
            out.events.append("no_msgtype_ignored")
            out.warnings.append("no_msgtype_ignored")
            return
        if _get(msg, 8) != BEGIN_STRING:
            self._fatal(out, now_ns, "bad_begin_string", f"BeginString must be {BEGIN_STRING}")
            return
        seq_s = _get(msg, 34)
        if seq_s is None or not _is_seq(seq_s):
            self._fatal(out, now_ns, "bad_msgseqnum", "MsgSeqNum(34) missing or not a number")
            return
        seq = int(seq_s)
        if _get(msg, 49) != self.target or _get(msg, 56) != self.sender:
            self._reject(
                out,
                now_ns,
                seq,
                RejectReason.COMPID_PROBLEM,
                f"CompIDs must be 49={self.target} 56={self.sender}",
                ref_tag=49 if _get(msg, 49) != self.target else 56,
                ref_type=mtype,
            )
            self._fatal(out, now_ns, "compid_mismatch", "wrong SenderCompID or TargetCompID")
            return
        if self.state in (SessionState.DISCONNECTED, SessionState.LOGON_SENT) and mtype != "A":
            # Before Logon nothing is processed (not even a Logout's numbers).
            self._fatal(out, now_ns, "not_logged_on", f"first message must be a Logon, got {mtype}")
            return
        if mtype == "A" and _get(msg, 141) == "Y" and self.state is not SessionState.ACTIVE:
            self.seq.next_in = 1
            if self.acceptor:
                self.seq.next_out = 1
                self._sent.clear()
        try:
            _check_fields(msg, _HEADER, _HEADER_OPT)
        except _FieldError as e:
            if seq == self.seq.next_in:
                self.seq.next_in += 1  # a rejected message consumes its number
            self._reject(out, now_ns, seq, e.reason, e.text, ref_tag=e.tag, ref_type=mtype)
            return
        expected = self.seq.next_in
        poss_dup = _get(msg, 43) == "Y"
        if mtype == "4" and _get(msg, 123) != "Y":  # SequenceReset-Reset: seq is ignored
            new_s = _get(msg, 36)
            if new_s is None or not _is_seq(new_s):
                self._reject(
                    out,
                    now_ns,
                    seq,
                    RejectReason.INCORRECT_FORMAT,
                    "NewSeqNo(36) missing or not a number",
                    ref_tag=36,
                    ref_type="4",
                )
                return
            new = int(new_s)
            if new < expected:
                self._reject(
                    out,
                    now_ns,
                    seq,
                    RejectReason.VALUE_INCORRECT,
                    f"NewSeqNo {new} below the expected {expected}",
                    ref_tag=36,
                    ref_type="4",
                )
                return
            self.seq.next_in = new
            self._gap_from = None
            out.events.append("sequence_reset")
            return
        if seq > expected:
            self._gap_until = max(self._gap_until, seq)
            # A Logon ahead of what we expect still logs on; the gap is asked for after it.
            if (
                mtype == "A"
                and self.state is not SessionState.ACTIVE
                and not self._logon(msg, seq, now_ns, out)
            ):
                return
            if mtype == "2" and self.state is SessionState.ACTIVE:
                # Both sides may have a gap: answer theirs now, then ask for ours.
                self._admin_or_app("2", msg, seq, now_ns, out)
            if self._gap_from is None:
                self._gap_from = expected
                r = self._msg("2", now_ns)
                r.append_pair(7, expected)
                r.append_pair(16, 0)
                self._out(out, r, now_ns)
                out.events.append(f"gap_detected:{expected}-{seq - 1}")
            return
        if seq < expected:
            if not poss_dup:
                self._fatal(
                    out,
                    now_ns,
                    "seq_too_low",
                    f"MsgSeqNum too low, expecting {expected} but received {seq}",
                )
            elif _get(msg, 122) is None:
                self._reject(
                    out,
                    now_ns,
                    seq,
                    RejectReason.REQUIRED_TAG_MISSING,
                    "PossDupFlag=Y without OrigSendingTime",
                    ref_tag=122,
                    ref_type=mtype,
                )
            else:
                out.events.append("possdup_ignored")
            return
        # seq == expected: consumed whatever follows (a Reject consumes it too)
        self.seq.next_in = expected + 1
        if self._gap_from is not None and self.seq.next_in > self._gap_until:
            self._gap_from = None
        self._admin_or_app(mtype, msg, seq, now_ns, out)

    def _logon(self, msg: simplefix.FixMessage, seq: int, now_ns: int, out: SessionOutput) -> bool:
        """Check a Logon and, as an acceptor, answer it; False when the session is refused."""
        try:
            _check_fields(msg, *ADMIN_SCHEMA["A"])
        except _FieldError as e:
            self._fatal(out, now_ns, "logon_refused", e.text)
            return False
        if self.password is not None and _get(msg, 554) != self.password:
            self._fatal(out, now_ns, "logon_refused", "Password(554) missing or wrong")
            return False
        if self.acceptor and self.state is not SessionState.ACTIVE:
            hb = int(_get(msg, 108) or self.heartbeat_s)
            if hb > 0:
                self.heartbeat_s = hb  # the initiator's interval is the session's
            reply = self._msg("A", now_ns)
            reply.append_pair(98, 0)
            reply.append_pair(108, self.heartbeat_s)
            if _get(msg, 141) == "Y":
                reply.append_pair(141, "Y")
            self._out(out, reply, now_ns)
        self.state = SessionState.ACTIVE
        out.events.append("logon")
        return True

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
            gf.append_pair(36, nxt if nxt <= end else self.seq.next_out)
            self._out(out, gf, now_ns)
            seq = nxt
        out.events.append(f"resend_answered:{begin}-{end}")

    def _admin_or_app(
        self, mtype: str, msg: simplefix.FixMessage, seq: int, now_ns: int, out: SessionOutput
    ) -> None:
        if mtype in _ADMIN_TYPES or mtype == "4":
            if mtype == "A":
                if self.state is not SessionState.ACTIVE:
                    self._logon(msg, seq, now_ns, out)
                return
            try:
                _check_fields(msg, *ADMIN_SCHEMA[mtype])
            except _FieldError as e:
                self._reject(out, now_ns, seq, e.reason, e.text, ref_tag=e.tag, ref_type=mtype)
                return
            self._admin(mtype, msg, now_ns, out)
            return
        if mtype not in _FIX44_TYPES:
            self._reject(
                out,
                now_ns,
                seq,
                RejectReason.INVALID_MSGTYPE,
                f"invalid MsgType {mtype[:8]!r}",
                ref_tag=35,
            )
            return
        spec = self.schema.get(mtype)
        if spec is None:
            # A valid FIX 4.4 message we do not support: application-level refusal.
            bj = self._msg("j", now_ns)
            bj.append_pair(45, seq)
            bj.append_pair(372, mtype)
            bj.append_pair(380, 3)  # unsupported message type
            bj.append_pair(58, f"MsgType {mtype} is not supported")
            self._out(out, bj, now_ns)
            ev = f"business_reject_sent:{seq}:{mtype}"
            out.events.append(ev)
            out.warnings.append(ev)
            return
        try:
            _check_fields(msg, *spec)
            if mtype == "8" and _get(msg, 150) in ("F",):
                _check_fields(msg, {32: POS_QTY, 31: PX}, {})
            if mtype == "D" and _get(msg, 40) == "2":
                _check_fields(msg, {44: PX}, {})
        except _FieldError as e:
            self._reject(out, now_ns, seq, e.reason, e.text, ref_tag=e.tag, ref_type=mtype)
            return
        out.app.append(msg)

    def _admin(
        self, mtype: str, msg: simplefix.FixMessage, now_ns: int, out: SessionOutput
    ) -> None:
        if mtype == "0" or mtype == "4":
            if mtype == "4":  # GapFill (Reset is handled before the number checks)
                new = int(_get(msg, 36) or 0)
                self.seq.next_in = max(self.seq.next_in, new)
                if self._gap_from is not None and self.seq.next_in > self._gap_until:
                    self._gap_from = None
        elif mtype == "1":
            hb = self._msg("0", now_ns)
            hb.append_pair(112, _get(msg, 112) or "")
            self._out(out, hb, now_ns)
        elif mtype == "2":
            begin = int(_get(msg, 7) or 1)
            end = int(_get(msg, 16) or 0) or self.seq.next_out - 1
            self._answer_resend(begin, min(end, self.seq.next_out - 1), now_ns, out)
        elif mtype == "5":
            if self.state is not SessionState.LOGOUT_SENT:
                lo = self._msg("5", now_ns)
                self._out(out, lo, now_ns)
            out.events.append("logout")
            out.disconnect = True
        elif mtype == "3":
            ref = int(_get(msg, 45) or 0)
            sent = self._refs.get(ref, ("", ""))
            why = _get(msg, 58) or ""
            tag = _get(msg, 371)
            code = _get(msg, 373)
            reason = " ".join(
                x
                for x in (
                    why,
                    f"RefTagID={tag}" if tag else "",
                    f"SessionRejectReason={code}" if code else "",
                )
                if x
            )
            out.rejected.append(PeerReject(ref, sent[0], sent[1], reason))
            ev = f"reject_received:{ref}:{reason}"
            out.events.append(ev)
            out.warnings.append(ev)


# -- application messages ---------------------------------------------------------------------
def fix_side(side: Side) -> int:
    """Return Side(54): 1 buy, 2 sell."""
    return 1 if side is Side.BUY else 2


def new_order_single(
    order: ChildOrder, now_ns: int, *, poss_resend: bool = False
) -> simplefix.FixMessage:
    """Return the body of a NewOrderSingle(35=D): a limit order, TimeInForce(59) from its
    ``tif`` (3 immediate-or-cancel, 0 day, 1 good till cancel)."""
    m = simplefix.FixMessage()
    m.append_pair(11, order.client_order_id)
    m.append_pair(55, order.symbol)
    m.append_pair(54, fix_side(order.side))
    m.append_pair(60, _ts(now_ns))
    m.append_pair(38, f"{order.qty:.0f}")
    m.append_pair(40, 2)  # limit
    m.append_pair(44, f"{order.limit_px:.6f}")
    m.append_pair(59, _TIF[order.tif])
    if poss_resend:
        m.append_pair(97, "Y")
    return m


def order_cancel_request(
    client_order_id: str, cancel_id: str, symbol: str, side: Side, qty: float, now_ns: int
) -> simplefix.FixMessage:
    """Return the body of an OrderCancelRequest(35=F) for a child (FIX 4.4 required fields)."""
    m = simplefix.FixMessage()
    m.append_pair(41, client_order_id)
    m.append_pair(11, cancel_id)
    m.append_pair(55, symbol)
    m.append_pair(54, fix_side(side))
    m.append_pair(60, _ts(now_ns))
    m.append_pair(38, f"{qty:.0f}")
    return m


_TIF = {"ioc": 3, "day": 0, "gtc": 1}


def order_cancel_replace_request(
    request: ReplaceRequested, symbol: str, side: Side, tif: str, now_ns: int
) -> simplefix.FixMessage:
    """Return the body of an OrderCancelReplaceRequest(35=G): the order's new total quantity
    (fills included, FIX 4.4 OrderQty) and limit price under a new ClOrdID."""
    m = simplefix.FixMessage()
    m.append_pair(41, request.client_order_id)
    m.append_pair(11, request.new_client_order_id)
    m.append_pair(55, symbol)
    m.append_pair(54, fix_side(side))
    m.append_pair(60, _ts(now_ns))
    m.append_pair(38, f"{request.qty:.0f}")
    m.append_pair(40, 2)  # limit
    m.append_pair(44, f"{request.limit_px:.6f}")
    m.append_pair(59, _TIF.get(tif, 0))
    return m


def cancel_reject_event(msg: simplefix.FixMessage, now_ns: int) -> OrderEvent:
    """Map a validated OrderCancelReject(35=9): CxlRejResponseTo(434) 2 refuses a replace, 1 a
    cancel; the order named by OrigClOrdID(41) stands as it was."""
    why = _get(msg, 58) or f"CxlRejReason={_get(msg, 102) or '?'}"
    coid = _get(msg, 41) or ""
    if _get(msg, 434) == "2":
        return OrderReplaceRejected(coid, now_ns, why)
    return OrderCancelRejected(coid, now_ns, why)


def order_status_request(client_order_id: str, symbol: str, side: Side) -> simplefix.FixMessage:
    """Return the body of an OrderStatusRequest(35=H) for a child."""
    m = simplefix.FixMessage()
    m.append_pair(11, client_order_id)
    m.append_pair(55, symbol)
    m.append_pair(54, fix_side(side))
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


def _float(msg: simplefix.FixMessage, tag: int) -> float:
    v = _get(msg, tag)
    x = _num(v) if v is not None else None
    return 0.0 if x is None else x


def execution_report_events(msg: simplefix.FixMessage, now_ns: int) -> list[OrderEvent]:
    """Map a validated ExecutionReport(35=8) onto order events (ExecID keeps fills idempotent).

    ``150=I`` (order status, the answer to a status query) becomes an ``OrderStatus`` with the
    venue's CumQty and AvgPx; unknown exec types carry no event. A fill with a quantity that
    is not a finite number above 0 carries none either (the session has rejected it already).
    """
    if _get(msg, 35) not in (None, "8"):
        return []
    coid = _get(msg, 11) or ""
    exec_type = _get(msg, 150)
    text = _get(msg, 58) or ""
    if exec_type == "0":
        return [OrderAccepted(coid, now_ns)]
    if exec_type == "F":
        qty = _float(msg, 32)
        px = _float(msg, 31)
        if not qty > 0:
            return []
        return [OrderFilled(coid, _get(msg, 17) or f"{coid}-?", qty, px, now_ns)]
    orig = _get(msg, 41) or coid
    if exec_type == "5":  # replaced: the order goes by its new ClOrdID from now on
        return [
            OrderReplaced(
                orig, now_ns, _float(msg, 38), _float(msg, 44), coid if coid != orig else ""
            )
        ]
    if exec_type == "6":
        return [OrderPendingCancel(orig, now_ns)]
    if exec_type == "E":
        return [OrderPendingReplace(orig, now_ns)]
    if exec_type in ("4", "C"):
        why = text or ("expired" if exec_type == "C" else "")
        cum = _float(msg, 14) if _get(msg, 14) is not None else None
        return [OrderCancelled(orig, now_ns, why, cum, _float(msg, 6))]
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
                _float(msg, 14),
                _float(msg, 6),
                text,
            )
        ]
    return []
