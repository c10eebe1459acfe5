"""The daemon over FIX 4.4 against the simulated venue on loopback: the venue's fills are
the daemon's fills; a dropped TCP connection mid-run loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.config import load_config
from agent.daemon import run
from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderStatus, Side
from agent.runner import make_feed_factory
from agent.venue import FixVenue
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
T_1400 = 1_748_872_800 * 10**9  # 2025-06-02 14:00 UTC, inside the sample
CONFIG = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
collar_bps = 100
[[orders]]
id = "F"
symbol = "SYNA"
side = "buy"
quantity = 30000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T16:35:00Z
period_s = 600
lot = 100
"""


async def work(
    tmp_path: Path,
    chaos: bool,
    duplicate_fills: bool = False,
    reject_every: int = 0,
    lose_reports: int = 0,
    mute_every: int = 0,
    pause_s: float = 0.01,
    ignore_status: bool = False,
    max_status_queries: int = 3,
):
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg, _ = load_config(tmp_path / "c.toml")
    b = {"ack_timeout_s": 0.1, "max_status_queries": max_status_queries}
    cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update=b)})
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log) as venue:
        venue.duplicate_fills = duplicate_fills
        venue.reject_every = reject_every
        venue.lose_reports = lose_reports
        venue.mute_every = mute_every
        venue.ignore_status = ignore_status
        broker = FixBroker(
            "127.0.0.1",
            venue.port,
            "AGENT",
            "VENUE",
            heartbeat_s=5,
            store_path=tmp_path / "seq.json",
        )
        await broker.start()
        feed_factory = make_feed_factory(cfg)

        class SlowFeed:
            """The replay, with a pause per batch so a drop can land mid-run."""

            def __init__(self, sym: str) -> None:
                self.inner = feed_factory(sym)
                self.symbol = sym
                self.stats = None

            async def updates(self):
                n = 0
                async for b in self.inner.updates():
                    for i in range(0, len(b), 2000):
                        n += 1
                        if chaos and n == 4:
                            venue.drop_connections()
                        await asyncio.sleep(pause_s)
                        yield b.slice(i, i + 2000)

            async def aclose(self) -> None:
                await self.inner.aclose()

        with capture_logs() as logs:
            (s,) = await asyncio.wait_for(run(cfg, SlowFeed, broker=broker), 120)
    venue_fills = defaultdict(float)
    seen: set[str] = set()
    for line in er_log.read_text().splitlines():
        rec = json.loads(line)
        if rec["exec_type"] == "F" and rec["exec_id"] not in seen:
            seen.add(rec["exec_id"])
            venue_fills[rec["client_order_id"]] += rec["last_qty"]
    return s, logs, venue_fills


async def test_daemon_over_fix_agrees_with_the_venue(tmp_path):
    s, logs, venue_fills = await work(tmp_path, chaos=False)
    assert s.filled_qty == s.target_qty == 30000
    ours = defaultdict(float)
    for e in logs:
        if "fill_qty" in e and e.get("strategy") == "mpc":
            ours[e["client_order_id"]] += e["fill_qty"]
    assert dict(ours) == dict(venue_fills)


async def test_dropped_fix_connection_mid_run(tmp_path):
    s, logs, venue_fills = await work(tmp_path, chaos=True)
    names = [e["event"] for e in logs]
    assert "broker.reconnect_scheduled" in names or "broker.disconnected" in names
    sent = [
        e["client_order_id"]
        for e in logs
        if e["event"] == "order.submitted" and e["strategy"] == "mpc"
    ]
    assert len(sent) == len(set(sent))
    # every fill the venue made is known to the daemon, and nothing more
    assert s.filled_qty == pytest.approx(sum(venue_fills.values()))


async def test_duplicate_execution_reports_are_applied_once(tmp_path):
    """Every fill report arrives twice (same ExecID, new sequence number): no double count."""
    s, _logs, venue_fills = await work(tmp_path, chaos=False, duplicate_fills=True)
    assert s.filled_qty == s.target_qty == 30000 == sum(venue_fills.values())


async def test_rejected_orders_are_re_planned(tmp_path):
    """The venue refuses every third order: the shares come back and the order completes."""
    s, logs, venue_fills = await work(tmp_path, chaos=False, reject_every=3)
    assert any(e["event"] == "order.rejected" for e in logs)
    assert s.filled_qty == s.target_qty == sum(venue_fills.values())


