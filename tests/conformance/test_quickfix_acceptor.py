"""Our daemon's FIX adapter against QuickFIX as the venue (acceptor, FIX44.xml validation on):
a whole parent with partial fills, rejects and lost acknowledgements; gaps on one side and on
both with resend and gap fill in both directions; restarts of either side; heartbeats and
TestRequest. QuickFIX must never reject one of our messages (35=3)."""

from __future__ import annotations

import asyncio
import gc
import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.config import load_config
from agent.daemon import run
from agent.model import ChildOrder, OrderAccepted, OrderFilled, OrderRejected, OrderStatus, Side
from agent.runner import make_feed_factory
from tests.conformance.quickfix_dict import have_quickfix
from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_quickfix(), reason="quickfix-ssl not installed"),
]

if have_quickfix():
    from tests.conformance.quickfix_peer import QfEngine, VenueApp, settings

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
T = 1_748_872_800 * 10**9  # 2025-06-02 14:00 UTC
CONFIG = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
collar_bps = 100
[strategy]
# Replayed at full speed, a muted child is resolved by wall-clock status queries only after
# the last period: this FIX test keeps the even schedule and lets the rest go as one child.
forecast = "profile"
prior_profile = false
max_child_multiple = 0
[[orders]]
id = "Q"
symbol = "SYNA"
side = "buy"
quantity = 20000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T16:35:00Z
period_s = 600
lot = 100
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report_traffic(name: str, app: VenueApp) -> None:
    """One line per test for the README's figures (``pytest -s``)."""
    t = app.traffic
    print(
        f"\nQF-TRAFFIC {name} messages={t.total} quickfix_rejects_of_ours={len(t.rejects_sent)} "
        f"quickfix_business_rejects={len(t.business_rejects_sent)}"
    )


