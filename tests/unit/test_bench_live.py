"""bench/bench_live.py's pieces that decide what it measures: the configs it writes (the daemon's
with a FIX broker, the venue's), the books it gives the venue, and how a child's latency is
matched to its triggering frame and to its NewOrderSingle on the socket."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from feeds.readers import read_mbp10
from tests.conftest import REPO


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("bench_live")


URLS = [f"ws://127.0.0.1:{9000 + k}" for k in range(4)]


def test_fix_config_is_accepted_with_its_state_next_to_it(bench, tmp_path: Path) -> None:
    cfg_path = tmp_path / "live.toml"
    cfg_path.write_text(bench._config(URLS, 10_000, 10, 10, "loop", fix_port=43210))
    cfg, _ = load_config(cfg_path)
    assert cfg.broker.kind == "fix"
    assert (cfg.broker.host, cfg.broker.port) == ("127.0.0.1", 43210)
    assert cfg.broker.latency_ms == 5 and cfg.broker.collar_bps == 100
    assert cfg.broker.store_path == tmp_path / "fix-seq.json"
    assert cfg.journal.path == tmp_path / "journal.sqlite"
    assert [o.symbol for o in cfg.orders] == bench.SYMBOLS


def test_simulated_config_is_unchanged(bench, tmp_path: Path) -> None:
    cfg_path = tmp_path / "live.toml"
    cfg_path.write_text(bench._config(URLS, 1000, 10, 10))
    cfg, _ = load_config(cfg_path)
    assert cfg.broker.kind == "simulated" and cfg.journal.path is None
    assert cfg.broker.latency_ms == 5 and cfg.broker.collar_bps == 100


def test_venue_gets_the_books_the_feed_sends(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 distinct books per symbol, 11 sent: the feed cycles, so must the venue's file.
    monkeypatch.setattr(bench, "TEMPLATE_ROWS", 3)
    rate, seconds = 40.0, 1.0
    per_sym = int(rate * seconds / len(bench.SYMBOLS)) + 1
    files = bench._venue_files(tmp_path, rate, seconds)
    cfg_path = tmp_path / "venue.toml"
    cfg_path.write_text(bench._venue_config(files))
    cfg, _ = load_config(cfg_path)  # what serve-venue reads: [feed] files and [broker]
    assert cfg.feed.files == files and cfg.broker.kind == "fix"
    assert cfg.broker.sender_comp_id == "AGENT" and cfg.broker.target_comp_id == "VENUE"
    tmpl = bench._templates(3)
    for k, sym in enumerate(bench.SYMBOLS):
        (b,) = list(read_mbp10(files[sym], symbol=sym))
        assert len(b) == per_sym
        j = np.arange(per_sym)
        assert np.array_equal(b.ts_event_ns, bench.T0_NS + j * bench.DT_EVENT_NS)
        for i in range(per_sym):
            head, tail = tmpl[k][i % 3]
            m = json.loads(head + b"0" + tail)
            assert m["symbol"] == sym
            np.testing.assert_array_equal(b.bid_sz[i], m["bid_sz"])
            np.testing.assert_array_equal(b.ask_sz[i], m["ask_sz"])
            px = [np.nan if v is None else v for v in m["bid_px"]]
            np.testing.assert_array_equal(b.bid_px[i], px)
            px = [np.nan if v is None else v for v in m["ask_px"]]
            np.testing.assert_array_equal(b.ask_px[i], px)


def _submitted(bench, coid: str, sym: str, ts_ns: int, logged_ns: int) -> dict:
    return {
        "event": "order.submitted",
        "strategy": "mpc",
        "client_order_id": coid,
        "symbol": sym,
        "ts_ns": ts_ns,
        "timestamp": bench._iso(logged_ns),  # as structlog writes it: microseconds, Z
    }


def test_latency_is_matched_to_the_trigger_and_to_the_nos_by_clordid(bench) -> None:
    T0, DT = bench.T0_NS, bench.DT_EVENT_NS
    sent = np.zeros((4, 10), dtype=np.int64)
    base = 1_796_000_000_000_000_000
    sent[1, :] = base + np.arange(10) * 1_000_000  # S1's frames, 1 ms apart
    # Decision at event time T0 + 3 DT: the book that proves it complete is book 4.
    a = _submitted(bench, "P1-x-00001", "S1", T0 + 3 * DT, base + 4_000_000 + 2_500_000)
    b = _submitted(bench, "P1-x-00002", "S1", T0 + 6 * DT, base + 7_000_000 + 1_000_000)
    events = [
        a,
        b,
        {"event": "broker.order_sent", "client_order_id": "P1-x-00001", "written_ns": 0},
        {"event": "broker.session_event", "client_order_id": "P1-x-00002"},
        {
            "event": "broker.order_sent",
            "client_order_id": "P1-x-00001",
            "written_ns": base + 4_000_000 + 3_250_000,
        },
    ]
    written = bench.written_of(events)
    assert written == {"P1-x-00001": base + 7_250_000}  # the last line of a ClOrdID wins
    # Simulated: to order.submitted (log time, microseconds).
    assert bench.latency_of(a, sent) == pytest.approx(2.5e-3, abs=1e-9)
    assert bench.latency_of(b, sent) == pytest.approx(1.0e-3, abs=1e-9)
    # FIX: to its NewOrderSingle on the socket (nanoseconds); none written: not counted.
    assert bench.latency_of(a, sent, written) == pytest.approx(3.25e-3, abs=1e-12)
    assert bench.latency_of(b, sent, written) is None
    # A trigger frame never sent (past the feed's end): not counted either.
    late = _submitted(bench, "P1-x-00003", "S1", T0 + 9 * DT, base)
    assert bench.latency_of(late, sent, {"P1-x-00003": base}) is None
    # Once the daemon logs the trigger's receipt, it is the start.
    c = a | {"trigger_recv_ns": base + 4_000_000 + 50_000}
    assert bench.latency_of(c, sent, written) == pytest.approx(3.2e-3, abs=1e-12)


def test_feed_process_sends_every_frame_whole_and_in_order(bench, tmp_path: Path) -> None:
    """The feed process writes each tick's frames in one transport write per connection: a
    real websockets client must still get every frame as its own message, in order, with the
    event times the bench matches the triggers by."""
    import asyncio
    import os
    import subprocess
    import sys

    from websockets.asyncio.client import connect

    rate, seconds = 2000.0, 1.0
    out = tmp_path / "sent.npy"
    cmd = [sys.executable, bench.__file__, "--serve", "--rate", str(rate)]
    cmd += ["--seconds", str(seconds), "--out", str(out)]
    srv = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO / "bench",
    )
    try:
        assert srv.stdout is not None
        urls = json.loads(srv.stdout.readline())["urls"]
        per_sym = int(rate * seconds / len(urls)) + 1

        async def read(url: str) -> list[int]:
            ts = []
            async with connect(url, compression=None, proxy=None) as ws:
                while len(ts) < per_sym:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    ts.append(m["ts_event"])
            return ts

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(read(u) for u in urls))

        got = asyncio.run(main())
        assert srv.wait(timeout=60) == 0
    finally:
        srv.kill()
        srv.wait()
        if srv.stdout is not None:
            srv.stdout.close()
    want = [bench.T0_NS + j * bench.DT_EVENT_NS for j in range(per_sym)]
    assert got == [want] * len(urls)
    sent = np.load(out)
    assert sent.shape == (len(urls), per_sym) and (sent > 0).all()
