"""QuickFIX (the reference FIX engine, ``quickfix-ssl`` wheel) as the counterparty in tests.

``QfAcceptor``: a FIX 4.4 venue on QuickFIX with its stock FIX44.xml and validation on, that
executes each NewOrderSingle by a rule the test picks (fill, partial fills, reject, or mute:
execute without sending a report), answers status requests (150=I with CumQty) and refuses
cancels (35=9). ``QfInitiator``: a QuickFIX order sender. Both count every message QuickFIX
sends and receives, and every session-level Reject (35=3) it sends: our messages it refused.
QuickFIX runs its own threads; callbacks only record and answer.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import quickfix as fix

from tests.conformance.quickfix_dict import FIX44_XML

SOH = "\x01"


def fields(msg: fix.Message) -> dict[int, str]:
    """Return a message's tag -> value map (last wins)."""
    out: dict[int, str] = {}
    for part in msg.toString().split(SOH):
        if "=" in part:
            t, _, v = part.partition("=")
            if t.isdigit():
                out[int(t)] = v
    return out


def settings(
    path: Path,
    *,
    acceptor: bool,
    port: int,
    sender: str,
    target: str,
    hb_s: int = 30,
    extra: str = "",
) -> fix.SessionSettings:
    """Write a QuickFIX settings file (validation on) and load it."""
    role = "acceptor" if acceptor else "initiator"
    conn = (
        f"SocketAcceptPort={port}"
        if acceptor
        else (f"SocketConnectHost=127.0.0.1\nSocketConnectPort={port}\nReconnectInterval=1")
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "qf.cfg").write_text(
        f"""[DEFAULT]
ConnectionType={role}
FileStorePath={path / "store"}
FileLogPath={path / "log"}
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=Y
DataDictionary={FIX44_XML}
ValidateUserDefinedFields=Y
ValidateFieldsHaveValues=Y
ValidateFieldsOutOfOrder=N
CheckLatency=N
PersistMessages=Y
SocketReuseAddress=Y
{conn}
[SESSION]
BeginString=FIX.4.4
SenderCompID={sender}
TargetCompID={target}
HeartBtInt={hb_s}
{extra}
"""
    )
    return fix.SessionSettings(str(path / "qf.cfg"))


