"""Live mode on loopback: the daemon against the feed server, with dropped connections, a
stall and garbage frames; and a fuzz of the frame decoder. Real sockets, bounded run times."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent import accel
from agent.config import load_config
from agent.daemon import run
from agent.runner import make_feed_factory
from feeds.jsonmsg import decode_mbp10
from feeds.live import WebSocketFeed
from feeds.server import FeedServer
from tests.conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"

CONFIG = """
[feed]
kind = "websocket"
wall_clock = false  # the 2025 sample replayed at speed: event time alone
urls = {{ SYNA = "{url}" }}
stale_after_s = {stale}
heartbeat_s = 0.05
reconnect_max_s = 0.2

[broker]
collar_bps = 100

[[orders]]
id = "L"
symbol = "SYNA"
side = "buy"
quantity = 20000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T14:15:00Z
period_s = 300
lot = 100
"""


def config(tmp_path: Path, url: str, stale: float = 5.0):
    p = tmp_path / "live.toml"
    p.write_text(CONFIG.format(url=url, stale=stale))
    return load_config(p)[0]


def check(logs, s):
    """Filled equals target, fills add up, no client order id sent twice."""
    assert s.filled_qty == s.target_qty == 20000
    sent = [
        e["client_order_id"]
        for e in logs
        if e["event"] == "order.submitted" and e["strategy"] == "mpc"
    ]
    assert len(sent) == len(set(sent))
    fills = sum(e["fill_qty"] for e in logs if "fill_qty" in e and e.get("strategy") == "mpc")
    assert fills == s.filled_qty


async def test_daemon_completes_an_order_on_a_live_feed(tmp_path):
    accel.warm()  # compiled before the feed streams (a cold cache takes seconds: books missed)
    t0 = time.time_ns()
    async with FeedServer(SAMPLE, speed=3600, start_delay_s=0.3) as srv:
        cfg = config(tmp_path, srv.url)
        with capture_logs() as logs:
            (s,) = await asyncio.wait_for(run(cfg, make_feed_factory(cfg), freeze_gc=True), 60)
    t1 = time.time_ns()
    check(logs, s)
    assert any(e["event"] == "feed.connected" for e in logs)
    started = next(e for e in logs if e["event"] == "daemon.started")
    assert started["jit"] == accel.status() and started["kernels"] >= 0  # which path decides
    # The start-up heap was frozen for the run (no full collection of it mid-period), and is
    # given back to the collector at the end.
    assert started["gc_frozen"] > 1000 and gc.get_freeze_count() == 0
    # Each child says when the book that triggered it was received, and when it went out:
    # wall times of this run, in that order.
    sent = [e for e in logs if e["event"] == "order.submitted" and e["strategy"] == "mpc"]
    assert sent
    for e in sent:
        assert t0 < e["trigger_recv_ns"] <= e["submitted_ns"] < t1


async def _frames_sent(srv: FeedServer, n: int, limit_s: float = 30.0) -> None:
    """Wait until the server has sent ``n`` frames (bounded: fails after ``limit_s``)."""
    async with asyncio.timeout(limit_s):
        while srv.sent < n:
            await asyncio.sleep(0.005)


async def test_dropped_connections_are_survived_without_lost_or_doubled_orders(tmp_path):
    # At 600x a reconnect (<= 0.2 s) costs at most 2 minutes of market time: no period lost.
    async with FeedServer(SAMPLE, speed=600, start_delay_s=0.3) as srv:
        cfg = config(tmp_path, srv.url)

        async def chaos():
            # Drop the connections after every 1,500 frames sent (not after wall-clock time:
            # a loaded machine sends fewer frames a second, the chaos stays at the same books).
            for i in range(1, 5):
                await _frames_sent(srv, 1500 * i)
                srv.drop_connections()
                srv.send_garbage(3)

        with capture_logs() as logs:
            task = asyncio.create_task(chaos())
            (s,) = await asyncio.wait_for(run(cfg, make_feed_factory(cfg)), 60)
            task.cancel()
    check(logs, s)
    assert sum(e["event"] == "feed.connected" for e in logs) >= 2
    assert any(e["event"] == "feed.disconnected" for e in logs)


async def test_a_stall_makes_the_feed_stale_and_no_order_goes_out_meanwhile(tmp_path):
    async with FeedServer(SAMPLE, speed=600, start_delay_s=0.3) as srv:
        cfg = config(tmp_path, srv.url, stale=0.2)

        async def stall():
            await _frames_sent(srv, 4000)  # into the order's window, whatever the machine's speed
            srv.stall(0.6)

        with capture_logs() as logs:
            task = asyncio.create_task(stall())
            (s,) = await asyncio.wait_for(run(cfg, make_feed_factory(cfg)), 60)
            task.cancel()
    names = [e["event"] for e in logs]
    assert "feed.stale" in names and "feed.resumed" in names
    i, j = names.index("feed.stale"), names.index("feed.resumed")
    assert "order.submitted" not in names[i:j]
    assert s.filled_qty == 20000  # the periods lost to the stall are re-planned, not dropped


async def test_garbage_frames_are_counted_and_skipped():
    async with FeedServer(SAMPLE, speed=1.0, start_delay_s=0.2) as srv:
        feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.05)
        got = 0
        async for b in feed.updates():
            if srv.sent == 0 and feed.stats.connects:
                srv.send_garbage(4)
                srv.send_raw(
                    '{"type":"mbp10","symbol":"SYNA","ts_event":1,'
                    '"bid_px":[10.0],"bid_sz":[1],"ask_px":[9.0],"ask_sz":[1]}'
                )
            got += len(b)
            if got >= 3:
                break
        await feed.aclose()
    assert sum(feed.stats.invalid.values()) >= 5
    assert feed.stats.invalid.get("crossed", 0) >= 1


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400),
        st.builds(
            lambda d: __import__("json").dumps(d),
            st.dictionaries(
                st.sampled_from(
                    [
                        "type",
                        "symbol",
                        "ts_event",
                        "bid_px",
                        "bid_sz",
                        "ask_px",
                        "ask_sz",
                        "ts_recv",
                    ]
                ),
                st.one_of(
                    st.none(),
                    st.integers(),
                    st.floats(allow_nan=True),
                    st.text(max_size=5),
                    st.lists(
                        st.one_of(st.none(), st.floats(allow_nan=True), st.integers()), max_size=12
                    ),
                ),
            ),
        ),
    )
)
def test_decoder_fuzz_never_raises(frame):
    batch, reason = decode_mbp10(frame, 0, "SYNA")
    assert (batch is None) != (reason == "")
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA")
    feed._on_frame(frame)  # the whole receive path: decode, validate, count
    assert feed.stats.frames == 1


BINANCE_SPOT = SHARED_DATA / "binance-ws" / "spot__btcusdt_20240808.gz"


@pytest.mark.realdata
async def test_binance_diff_stream_live_with_a_gap_and_resync():
    """The recorded Binance spot session served live: books rebuild from the snapshot and the
    U/u chain; a dropped diff is detected as a gap and a reconnect resyncs from a new snapshot;
    no book is ever crossed."""
    if not BINANCE_SPOT.exists():
        pytest.skip(f"real data not available: {BINANCE_SPOT}")
    async with FeedServer(
        BINANCE_SPOT, speed=20, fmt="binance-depth", symbol="BTCUSDT", start_delay_s=0.1
    ) as srv:
        feed = WebSocketFeed(
            srv.url, "BTCUSDT", fmt="binance-depth", heartbeat_s=0.05, reconnect_max_s=0.1
        )
        books = 0
        with capture_logs() as logs:
            async for b in feed.updates():
                if not len(b):
                    continue
                books += 1
                assert b.bid_px[0, 0] < b.ask_px[0, 0]
                if books == 30:
                    srv.skip_sequence()
                if books >= 150:
                    break
            await feed.aclose()
    names = [e["event"] for e in logs]
    assert feed.stats.gaps >= 1 and "feed.gap_detected" in names
    assert feed.stats.connects >= 2 and names.count("feed.snapshot") >= 2


def test_binance_depth10_messages_are_full_books():
    """The partial book stream: each message is the top of book, checked like any other."""
    feed = WebSocketFeed("ws://127.0.0.1:9", "BTCUSDT", fmt="binance-depth10")
    good = (
        '{"stream":"btcusdt@depth10@100ms","data":{"lastUpdateId":5,"E":1723161255208,'
        '"bids":[["100.0","1"],["99.5","2"]],"asks":[["100.5","3"]]}}'
    )
    crossed = '{"lastUpdateId":6,"bids":[["101.0","1"]],"asks":[["100.5","3"]]}'
    feed._on_frame(good)
    feed._on_frame(crossed)
    assert feed.stats.books == 1 and feed.stats.invalid == {"crossed": 1}
    b = feed._take()
    assert b is not None and len(b) == 1
    assert b.bid_px[0, :2].tolist() == [100.0, 99.5] and b.ask_sz[0, 0] == 3.0
    assert b.ts_event_ns[0] == 1723161255208 * 1_000_000