async def _next_events(events, n: int, timeout_s: float = 5.0) -> list:
    got = []
    async with asyncio.timeout(timeout_s):
        async for e in events:
            got.append(e)
            if len(got) >= n:
                return got
    return got


async def test_status_and_cancel_requests_are_answered(tmp_path):
    """A status request gets a 150=I report (no new fill); a cancel of an IOC child is too late:
    the venue's OrderCancelReject is logged at warning and escalated to a status request, whose
    answer reaches the daemon as the child's OrderStatus. A request for a child this adapter
    never sent is answered by the adapter itself: ``unknown`` (it never reached the venue)."""
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log) as venue:
        broker = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", heartbeat_s=5)
        await broker.start()
        events = broker.events()
        child = ChildOrder("S-00001", "S", "SYNA", Side.BUY, 100, 1.0, T_1400)  # never fills
        with capture_logs() as logs:
            await broker.submit(child)
            acc, cxl = await _next_events(events, 2)
            await broker.request_status("S-00001")
            (st,) = await _next_events(events, 1)
            await broker.cancel("S-00001")
            (st2,) = await _next_events(events, 1)
            await broker.request_status("NOPE-1")
            (never,) = await _next_events(events, 1)
        await broker.aclose()
    assert isinstance(acc, OrderAccepted) and isinstance(cxl, OrderCancelled)
    assert st == OrderStatus("S-00001", st.ts_event_ns, "cancelled", 0.0, 0.0, "")
    assert isinstance(st2, OrderStatus) and st2.client_order_id == "S-00001"
    (w,) = [e for e in logs if e["event"] == "broker.cancel_rejected"]
    assert w["log_level"] == "warning" and w["client_order_id"] == "S-00001"
    assert "too late" in w["reason"]
    recs = [json.loads(x) for x in er_log.read_text().splitlines()]
    assert [r["exec_type"] for r in recs] == ["0", "4", "I", "I"]
    assert venue.cancel_requests == ["S-00001"]
    assert (never.client_order_id, never.status, never.cum_qty) == ("NOPE-1", "unknown", 0.0)


async def test_inbound_sequence_gap_is_recovered_by_resend(tmp_path):
    """Three reports are lost on the wire: the adapter sees the gap, asks for a resend, and the
    venue's PossDup resend brings the fills; the books agree and the order completes."""
    s, logs, venue_fills = await work(tmp_path, chaos=False, lose_reports=3)
    details = [e.get("detail", "") for e in logs if e["event"] == "broker.session_event"]
    assert any(d.startswith("gap_detected") for d in details)
    assert s.filled_qty == s.target_qty == sum(venue_fills.values())


async def test_password_canary_never_reaches_the_logs(tmp_path):
    """The logon password goes to the venue and nowhere else: not in any log line."""
    secret = tmp_path / "pw"
    secret.write_text("CANARY-7f3a9c\n")
    async with FixVenue({"SYNA": SAMPLE}) as venue:
        with capture_logs() as logs:
            broker = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", password_file=secret)
            await broker.start()
            venue.drop_connections()  # a reconnect logs on again
            await broker.start()
            await broker.aclose()
    assert broker._password == "CANARY-7f3a9c"
    assert "CANARY-7f3a9c" not in repr(logs)


async def test_lost_acknowledgement_is_resolved_by_a_status_query(tmp_path):
    """Every 3rd order executes at the venue but none of its reports is ever sent: the
    daemon's watchdog asks for its status, applies the venue's execution once, and the parent
    completes with exactly the venue's fills."""
    s, logs, venue_fills = await work(tmp_path, chaos=False, mute_every=3, pause_s=0.03)
    queried = {e["client_order_id"] for e in logs if e["event"] == "order.status_query"}
    answered = {e["client_order_id"] for e in logs if e["event"] == "order.reconciled"}
    reconciled = [e for e in logs if e["event"] == "order.reconciled" and e["changed"]]
    # Every query is answered; the muted children are closed only by their answer. Under load a
    # child whose reports were merely slow may be queried too: its answer then changes nothing
    # (the wall-clock ack timeout is a race this test must not depend on).
    at_exit = {c for e in logs if e["event"] == "reconcile.started" for c in e["client_order_ids"]}
    assert queried and answered >= queried
    assert reconciled and {e["client_order_id"] for e in reconciled} <= queried | at_exit
    ours = defaultdict(float)
    for e in logs:
        if "fill_qty" in e and e.get("strategy") == "mpc":
            ours[e["client_order_id"]] += e["fill_qty"]
        if e["event"] == "order.reconciled" and e["changed"]:
            ours[e["client_order_id"]] = e["filled_qty"]
    assert dict(ours) == pytest.approx(dict(venue_fills))
    assert s.filled_qty == pytest.approx(sum(venue_fills.values()))
    assert s.filled_qty == s.target_qty


