"""The daemon over FIX 4.4 against the simulated venue on loopback: the venue's fills are
the daemon's fills; a dropped TCP connection mid-run loses and doubles nothing."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.brokers.fix import FixBroker
from agent.config import load_config
from agent.daemon import Daemon, run
from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderStatus, Side
from agent.runner import make_feed_factory
from agent.venue import FixVenue
from feeds.clock import ManualClock
from tests.conftest import REPO
from tests.waiting import logged, wait_until

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


ACK_TIMEOUT_S = 2.0  # on the test's ManualClock: it passes when the test says so


async def work(
    tmp_path: Path,
    chaos: bool,
    duplicate_fills: bool = False,
    reject_every: int = 0,
    lose_reports: int = 0,
    mute_every: int = 0,
    ignore_status: bool = False,
    max_status_queries: int = 3,
    advance: bool = True,
    ack_timeout_s: float = ACK_TIMEOUT_S,
):
    """Run the daemon over FIX against the venue, the replay released chunk by chunk.

    No chunk spans two decision times, and before the next one goes out every child the
    daemon sent has its final report, except those the venue muted: so each decision sees the
    fills of the last one, however slow the machine. The acknowledgement watchdog runs on a
    ``ManualClock``: after a chunk that left muted children open, the test advances it past
    ``broker.ack_timeout_s`` (unless not ``advance``) and waits until the watchdog's status
    queries are answered (or, with ``ignore_status``, sent). ``chaos`` drops the TCP
    connection at the 4th chunk, lets two chunks through while the session is down, and waits
    for the reconnect.
    """
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg, _ = load_config(tmp_path / "c.toml")
    b = {"ack_timeout_s": ack_timeout_s, "max_status_queries": max_status_queries}
    if ignore_status:
        # The answers never come: the exit's reconciliation needs no 5 s to learn that.
        b["reconcile_timeout_s"] = 0.2
    cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update=b)})
    (order,) = cfg.orders
    period_ns = int(order.period_s * 1e9)
    decisions = np.arange(order.start_ns, order.end_ns + period_ns, period_ns)
    clock = ManualClock(T_1400)
    er_log = tmp_path / "er.jsonl"
    with capture_logs() as logs:
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

            def open_children() -> set[str]:
                return {c for r in daemon.runners for c in r.in_doubt()}

            def muted() -> set[str]:
                if not er_log.exists():
                    return set()
                recs = (json.loads(x) for x in er_log.read_text().splitlines())
                return {r["client_order_id"] for r in recs if r.get("muted")}

            def gap_pending() -> bool:
                # Reports lost on the wire are recovered when a later message shows the gap:
                # until then the child they belong to waits for the next one.
                gaps = [e for e in logs if str(e.get("detail", "")).startswith("gap_detected")]
                return lose_reports > 0 and not gaps

            def settled() -> bool:
                return open_children() <= muted() or gap_pending()

            def queried() -> list[str]:
                return [e["client_order_id"] for e in logs if e["event"] == "order.status_query"]

            async def after_chunk() -> None:
                await wait_until(settled, what="every unmuted child has its final report")
                left = open_children() & muted()
                if not left or not advance or daemon.control.halted:
                    return
                n0 = len(queried())
                clock.advance(int(ack_timeout_s * 1e9))  # the acknowledgement timeout passes
                if ignore_status:
                    await wait_until(
                        lambda: left <= set(queried()[n0:]) or daemon.control.halted,
                        what=f"status queries for {sorted(left)}",
                    )
                else:
                    await wait_until(
                        lambda: not left & open_children(),
                        what=f"answers to the status queries for {sorted(left)}",
                    )

            class GatedFeed:
                """The replay in chunks of at most 2,000 rows that never span a decision."""

                def __init__(self, sym: str) -> None:
                    self.inner = feed_factory(sym)
                    self.symbol = sym
                    self.stats = None

                async def updates(self):
                    n = 0
                    async for b in self.inner.updates():
                        cuts = set(range(0, len(b), 2000))
                        cuts |= set(np.searchsorted(b.ts_event_ns, decisions).tolist())
                        edges = [*sorted(c for c in cuts if 0 <= c < len(b)), len(b)]
                        for i, j in itertools.pairwise(edges):
                            n += 1
                            if chaos and n == 4:
                                venue.drop_connections()
                                await wait_until(
                                    logged(logs, "broker.reconnect_scheduled"), what="the drop"
                                )
                            if chaos and n == 7:
                                await wait_until(lambda: broker.available, what="the reconnect")
                            if not (chaos and 4 <= n < 7):  # decisions while the session is down
                                await after_chunk()
                            yield b.slice(i, j)

                async def aclose(self) -> None:
                    await self.inner.aclose()

            daemon = Daemon(cfg, GatedFeed, broker, None, None, None, ack_clock=clock)
            (s,) = await asyncio.wait_for(daemon.run(), 120)
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
    """Every 3rd order executes at the venue but none of its reports is ever sent: once the
    acknowledgement timeout has passed (on the watchdog's clock), the daemon asks for its
    status, applies the venue's execution once, and the parent completes with exactly the
    venue's fills. The children whose reports did come are never queried."""
    s, logs, venue_fills = await work(tmp_path, chaos=False, mute_every=3)
    muted = {
        rec["client_order_id"]
        for rec in map(json.loads, (tmp_path / "er.jsonl").read_text().splitlines())
        if rec.get("muted")
    }
    queried = [e["client_order_id"] for e in logs if e["event"] == "order.status_query"]
    reconciled = {
        e["client_order_id"] for e in logs if e["event"] == "order.reconciled" and e["changed"]
    }
    assert len(muted) >= 4
    assert sorted(queried) == sorted(muted)  # each muted child once, and nothing else
    assert reconciled == muted  # each closed by its answer, during the run
    assert not [e for e in logs if e["event"] == "reconcile.started"]  # none left for the exit
    ours = defaultdict(float)
    for e in logs:
        if "fill_qty" in e and e.get("strategy") == "mpc":
            ours[e["client_order_id"]] += e["fill_qty"]
        if e["event"] == "order.reconciled" and e["changed"]:
            ours[e["client_order_id"]] = e["filled_qty"]
    assert dict(ours) == pytest.approx(dict(venue_fills))
    assert s.filled_qty == pytest.approx(sum(venue_fills.values()))
    assert s.filled_qty == s.target_qty


async def test_no_status_query_before_the_acknowledgement_timeout(tmp_path):
    """The watchdog's timeout runs on its clock, not the event loop's: with a timeout of 1 ms
    and a clock that never moves, no child is queried during a run that lasts far longer on
    the wall clock; the muted children wait for the exit's reconciliation."""
    s, logs, venue_fills = await work(
        tmp_path, chaos=False, mute_every=3, advance=False, ack_timeout_s=0.001
    )
    assert not [e for e in logs if e["event"] == "order.status_query"]
    (rec,) = [e for e in logs if e["event"] == "reconcile.started"]
    assert rec["at"] == "exit" and rec["n_in_doubt"] >= 1
    assert s.filled_qty == pytest.approx(sum(venue_fills.values()))


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
    sent.

    The untrusted venue is OpenSSL's own server in another process: a refused handshake leaves
    asyncio's server-side SSL transport to the garbage collector (CPython 3.11), which would
    fail whichever later test was running when it is collected."""
    import socket
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        *("openssl", "s_server", "-quiet", "-accept", str(port)),
        *("-cert", str(cert), "-key", str(key)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def listening() -> bool:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            w.close()
            await w.wait_closed()
            return True

        await wait_until(listening, timeout_s=20, what="openssl s_server listening")
        bad = FixBroker(
            "127.0.0.1", port, "AGENT", "VENUE", tls=True, reconnect_max_s=0.05
        )  # the system's CAs do not know this venue
        with capture_logs() as logs:
            with pytest.raises(TimeoutError):
                await bad.start(timeout_s=0.5)
            await bad.aclose()
    finally:
        server.kill()
        await server.wait()
    assert isinstance(acc, OrderAccepted) and acc.client_order_id == "T-00001"
    failed = [e for e in logs if e["event"] == "broker.connect_failed"]
    assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0]["error"]
    recs = [json.loads(x) for x in er_log.read_text().splitlines()]
    assert {r["client_order_id"] for r in recs} == {"T-00001"}
