"""The passive tactic in the daemon with a journal: every cancel and replace request is
journaled before it is sent, the journal replays into the same books, and a restart on a
finished parent sends nothing again."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.core.tactic import TacticConfig
from agent.daemon import Daemon
from agent.journal import Journal
from agent.model import CancelRequested, ChildOrder, ReplaceRequested
from agent.orders.tracker import OrderTracker
from agent.runner import make_feed_factory
from tests.integration.test_equivalence import CONFIG, DAY, END, QTY, START, _with_tactic

pytestmark = pytest.mark.integration


async def _run(tmp_path: Path, journal: Journal) -> Daemon:
    p = tmp_path / "j.toml"
    p.write_text(
        CONFIG.format(
            day=DAY.as_posix(),
            history="",
            kind="twap",
            model="quadratic",
            solver="deterministic",
            risk=0.0,
            side="buy",
            qty=QTY,
            start=START,
            end=END,
        )
    )
    cfg = load_config(p)[0]
    d = Daemon(cfg, make_feed_factory(cfg), None, None, journal, None)
    await d.run()
    return d


async def test_passive_requests_are_journaled_and_replay_to_the_same_books(tmp_path, monkeypatch):
    _with_tactic(monkeypatch, TacticConfig(kind="passive", cutoff=0.05, inside=False))
    journal = Journal(tmp_path / "j.sqlite")
    d = await _run(tmp_path, journal)
    (r,) = d.runners
    assert r.summary().status == "completed"
    h = journal.load("EQ1")
    mpc = [x for leg, x in h.items if leg == "mpc"]
    assert sum(isinstance(x, ReplaceRequested) for x in mpc) >= 1
    assert sum(isinstance(x, CancelRequested) for x in mpc) >= 1
    t = OrderTracker(QTY)
    for x in mpc:
        if isinstance(x, ChildOrder):
            t.on_submitted(x, x.ts_created_ns)
        else:
            t.on_event(x)
    live = r.mpc.tracker
    assert (t.filled_qty, t.open_qty, t.n_open) == (live.filled_qty, live.open_qty, 0)
    assert {k: c.filled_qty for k, c in t.children.items()} == {
        k: c.filled_qty for k, c in live.children.items()
    }
    # a restart on the finished parent: nothing is sent again
    d2 = await _run(tmp_path, journal)
    (r2,) = d2.runners
    assert r2.mpc.n_sent == r.mpc.n_sent
    assert r2.mpc.tracker.filled_qty == pytest.approx(QTY)
    journal.close()
