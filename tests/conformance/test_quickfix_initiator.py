"""QuickFIX as the order sender (initiator, FIX44.xml validation on) against our simulated
venue: normal flow, partial fills, rejects of every kind, status and cancel requests, an
unsupported message type, gaps with resend in both directions, a PossDup resend never executed
twice, a restart of the venue on its persisted state, heartbeats, one session per connection.
QuickFIX must never reject one of the venue's messages (35=3)."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from pathlib import Path

import pytest
import simplefix

from agent.venue import FixVenue
from tests.conformance.quickfix_dict import have_quickfix
from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_quickfix(), reason="quickfix-ssl not installed"),
]

if have_quickfix():
    from tests.conformance.quickfix_peer import QfEngine, SenderApp, settings

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report_traffic(name: str, app) -> None:
    t = app.traffic
    print(
        f"\nQF-TRAFFIC {name} messages={t.total} quickfix_rejects_of_ours={len(t.rejects_sent)} "
        f"quickfix_business_rejects={len(t.business_rejects_sent)}"
    )


class Sender:
    """A QuickFIX initiator towards ``port``."""

    def __init__(self, tmp: Path, port: int, hb_s: int = 30, extra: str = "") -> None:
        self.app = SenderApp()
        cfg = settings(
            tmp / "qf",
            acceptor=False,
            port=port,
            sender="AGENT",
            target="VENUE",
            hb_s=hb_s,
            extra=extra,
        )
        self.engine = QfEngine(self.app, cfg, acceptor=False).start()

    async def logged_on(self, timeout_s: float = 10.0) -> bool:
        return await asyncio.to_thread(self.app.logged_on.wait, timeout_s)

    async def wait(self, pred, timeout_s: float = 10.0) -> bool:
        return await asyncio.to_thread(self.app.wait_for, pred, timeout_s)

    async def stop(self) -> None:
        await asyncio.to_thread(self.engine.stop)
        self.engine = None
        gc.collect()

    def order(self, coid: str, **kw: str) -> None:
        pairs = {
            11: coid,
            55: "SYNA",
            54: "1",
            60: "20250602-14:00:00",
            38: "500",
            40: "2",
            44: "99",
            59: "3",
        }
        for k, v in kw.items():
            pairs[int(k[1:])] = v
        self.app.send([(t, v) for t, v in pairs.items() if v != ""], "D")

    def reports(self, coid: str) -> list[dict[int, str]]:
        with self.app.lock:
            return [f for f in self.app.traffic.app_received if f.get(11) == coid]


def executions(er_log: Path, coid: str) -> list[dict]:
    recs = [json.loads(x) for x in er_log.read_text().splitlines()] if er_log.exists() else []
    return [r for r in recs if r["client_order_id"] == coid]


async def test_orders_partial_fills_rejects_status_cancel_and_unsupported(tmp_path):
    """Each request gets the FIX 4.4 answer, and QuickFIX validates every one of them."""
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log, latency_ms=0) as venue:
        qf = Sender(tmp_path, venue.port)
        try:
            assert await qf.logged_on()
            qf.order("OK-1", t38="100000")  # more than the book: partial fills, IOC remainder
            qf.order("SYM-1", t55="NOPE")
            qf.order("MKT-1", t40="1", t44="")
            qf.order("DAY-1", t59="6")  # GTD: not supported (day and GTC orders rest)
            qf.order("SIDE-1", t54="3")
            qf.order("OK-1")  # duplicate ClOrdID
            qf.app.send([(11, "OK-1"), (55, "SYNA"), (54, "1")], "H")
            qf.app.send([(11, "NONE-1"), (55, "SYNA"), (54, "1")], "H")
            cxl = [
                (41, "OK-1"),
                (11, "OK-1-X"),
                (55, "SYNA"),
                (54, "1"),
                (60, "20250602-14:00:01"),
                (38, "100000"),
            ]
            qf.app.send(cxl, "F")
            qf.app.send([(584, "M1"), (585, "7")], "AF")  # OrderMassStatusRequest: unsupported
            assert await qf.wait(lambda t: t.received["j"] >= 1 and t.received["9"] >= 1)
        finally:
            await qf.stop()
    ok = qf.reports("OK-1")
    kinds = [f[150] for f in ok]
    assert kinds[0] == "0" and "F" in kinds and "4" in kinds  # ack, fills, IOC remainder
    assert sum(float(f[32]) for f in ok if f[150] == "F") == float(
        next(f for f in ok if f[150] == "4")[14]
    )
    codes = {c: qf.reports(c)[0].get(103) for c in ("SYM-1", "MKT-1", "DAY-1", "SIDE-1")}
    assert codes == {"SYM-1": "1", "MKT-1": "11", "DAY-1": "11", "SIDE-1": "11"}
    assert [f.get(103) for f in ok if f[150] == "8"] == ["6"]  # the duplicate
    assert [f[39] for f in qf.reports("NONE-1")] == ["8"]
    (cr,) = [f for f in qf.app.traffic.app_received if f[35] == "9"]
    assert (cr[37], cr[41], cr[102], cr[434]) == ("V-OK-1", "OK-1", "0", "1")
    (bj,) = [f for f in qf.app.traffic.app_received if f[35] == "j"]
    assert (bj[372], bj[380]) == ("AF", "3")
    assert [r["exec_type"] for r in executions(er_log, "OK-1")].count("0") == 1
    assert qf.app.traffic.rejects_sent == []
    report_traffic("venue_requests", qf.app)


async def test_gaps_both_directions_and_a_possdup_resend_is_not_executed_twice(tmp_path):
    """Reports lost on the wire: QuickFIX asks, the venue resends them (PossDup). The venue
    loses an inbound number: it asks, QuickFIX resends the order with PossDupFlag=Y, and the
    venue answers with its status instead of executing it again."""
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log, latency_ms=0) as venue:
        qf = Sender(tmp_path, venue.port)
        try:
            assert await qf.logged_on()
            venue.lose_reports = 2
            qf.order("G-1")
            qf.order("G-2")
            assert await qf.wait(
                lambda t: (
                    len([1 for f in t.app_received if f.get(11) == "G-2" and f[150] in "F4"]) >= 1
                )
            )
            assert qf.app.traffic.sent["2"] >= 1  # QuickFIX saw the gap and asked
            venue.session.seq.next_in = 3  # the venue forgets G-2 (QuickFIX's number 3)
            qf.order("G-3")
            assert await qf.wait(
                lambda t: any(f.get(11) == "G-3" and f[150] in "F4" for f in t.app_received)
            )
            assert await qf.wait(
                lambda t: any(f.get(11) == "G-2" and f[150] == "I" for f in t.app_received)
            )
        finally:
            await qf.stop()
    for coid in ("G-1", "G-2", "G-3"):
        assert [r["exec_type"] for r in executions(er_log, coid)].count("0") == 1, coid
    assert qf.app.traffic.received["2"] >= 1  # the venue asked QuickFIX for a resend
    assert qf.app.traffic.rejects_sent == []
    report_traffic("venue_gaps", qf.app)


async def test_a_restarted_venue_accepts_the_logon_and_never_executes_twice(tmp_path):
    """With a state folder the venue keeps its numbers and orders: QuickFIX logs on again at
    once, and a resend of an order the venue executed before the restart is not executed."""
    er_log = tmp_path / "er.jsonl"
    state = tmp_path / "venue-state"
    port = free_port()
    qf = None
    try:
        async with FixVenue(
            {"SYNA": SAMPLE}, er_log=er_log, latency_ms=0, port=port, state_dir=state
        ):
            qf = Sender(tmp_path, port)
            assert await qf.logged_on()
            qf.order("R-1")
            assert await qf.wait(
                lambda t: any(f.get(11) == "R-1" and f[150] in "F4" for f in t.app_received)
            )
        qf.app.logged_on.clear()
        saved = json.loads((state / "venue-seq.json").read_text())
        assert saved["next_in"] >= 3 and saved["next_out"] >= 4  # the numbers survived
        # ... one inbound number behind, as after a crash between the order and the write:
        # QuickFIX is asked to resend R-1 and does (PossDupFlag=Y)
        (state / "venue-seq.json").write_text(json.dumps(saved | {"next_in": 2}))
        async with FixVenue(
            {"SYNA": SAMPLE}, er_log=er_log, latency_ms=0, port=port, state_dir=state
        ):
            assert await qf.logged_on(15)
            qf.order("R-2")
            assert await qf.wait(
                lambda t: any(f.get(11) == "R-1" and f[150] == "I" for f in t.app_received), 15
            )
            assert await qf.wait(
                lambda t: any(f.get(11) == "R-2" and f[150] in "F4" for f in t.app_received), 15
            )
    finally:
        if qf is not None:
            await qf.stop()
    assert [r["exec_type"] for r in executions(er_log, "R-1")].count("0") == 1
    assert not any("too low" in f.get(58, "") for f in qf.app.traffic.admin_received)
    assert qf.app.traffic.rejects_sent == []
    report_traffic("venue_restart", qf.app)


async def test_venue_heartbeats_at_the_initiators_interval_and_one_session_per_connection(
    tmp_path,
):
    """HeartBtInt=1 from QuickFIX is honoured (no TestRequest needed); a second connection
    for the same session is refused with a Logout, and the first one keeps trading."""
    async with FixVenue({"SYNA": SAMPLE}, latency_ms=0) as venue:
        qf = Sender(tmp_path, venue.port, hb_s=1)
        try:
            assert await qf.logged_on()
            assert await qf.wait(lambda t: t.received["0"] >= 3)
            assert qf.app.traffic.sent["1"] == 0
            (logon,) = [f for f in qf.app.traffic.admin_received if f[35] == "A"]
            assert logon[108] == "1"
            r, w = await asyncio.open_connection("127.0.0.1", venue.port)
            m = simplefix.FixMessage()
            for tag, v in [
                (8, "FIX.4.4"),
                (35, "A"),
                (49, "AGENT"),
                (56, "VENUE"),
                (34, 1),
                (52, "20250602-14:00:00"),
                (98, 0),
                (108, 30),
            ]:
                m.append_pair(tag, v, header=tag in (8, 35, 49, 56, 34, 52))
            w.write(m.encode())
            await w.drain()
            async with asyncio.timeout(5):
                answer = await r.read(4096)
            w.close()
            assert b"\x0135=5\x01" in answer and venue.refused_connections == 1
            qf.order("ONE-1")
            assert await qf.wait(lambda t: any(f.get(11) == "ONE-1" for f in t.app_received))
            assert qf.app.logged_on.is_set()
        finally:
            await qf.stop()
    assert qf.app.traffic.rejects_sent == []
    report_traffic("venue_heartbeats", qf.app)


async def test_a_logon_with_reset_seq_num_flag_starts_both_sides_again_at_1(tmp_path):
    """QuickFIX logs on again with ResetOnLogon=Y (141=Y, MsgSeqNum 1) after a day of traffic:
    the venue answers 141=Y at 1 too, and the next order executes, without any Reject."""
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log, latency_ms=0) as venue:
        qf = Sender(tmp_path, venue.port)
        assert await qf.logged_on()
        qf.order("Z-1")
        assert await qf.wait(lambda t: any(f.get(11) == "Z-1" for f in t.app_received))
        await qf.stop()
        assert venue.session.seq.next_in > 2
        qf2 = Sender(tmp_path, venue.port, extra="ResetOnLogon=Y")
        try:
            assert await qf2.logged_on()
            qf2.order("Z-2")
            assert await qf2.wait(lambda t: any(f.get(11) == "Z-2" for f in t.app_received))
        finally:
            await qf2.stop()
    (logon,) = [f for f in qf2.app.traffic.admin_received if f[35] == "A"]
    assert (logon.get(141), logon[34]) == ("Y", "1")
    assert [r["exec_type"] for r in executions(er_log, "Z-2")].count("0") == 1
    assert qf.app.traffic.rejects_sent == [] and qf2.app.traffic.rejects_sent == []
    report_traffic("venue_reset_on_logon", qf2.app)
