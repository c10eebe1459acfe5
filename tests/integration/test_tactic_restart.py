"""The passive tactic across a daemon stop while a child rests: the restart resumes from the
journal with no client order id sent twice, every fill counted once, the resting child
reconciled (never re-sent as new), and the parent completed."""

from __future__ import annotations

import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.config import load_config
from agent.core.tactic import TacticConfig
from agent.daemon import run
from agent.journal import Journal
from agent.runner import make_feed_factory
from tests.integration.test_equivalence import _with_tactic
from tests.integration.test_journal_restart import CONFIG

pytestmark = pytest.mark.integration
CUT = (1_748_874_900 + 2) * 10**9  # 14:35:02 UTC, 2 s into a period: the feed stops here


async def test_restart_while_a_passive_child_rests(tmp_path, monkeypatch):
    _with_tactic(monkeypatch, TacticConfig(kind="passive", cutoff=0.9, inside=False))
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
    open_at_stop = [e for e in logs1 if e["event"] == "feed.ended_before_deadline"]
    assert open_at_stop and 0 < s1.filled_qty < 40000

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

    tifs = {e["client_order_id"]: e.get("tif") for e in logs1 if e["event"] == "order.submitted"}
    restored = next(e for e in logs2 if e["event"] == "order.restored")
    assert restored["open_qty"] > 0, "no child was working at the stop: the test tests nothing"
    in_doubt = [e["client_order_id"] for e in logs2 if e["event"] == "order.in_doubt"]
    assert in_doubt and all(tifs.get(c) == "day" for c in in_doubt), (in_doubt, tifs)
    assert not set(sent(logs1)) & set(sent(logs2)), "a client order id was sent twice"
    fills = [
        e["fill_qty"]
        for logs in (logs1, logs2)
        for e in logs
        if "fill_qty" in e and e.get("strategy") == "mpc"
    ]
    assert s2.filled_qty == pytest.approx(sum(fills)) and s2.filled_qty == pytest.approx(40000)
    assert s2.status == "completed"