class Venue:
    """A QuickFIX acceptor in ``tmp`` on ``port`` (restartable: its store is on disk)."""

    def __init__(self, tmp: Path, rule=None, port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.app = VenueApp(rule)
        self.engine = QfEngine(
            self.app,
            settings(tmp / "qf", acceptor=True, port=self.port, sender="VENUE", target="AGENT"),
            acceptor=True,
        ).start()

    def restart(self) -> None:
        self.engine.stop()
        # The old engine's destructor unregisters the session by its id: let it run first.
        self.engine = None
        gc.collect()
        old = self.app
        self.app = VenueApp(old.rule)
        self.app.orders, self.app.traffic = old.orders, old.traffic
        self.engine = QfEngine(
            self.app,
            settings(
                self.tmp / "qf", acceptor=True, port=self.port, sender="VENUE", target="AGENT"
            ),
            acceptor=True,
        ).start()


def broker(tmp: Path, port: int, heartbeat_s: int = 5) -> FixBroker:
    return FixBroker(
        "127.0.0.1",
        port,
        "AGENT",
        "VENUE",
        heartbeat_s=heartbeat_s,
        store_path=tmp / "seq.json",
    )


async def take(events, n: int, timeout_s: float = 10.0) -> list:
    got = []
    async with asyncio.timeout(timeout_s):
        async for e in events:
            got.append(e)
            if len(got) >= n:
                break
    return got


async def until_filled(events, coid: str, qty: float, timeout_s: float = 10.0) -> list:
    got, filled = [], 0.0
    async with asyncio.timeout(timeout_s):
        async for e in events:
            got.append(e)
            if isinstance(e, OrderFilled) and e.client_order_id == coid:
                filled += e.qty
                if filled >= qty:
                    return got
    return got


def child(n: int, qty: float = 300) -> ChildOrder:
    return ChildOrder(f"Q-{n:05d}", "Q", "SYNA", Side.BUY, qty, 60.0, T + n)


async def test_a_parent_completes_against_quickfix_with_partial_fills_rejects_and_lost_acks(
    tmp_path,
):
    """Every order partially filled twice; every 5th rejected; every 3rd executed but never
    reported (a lost acknowledgement: only a status request, with Side, resolves it). The
    parent completes with exactly QuickFIX's fills and QuickFIX rejects nothing of ours."""

    def rule(n: int, coid: str, qty: float) -> str:
        return "reject" if n % 5 == 0 else "mute" if n % 3 == 0 else "partial"

    v = Venue(tmp_path, rule)
    try:
        (tmp_path / "c.toml").write_text(CONFIG)
        cfg, _ = load_config(tmp_path / "c.toml")
        b = {"ack_timeout_s": 0.1, "max_status_queries": 3}
        # Paced (3 h of books in about 12 s): a muted child is resolved by a wall-clock status
        # query, and as fast as possible the replay could pass the last period before the
        # answer came (a loaded machine saw it 3 times in 3), leaving that child's shares
        # unsent. A period now lasts about 0.7 s of wall time, several timeouts.
        cfg = cfg.model_copy(
            update={
                "broker": cfg.broker.model_copy(update=b),
                "feed": cfg.feed.model_copy(update={"speed": 900.0}),
            }
        )
        fb = broker(tmp_path, v.port)
        await fb.start()
        with capture_logs() as logs:
            (s,) = await asyncio.wait_for(run(cfg, make_feed_factory(cfg), broker=fb), 120)
    finally:
        await asyncio.to_thread(v.engine.stop)
    venue_cum = {k: o["cum"] for k, o in v.app.orders.items()}
    assert s.filled_qty == s.target_qty == 20000 == pytest.approx(sum(venue_cum.values()))
    assert v.app.traffic.rejects_sent == [] and v.app.traffic.business_rejects_sent == []
    assert v.app.traffic.received["H"] >= 1  # status requests were sent, and accepted
    rejected = [e for e in logs if e["event"] == "broker.order_rejected"]
    assert rejected and all(e["log_level"] == "warning" and e["reason"] for e in rejected)
    report_traffic("daemon_full_run", v.app)


async def test_gaps_on_both_sides_are_resent_and_gap_filled_in_both_directions(tmp_path):
    """Both sides skip sequence numbers at once: each answers the other's ResendRequest with a
    gap fill (the daemon used to drop the peer's ResendRequest, and the engine then queued
    every later order). The order sent inside our gap is gap-filled, never resent stale: a
    status request finds it unknown (its shares go back to the plan); the next one executes."""
    v = Venue(tmp_path)
    try:
        fb = broker(tmp_path, v.port)
        await fb.start()
        events = fb.events()
        await fb.submit(child(1))
        await until_filled(events, "Q-00001", 300)
        qs = v.app.qf_session()
        qs.setNextSenderMsgSeqNum(qs.getExpectedSenderNum() + 3)  # their gap towards us
        fb.session.seq.next_out += 4  # ours towards them
        with capture_logs() as logs:
            await fb.submit(child(2))
            assert await asyncio.to_thread(
                v.app.wait_for, lambda t: t.received["4"] >= 1 and t.sent["4"] >= 1, 10
            )
            await fb.request_status("Q-00002")
            (st,) = await take(events, 1)
            await fb.submit(child(3))
            await until_filled(events, "Q-00003", 300)
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    assert (st.client_order_id, st.status) == ("Q-00002", "unknown")
    assert "Q-00002" not in v.app.orders and v.app.orders["Q-00003"]["cum"] == 300
    t = v.app.traffic
    assert t.sent["2"] >= 1 and t.received["2"] >= 1  # both asked for a resend
    assert t.sent["4"] >= 1 and t.received["4"] >= 1  # both gap-filled
    assert t.rejects_sent == []
    details = [e.get("detail", "") for e in logs]
    assert any(d.startswith("gap_detected") for d in details)
    assert any(d.startswith("resend_answered") for d in details)
    report_traffic("gaps_both_sides", v.app)


async def test_restarts_of_either_side_keep_the_session(tmp_path):
    """Our adapter restarts on its persisted numbers; QuickFIX restarts on its file store; each
    time the Logon is accepted (no 'MsgSeqNum too low') and the next order executes."""
    v = Venue(tmp_path)
    try:
        fb = broker(tmp_path, v.port)
        await fb.start()
        await fb.submit(child(1))
        await until_filled(fb.events(), "Q-00001", 300)
        await fb.aclose()
        fb = broker(tmp_path, v.port)  # a new process would load the same store
        await fb.start()
        events = fb.events()
        await fb.submit(child(2))
        await until_filled(events, "Q-00002", 300)
        await asyncio.to_thread(v.restart)  # QuickFIX goes away and comes back: we log on again
        await fb.start(timeout_s=15)
        for _ in range(200):  # bounded: until the reconnect has logged on
            if fb.available and v.app.logged_on.is_set():
                break
            await asyncio.sleep(0.05)
        await fb.submit(child(3))
        await until_filled(events, "Q-00003", 300, timeout_s=15)
        await fb.request_status("Q-00001")  # sent before both restarts: still known
        (st,) = [e for e in await take(events, 1) if isinstance(e, OrderStatus)]
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    assert (st.status, st.cum_qty) == ("filled", 300.0)
    assert v.app.traffic.rejects_sent == []
    assert not any("too low" in f.get(58, "") for f in v.app.traffic.admin_received)
    report_traffic("restarts", v.app)


async def test_heartbeats_while_idle_and_test_request_answered(tmp_path):
    """HeartBtInt=1: we heartbeat on our own, so QuickFIX needs no TestRequest; when we go
    quiet QuickFIX's TestRequest is answered with its TestReqID and the session stays up."""
    v = Venue(tmp_path)
    try:
        fb = broker(tmp_path, v.port, heartbeat_s=1)
        await fb.start()
        app = v.app
        assert await asyncio.to_thread(app.wait_for, lambda t: t.received["0"] >= 3, 10)
        assert app.traffic.sent["1"] == 0
        fb.session.heartbeat_s = 3600  # we stop heartbeating: QuickFIX must test us
        assert await asyncio.to_thread(app.wait_for, lambda t: t.sent["1"] >= 1, 10)
        assert await asyncio.to_thread(
            app.wait_for,
            lambda t: any(f[35] == "0" and 112 in f for f in t.admin_received),
            10,
        )
        assert fb.available and app.logged_on.is_set()
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    assert app.traffic.rejects_sent == []
    report_traffic("heartbeats", v.app)


async def test_rejects_reach_the_daemon_tied_to_the_child(tmp_path):
    """An execution report 150=8 becomes the child's OrderRejected; a cancel QuickFIX refuses
    (35=9) is logged at warning and escalated to a status request."""
    v = Venue(tmp_path, lambda n, coid, qty: "reject" if n == 1 else "fill")
    try:
        fb = broker(tmp_path, v.port)
        await fb.start()
        events = fb.events()
        with capture_logs() as logs:
            await fb.submit(child(1))
            (rej,) = await take(events, 1)
            await fb.submit(child(2))
            got = await until_filled(events, "Q-00002", 300)
            await fb.cancel("Q-00002")
            (st,) = await take(events, 1)
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    assert isinstance(rej, OrderRejected) and rej.client_order_id == "Q-00001" and rej.reason
    assert isinstance(got[0], OrderAccepted)
    assert isinstance(st, OrderStatus) and st.client_order_id == "Q-00002"
    names = {(e["event"], e["log_level"]) for e in logs}
    assert ("broker.order_rejected", "warning") in names
    assert ("broker.cancel_rejected", "warning") in names
    assert v.app.traffic.rejects_sent == []
    report_traffic("rejects", v.app)


async def test_quickfix_resends_reports_we_lost_and_each_fill_keeps_its_exec_id(tmp_path):
    """Our side loses the last two inbound numbers (the reports of an order): we ask, QuickFIX
    resends them with PossDupFlag=Y, and they arrive with their original ExecIDs (so the
    tracker applies each fill once)."""
    v = Venue(tmp_path)
    try:
        fb = broker(tmp_path, v.port)
        await fb.start()
        events = fb.events()
        await fb.submit(child(1))
        first = await until_filled(events, "Q-00001", 300)
        fb.session.seq.next_in -= 2  # the ack and the fill, as if never read
        await fb.submit(child(2))
        again = await until_filled(events, "Q-00002", 300)
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    fills1 = [e.exec_id for e in first if isinstance(e, OrderFilled)]
    resent = [e for e in again if isinstance(e, OrderFilled) and e.client_order_id == "Q-00001"]
    assert [e.exec_id for e in resent] == fills1  # the same executions, not new ones
    assert v.app.traffic.received["2"] >= 1 and v.app.traffic.rejects_sent == []
    report_traffic("quickfix_resends_reports", v.app)


async def test_a_session_reject_from_quickfix_is_tied_to_the_child(tmp_path):
    """A deliberately broken order (Side=Z, not in FIX44.xml) is refused by QuickFIX with a
    session Reject (RefSeqNum, RefTagID 54): the adapter turns it into that child's
    OrderRejected, logged at warning, and the session goes on."""
    import simplefix

    v = Venue(tmp_path)
    try:
        fb = broker(tmp_path, v.port)
        await fb.start()
        events = fb.events()
        bad = child(1)
        fb.refs.add(bad)
        body = simplefix.FixMessage()
        for tag, val in [
            (11, bad.client_order_id),
            (55, "SYNA"),
            (54, "Z"),
            (60, "20250602-14:00:00"),
            (38, 100),
            (40, 2),
            (44, 60),
            (59, 3),
        ]:
            body.append_pair(tag, val)
        with capture_logs() as logs:
            await fb._send(body, "D")
            (rej,) = await take(events, 1)
            await fb.submit(child(2))
            await until_filled(events, "Q-00002", 300)
        await fb.aclose()
    finally:
        await asyncio.to_thread(v.engine.stop)
    assert isinstance(rej, OrderRejected) and rej.client_order_id == "Q-00001"
    assert "RefTagID=54" in rej.reason
    (qf_reject,) = v.app.traffic.rejects_sent
    assert qf_reject[371] == "54"
    (w,) = [e for e in logs if e["event"] == "broker.order_rejected"]
    assert w["log_level"] == "warning" and w["source"] == "35=3"