async def test_password_canary_is_in_no_log_journal_or_store(tmp_path):
    """A whole run with a password: the canary is in no log line, not in the journal, not in
    the FIX sequence store, not in the daemon's status reply."""
    from agent.journal import Journal

    secret = tmp_path / "pw"
    secret.write_text("CANARY-b41d07\n")
    (tmp_path / "c.toml").write_text(
        CONFIG + '\n[journal]\npath = "j.sqlite"\n[control]\nsocket = "ctl.sock"\n'
    )
    cfg, _ = load_config(tmp_path / "c.toml")
    journal = Journal(cfg.journal.path)
    async with FixVenue({"SYNA": SAMPLE}) as venue:
        broker = FixBroker(
            "127.0.0.1",
            venue.port,
            "AGENT",
            "VENUE",
            password_file=secret,
            store_path=tmp_path / "seq.json",
        )
        with capture_logs() as logs:
            await broker.start()
            (s,) = await run(cfg, make_feed_factory(cfg), broker=broker, journal=journal)
    journal.close()
    assert s.status == "completed"
    assert "CANARY-b41d07" not in repr(logs)
    for f in tmp_path.iterdir():
        if f.name != "pw" and f.is_file():
            assert b"CANARY-b41d07" not in f.read_bytes(), f.name


async def test_a_child_no_status_query_resolves_engages_the_kill_switch(tmp_path):
    """F4: an order whose reports never come and whose status queries go unanswered keeps
    its shares reserved (never re-sent, never marked rejected locally); after
    max_status_queries the daemon halts and sends nothing more."""
    s, logs, _venue_fills = await work(
        tmp_path,
        chaos=False,
        mute_every=2,
        pause_s=0.05,
        ignore_status=True,
        max_status_queries=2,
    )
    names = [e["event"] for e in logs]
    assert "order.unresolved" in names and "daemon.halted" in names
    t_halt = names.index("daemon.halted")
    assert not [
        e for e in logs[t_halt:] if e["event"] == "order.submitted" and e["strategy"] == "mpc"
    ]
    (unresolved, *_) = [e for e in logs if e["event"] == "order.unresolved"]
    assert not any(
        e["event"] == "order.rejected" and e["client_order_id"] == unresolved["client_order_id"]
        for e in logs
    )
    assert s.status == "incomplete"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "venue.pem", tmp_path / "venue.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_fix_over_tls_checks_the_venue_certificate(tmp_path):
    """With tls = true the adapter checks the venue's certificate: trusted (tls_ca_file), the
    session logs on and an order executes; untrusted, the connection is refused and nothing is
    sent."""
    import ssl

    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    er_log = tmp_path / "er.jsonl"
    async with FixVenue({"SYNA": SAMPLE}, er_log=er_log, ssl_context=ctx) as venue:
        good = FixBroker("127.0.0.1", venue.port, "AGENT", "VENUE", tls=True, tls_ca_file=cert)
        await good.start()
        await good.submit(ChildOrder("T-00001", "T", "SYNA", Side.BUY, 100, 99.0, T_1400))
        acc, *_ = await _next_events(good.events(), 1)
        await good.aclose()
        bad = FixBroker(
            "127.0.0.1", venue.port, "AGENT", "VENUE", tls=True, reconnect_max_s=0.05
        )  # the system's CAs do not know this venue
        with capture_logs() as logs:
            with pytest.raises(TimeoutError):
                await bad.start(timeout_s=0.5)
            await bad.aclose()
    assert isinstance(acc, OrderAccepted) and acc.client_order_id == "T-00001"
    failed = [e for e in logs if e["event"] == "broker.connect_failed"]
    assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0]["error"]
    recs = [json.loads(x) for x in er_log.read_text().splitlines()]
    assert {r["client_order_id"] for r in recs} == {"T-00001"}
