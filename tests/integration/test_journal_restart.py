"""Crash safety: a daemon stopped mid-order resumes from its journal with exact remaining
quantity, no client order id reused, no period decided twice, and every fill counted once."""

from __future__ import annotations

import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.config import load_config
from agent.daemon import run
from agent.journal import Journal
from agent.model import ChildOrder, OrderFilled, Side
from agent.runner import make_feed_factory
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
CONFIG = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
collar_bps = 100
[[orders]]
id = "J"
symbol = "SYNA"
side = "buy"
quantity = 40000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T17:35:00Z
period_s = 600
lot = 100
"""
CUT = 1_748_874_600 * 10**9 + 1  # 14:30 UTC: the first run's data stops here (its "crash")


def journal_roundtrip(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    c = ChildOrder("P-00001", "P", "S", Side.BUY, 100.0, 10.0, 5)
    return j, c


async def test_journal_round_trip_and_durability_settings(tmp_path):
    j, c = journal_roundtrip(tmp_path)
    await j.intent("mpc", c)
    j.event("P", "mpc", OrderFilled("P-00001", "x1", 40.0, 10.0, 6))
    j.decision("P", 0, 10.0)
    await j.flush()
    h = j.load("P")
    assert h.items == [("mpc", c), ("mpc", OrderFilled("P-00001", "x1", 40.0, 10.0, 6))]
    assert h.periods == [0] and h.arrival_mid == 10.0
    mode = j._pool.submit(lambda: j._conn.execute("PRAGMA journal_mode").fetchone()[0]).result()
    sync = j._pool.submit(lambda: j._conn.execute("PRAGMA synchronous").fetchone()[0]).result()
    assert (mode, sync) == ("wal", 2)  # WAL, FULL
    j.close()


async def test_restart_resumes_without_duplicates(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg, _ = load_config(tmp_path / "c.toml")
    factory = make_feed_factory(cfg)

    class Cut:
        def __init__(self, sym):
            self.inner, self.symbol, self.stats = factory(sym), sym, None

        async def updates(self):
            async for b in self.inner.updates():
                k = int(np.searchsorted(b.ts_event_ns, CUT))
                if k:
                    yield b.slice(0, k)
                if k < len(b):
                    return

        async def aclose(self):
            await self.inner.aclose()

    path = tmp_path / "journal.sqlite"
    j1 = Journal(path)
    with capture_logs() as logs1:
        (s1,) = await run(cfg, Cut, journal=j1)
    j1.close()
    assert 0 < s1.filled_qty < 40000

    j2 = Journal(path)
    with capture_logs() as logs2:
        (s2,) = await run(cfg, factory, journal=j2)
    j2.close()

    def sent(logs):
        return [
            e["client_order_id"]
            for e in logs
            if e["event"] == "order.submitted" and e["strategy"] == "mpc"
        ]

    def periods(logs):
        return [e["period"] for e in logs if e["event"] == "mpc.step"]

    assert not set(sent(logs1)) & set(sent(logs2)), "a client order id was sent twice"
    assert not set(periods(logs1)) & set(periods(logs2)), "a period was decided twice"
    restored = next(e for e in logs2 if e["event"] == "order.restored")
    assert restored["filled_qty"] == s1.filled_qty
    fills = [
        e["fill_qty"]
        for logs in (logs1, logs2)
        for e in logs
        if "fill_qty" in e and e.get("strategy") == "mpc"
    ]
    assert s2.filled_qty == sum(fills) == 40000
    assert s2.arrival_mid == s1.arrival_mid


async def test_the_twap_shadows_intents_are_journaled_before_their_events(tmp_path):
    """The shadow leg's intents are queued, not awaited (it never reaches a venue), but still
    written, each before its events, and the restart above resumes it from them."""
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg, _ = load_config(tmp_path / "c.toml")
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    with capture_logs():
        (s,) = await run(cfg, make_feed_factory(cfg), journal=j)
    j.close()
    h = Journal(path).load("J")
    twap = [(i, it) for i, (leg, it) in enumerate(h.items) if leg == "twap"]
    intents = {it.client_order_id: i for i, it in twap if isinstance(it, ChildOrder)}
    assert len(intents) >= 4 and s.twap_filled_qty == 40000
    for i, it in twap:
        if not isinstance(it, ChildOrder):
            assert intents[it.client_order_id] < i, it  # the intent came first