@dataclass
class Traffic:
    """What QuickFIX sent and received, by MsgType, and the Rejects it sent."""

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    rejects_sent: list[dict[int, str]] = field(default_factory=list)
    business_rejects_sent: list[dict[int, str]] = field(default_factory=list)
    app_received: list[dict[int, str]] = field(default_factory=list)
    admin_received: list[dict[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Messages exchanged, both directions."""
        return sum(self.sent.values()) + sum(self.received.values())


class _App(fix.Application):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.traffic = Traffic()
        self.logged_on = threading.Event()
        self.logged_out = threading.Event()
        self.session_id: fix.SessionID | None = None
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def _record(self, msg: fix.Message, sent: bool, app: bool) -> dict[int, str]:
        f = fields(msg)
        with self.changed:
            mtype = f.get(35, "?")
            (self.traffic.sent if sent else self.traffic.received)[mtype] += 1
            if sent and mtype == "3":
                self.traffic.rejects_sent.append(f)
            if sent and mtype == "j":
                self.traffic.business_rejects_sent.append(f)
            if not sent:
                (self.traffic.app_received if app else self.traffic.admin_received).append(f)
            self.changed.notify_all()
        return f

    def onCreate(self, sid: fix.SessionID) -> None:
        self.session_id = sid

    def onLogon(self, sid: fix.SessionID) -> None:
        self.logged_out.clear()
        self.logged_on.set()

    def onLogout(self, sid: fix.SessionID) -> None:
        self.logged_on.clear()
        self.logged_out.set()

    def toAdmin(self, msg: fix.Message, sid: fix.SessionID) -> None:
        self._record(msg, True, False)

    def fromAdmin(self, msg: fix.Message, sid: fix.SessionID) -> None:
        self._record(msg, False, False)

    def toApp(self, msg: fix.Message, sid: fix.SessionID) -> None:
        self._record(msg, True, True)

    def fromApp(self, msg: fix.Message, sid: fix.SessionID) -> None:
        f = self._record(msg, False, True)
        self.on_app(f, sid)

    def on_app(self, f: dict[int, str], sid: fix.SessionID) -> None:
        pass

    def wait_for(self, pred, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until ``pred(traffic)`` holds."""
        with self.changed:
            return self.changed.wait_for(lambda: pred(self.traffic), timeout=timeout_s)

    def send(self, pairs: list[tuple[int, str]], mtype: str) -> None:
        m = fix.Message()
        h = m.getHeader()
        h.setField(fix.BeginString("FIX.4.4"))
        h.setField(fix.MsgType(mtype))
        for tag, v in pairs:
            m.setField(tag, str(v))
        assert self.session_id is not None
        fix.Session.sendToTarget(m, self.session_id)

    def qf_session(self) -> fix.Session:
        assert self.session_id is not None
        return fix.Session.lookupSession(self.session_id)


class VenueApp(_App):
    """A QuickFIX venue: ``rule(n, clordid, qty) -> 'fill' | 'partial' | 'reject' | 'mute'``."""

    def __init__(self, rule=None) -> None:
        super().__init__()
        self.rule = rule or (lambda n, coid, qty: "fill")
        self.orders: dict[str, dict[str, float | str]] = {}
        self._exec = 0
        self._n = 0

    def _er(self, o: dict, exec_type: str, sid, last: float = 0.0, text: str = "") -> None:
        self._exec += 1
        pairs = [
            (37, f"Q-{o['id']}"),
            (11, o["id"]),
            (17, f"QX{self._exec}"),
            (150, exec_type),
            (39, o["status"]),
            (55, o["symbol"]),
            (54, o["side"]),
            (151, f"{max(o['qty'] - o['cum'], 0) if o['status'] in '01' else 0:.0f}"),
            (14, f"{o['cum']:.0f}"),
            (6, f"{o['px'] if o['cum'] else 0:.6f}"),
        ]
        if last:
            pairs += [(32, f"{last:.0f}"), (31, f"{o['px']:.6f}")]
        if text:
            pairs.append((58, text))
        self.send(pairs, "8")

    def on_app(self, f: dict[int, str], sid: fix.SessionID) -> None:
        mtype = f[35]
        if mtype == "D":
            self._n += 1
            qty = float(f[38])
            o = {
                "id": f[11],
                "symbol": f[55],
                "side": f[54],
                "qty": qty,
                "cum": 0.0,
                "px": float(f.get(44, "0")),
                "status": "0",
            }
            self.orders[f[11]] = o
            what = self.rule(self._n, f[11], qty)
            if what == "reject":
                o["status"] = "8"
                self._er(o, "8", sid, text="QuickFIX venue refused (test rule)")
                return
            if what == "mute":  # executed, never reported: only a status request tells
                o["cum"], o["status"] = qty, "2"
                return
            self._er(o, "0", sid)
            if what == "partial":
                half = max(100.0, (qty // 200) * 100) if qty > 100 else qty
                o["cum"], o["status"] = half, "1" if half < qty else "2"
                self._er(o, "F", sid, last=half)
                if half < qty:
                    o["cum"], o["status"] = qty, "2"
                    self._er(o, "F", sid, last=qty - half)
            else:
                o["cum"], o["status"] = qty, "2"
                self._er(o, "F", sid, last=qty)
        elif mtype == "H":
            o = self.orders.get(f[11])
            if o is None:
                o = {
                    "id": f[11],
                    "symbol": f[55],
                    "side": f[54],
                    "qty": 0.0,
                    "cum": 0.0,
                    "px": 0.0,
                    "status": "8",
                }
                self._er(o, "I", sid, text="unknown order")
            else:
                self._er(o, "I", sid)
        elif mtype == "F":
            o = self.orders.get(f[41])
            self.send(
                [
                    (37, f"Q-{f[41]}" if o else "NONE"),
                    (11, f[11]),
                    (41, f[41]),
                    (39, o["status"] if o else "8"),
                    (434, "1"),
                    (102, "0" if o else "1"),
                    (58, "too late to cancel" if o else "unknown order"),
                ],
                "9",
            )


class QfEngine:
    """A QuickFIX acceptor or initiator with its application."""

    def __init__(self, app: _App, cfg: fix.SessionSettings, *, acceptor: bool) -> None:
        self.app = app
        self._cfg = cfg  # the C++ engine keeps pointers into these: keep them alive
        self._store = fix.FileStoreFactory(cfg)
        self._log = fix.FileLogFactory(cfg)
        cls = fix.SocketAcceptor if acceptor else fix.SocketInitiator
        self.engine = cls(app, self._store, cfg, self._log)

    def start(self) -> QfEngine:
        self.engine.start()
        return self

    def stop(self) -> None:
        self.engine.stop(True)


class SenderApp(_App):
    """A QuickFIX order sender: the test sends with ``send`` and reads ``traffic``."""
