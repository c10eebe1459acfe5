"""Issue 18, feed side: one test per finding (items 1, 2, 4, 5, 6, 7), real sockets, bounded."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from agent import serve_feed
from agent.config import load_config
from agent.errors import ConfigError
from feeds.binance_depth import BinanceBook, DepthDiff, DepthSnapshot, decode_message
from feeds.clock import ManualClock
from feeds.jsonmsg import decode_mbp10, encode_mbp10
from feeds.live import WebSocketFeed
from feeds.model import EV_TRADE, SIDE_ASK, SIDE_BID
from feeds.readers import read_mbp10
from feeds.replay import ReplayFeed
from feeds.server import FeedServer
from tests.conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
BWS = SHARED_DATA / "binance-ws"
LOBSTER1 = SHARED_DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"
T0 = 1_748_871_000_000_000_000  # 2025-06-02 13:30 UTC, ns
TEN_YEARS_NS = 10 * 365 * 86_400 * 10**9


def frame(ts: int, **kw: object) -> str:
    msg = {"type": "mbp10", "symbol": "SYNA", "ts_event": ts, "bid_px": [10.0, 9.99]}
    msg |= {"bid_sz": [100, 100], "ask_px": [10.01, 10.02], "ask_sz": [100, 100]}
    return json.dumps(msg | kw)


# ------------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("ts", [2**63, 2**64, 2**63 - 1 + 1, -1])
def test_event_time_beyond_int64_is_a_bad_frame_not_an_exception(ts: int) -> None:
    """ts_event >= 2**63 (or < 0) decodes to bad_schema; it used to raise OverflowError."""
    assert decode_mbp10(frame(ts), T0, "SYNA") == (None, "bad_schema")


@pytest.mark.parametrize("e_ms", [2**63, 2**63 // 1_000_000 + 1])
def test_binance_event_time_beyond_int64_ns_is_bad_schema(e_ms: int) -> None:
    """A Binance E whose nanoseconds overflow int64 is bad_schema, for diffs and trades."""
    diff = {"e": "depthUpdate", "E": e_ms, "U": 1, "u": 2, "b": [], "a": []}
    trade = {"e": "trade", "E": e_ms, "p": "1", "q": "1", "m": True}
    assert decode_message(json.dumps(diff)) == (None, "bad_schema")
    assert decode_message(json.dumps(trade)) == (None, "bad_schema")


async def test_a_huge_timestamp_over_the_socket_leaves_the_reader_alive() -> None:
    """The frame that killed the reader (1011, no reconnect) is now counted; books still come."""
    rows = next(read_mbp10(SAMPLE, "SYNA", chunk_rows=8))
    async with FeedServer(SAMPLE, speed=1e-9, symbol="SYNA") as srv:
        feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.02)
        got = 0
        async with asyncio.timeout(20):
            async for b in feed.updates():
                if feed.stats.connects and feed.stats.frames == 0:
                    srv.send_raw(frame(2**63))
                    srv.send_raw(encode_mbp10(rows, 0))
                got += len(b)
                if got:
                    break
        alive = feed._reader is not None and not feed._reader.done()
        await feed.aclose()
    assert alive and got == 1
    assert feed.stats.invalid == {"bad_schema": 1} and feed.stats.connects == 1


# ------------------------------------------------------------------------------- item 2


def test_a_frame_ten_years_ahead_is_rejected_against_the_clock_and_counted() -> None:
    """With max_clock_skew_s, a frame too far ahead (or behind) the injectable clock is
    rejected with a log line; the next genuine frame is accepted (the clock is not poisoned)."""
    clock = ManualClock(T0)
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=clock, max_clock_skew_s=30)
    with capture_logs() as logs:
        feed._on_frame(frame(T0 + TEN_YEARS_NS))
        feed._on_frame(frame(T0 - TEN_YEARS_NS))
        clock.advance(10**9)
        feed._on_frame(frame(T0 + 10**9))
    assert feed.stats.invalid == {"time_ahead": 1, "time_behind": 1}
    taken = feed._take()
    assert feed.stats.books == 1 and taken is not None
    assert taken.ts_event_ns.tolist() == [T0 + 10**9]
    bad = [e for e in logs if e["event"] == "feed.invalid_message"]
    assert [e["reason"] for e in bad] == ["time_ahead", "time_behind"]


def test_binance_frames_are_checked_against_the_clock_too() -> None:
    """A Binance diff dated years ahead is time_ahead; the book still follows the chain."""
    e_now = T0 // 1_000_000
    clock = ManualClock(T0)
    feed = WebSocketFeed(
        "ws://x:1", "BTCUSDT", clock=clock, fmt="binance-depth", max_clock_skew_s=5
    )
    feed._on_frame(json.dumps({"lastUpdateId": 10, "bids": [["100", "1"]], "asks": [["101", "1"]]}))
    ahead = {"e": "depthUpdate", "E": e_now + TEN_YEARS_NS // 10**6, "U": 10, "u": 11}
    feed._on_frame(json.dumps(ahead | {"b": [], "a": []}))
    good = {"e": "depthUpdate", "E": e_now, "U": 12, "u": 12, "b": [["99", "2"]], "a": []}
    feed._on_frame(json.dumps(good))
    assert feed.stats.invalid == {"time_ahead": 1} and feed.stats.books == 1


def test_without_a_tolerance_one_bad_time_cannot_wedge_the_feed() -> None:
    """No clock check configured: a far-future book gets in, but the genuine books that follow
    are rejected only clock_reset_after (3) times, then the bad time is dropped (feed.clock_reset)
    and genuine books flow again; before, every later frame was "time backwards" for ever."""
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA", clock=ManualClock(T0))
    with capture_logs() as logs:
        feed._on_frame(frame(T0))
        feed._on_frame(frame(T0 + TEN_YEARS_NS))
        for k in range(1, 6):
            feed._on_frame(frame(T0 + k))
    assert feed.stats.invalid == {"time_backwards": 2}
    assert feed.stats.books == 2 + 3 and feed.stats.clock_resets == 1
    reset = [e for e in logs if e["event"] == "feed.clock_reset"]
    assert reset and reset[0]["last_ts"] == T0 + TEN_YEARS_NS and reset[0]["ts"] == T0 + 3


def test_clock_skew_is_a_feed_config_key(tmp_path: Path) -> None:
    """[feed].max_clock_skew_s is validated (> 0, finite) and reaches the live feed."""
    from agent.runner import make_feed_factory

    base = '[feed]\nkind = "websocket"\nurls = { SYNA = "ws://127.0.0.1:9" }\n'
    order = '[[orders]]\nid = "A"\nsymbol = "SYNA"\nside = "buy"\nquantity = 100\n'
    order += "start = 2025-06-02T13:35:00Z\nend = 2025-06-02T14:15:00Z\nperiod_s = 300\n"
    p = tmp_path / "c.toml"
    p.write_text(base + "max_clock_skew_s = 2.5\n" + order)
    cfg = load_config(p)[0]
    feed = make_feed_factory(cfg)("SYNA")
    assert isinstance(feed, WebSocketFeed) and feed.max_skew_ns == 2_500_000_000
    for bad in ("0", "-1", "inf", "nan"):
        p.write_text(base + f"max_clock_skew_s = {bad}\n" + order)
        with pytest.raises(ConfigError, match="max_clock_skew_s"):
            load_config(p)


# ------------------------------------------------------------------------------- item 4


def test_futures_keeps_the_diff_whose_u_equals_the_snapshot_id() -> None:
    """USD-M: only u < lastUpdateId is dropped; the straddling diff has u == lastUpdateId."""
    book = BinanceBook("BTCUSDT", futures=True)
    book.apply_snapshot(DepthSnapshot(100, [("10", "1")], [("11", "1")]))
    assert book.apply_diff(DepthDiff(90, 99, [], [], pu=89)) == "stale"
    assert book.apply_diff(DepthDiff(95, 100, [("10", "2")], [], pu=94)) == "applied"
    assert book.apply_diff(DepthDiff(101, 105, [], [], pu=100)) == "applied"
    spot = BinanceBook("BTCUSDT")
    spot.apply_snapshot(DepthSnapshot(100, [("10", "1")], [("11", "1")]))
    assert spot.apply_diff(DepthDiff(95, 100, [], [])) == "stale"  # spot: u <= lastUpdateId


def test_a_duplicate_diff_is_dropped_not_a_gap_and_the_symbol_is_checked() -> None:
    """A diff already applied is 'duplicate' (no reconnect); another symbol's is refused."""
    book = BinanceBook("BTCUSDT")
    book.apply_snapshot(DepthSnapshot(100, [("10", "1")], [("11", "1")]))
    d = DepthDiff(101, 103, [("10", "5")], [], s="BTCUSDT")
    assert book.apply_diff(d) == "applied"
    assert book.apply_diff(d) == "duplicate"
    assert book.apply_diff(DepthDiff(104, 104, [], [], s="ETHUSDT")) == "wrong_symbol"
    assert book.apply_diff(DepthDiff(104, 104, [], [], s="btcusdt")) == "applied"


@pytest.mark.realdata
async def test_usdm_futures_recording_serves_books_without_gaps() -> None:
    """The real USD-M recording through serve-feed and the live feed in futures mode: books
    arrive and there is no sequence gap (before: 58 gaps, 59 connections, 0 books in 70 s)."""
    rec = BWS / "usdm__btcusdt_20240808.gz"
    if not rec.exists():
        pytest.skip(f"real data not available: {rec}")
    async with FeedServer(
        rec, speed=20, fmt="binance-depth", futures=True, symbol="BTCUSDT"
    ) as srv:
        feed = WebSocketFeed(
            srv.url, "BTCUSDT", fmt="binance-depth", futures=True, heartbeat_s=0.05
        )
        rows = trades = 0
        async with asyncio.timeout(60):
            async for b in feed.updates():
                rows += len(b)
                trades += int(b.is_trade.sum())
                if rows >= 200:
                    break
        producer_alive = not srv.done.is_set()
        await feed.aclose()
    assert srv.error is None and producer_alive
    assert feed.stats.gaps == 0 and feed.stats.connects == 1
    assert trades > 0


# ------------------------------------------------------------------------------- item 5


@pytest.mark.realdata
async def test_combined_stream_uses_trades_and_ignores_tickers_quietly() -> None:
    """Spot combined stream (depth, trade, bookTicker): trades become T rows with the aggressor
    side and size; bookTicker is ignored without a warning; nothing is counted invalid."""
    rec = BWS / "spot__btcusdt_20240808.gz"
    if not rec.exists():
        pytest.skip(f"real data not available: {rec}")
    async with FeedServer(rec, speed=20, fmt="binance-depth", symbol="BTCUSDT") as srv:
        feed = WebSocketFeed(srv.url, "BTCUSDT", fmt="binance-depth", heartbeat_s=0.05)
        trade_rows = []
        with capture_logs() as logs:
            async with asyncio.timeout(60):
                async for b in feed.updates():
                    trade_rows += [b.take(b.is_trade)] if b.is_trade.any() else []
                    if sum(len(t) for t in trade_rows) >= 50:
                        break
            await feed.aclose()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings == [] and feed.stats.invalid == {}
    t = trade_rows[0]
    assert t.action is not None and t.action[0] == EV_TRADE
    assert t.ev_side is not None and t.ev_side[0] in (SIDE_ASK, SIDE_BID)
    assert t.ev_sz is not None and t.ev_sz[0] > 0 and t.ev_px is not None
    assert t.bid_px[0, 0] < t.ev_px[0] + 1e-9 or t.ev_px[0] <= t.ask_px[0, 0] + 1e-9


def test_binance_trade_side_from_buyer_is_maker() -> None:
    """m true (buyer is maker) is a sell aggressor (A); m false a buy aggressor (B)."""
    feed = WebSocketFeed("ws://x:1", "BTCUSDT", fmt="binance-depth10")
    feed._on_frame(
        json.dumps({"lastUpdateId": 1, "E": 1000, "bids": [["99", "1"]], "asks": [["100", "2"]]})
    )
    for m in (True, False):
        feed._on_frame(
            json.dumps({"e": "trade", "E": 1001, "s": "BTCUSDT", "p": "100", "q": "0.5", "m": m})
        )
    batch = feed._take()
    assert batch is not None and batch.ev_side is not None and batch.ev_sz is not None
    assert batch.action is not None and batch.action[0] == 0  # the book, then its two trades
    assert bytes(batch.action[1:]).decode() == "TT"
    assert bytes(batch.ev_side[1:]).decode() == "AB" and batch.ev_sz[1:].tolist() == [0.5, 0.5]
    assert feed.stats.trades == 2 and feed.stats.conflated == 0


def test_trades_survive_conflation_behind_the_latest_book() -> None:
    """Past its cap of waiting books, a slow consumer's feed conflates the oldest books, never
    a trade: it gets every trade and the newest books, in time order."""
    feed = WebSocketFeed("ws://x:1", "SYNA", clock=ManualClock(T0), max_buffered_rows=1)
    feed._on_frame(frame(T0, action="T", side="B", price=10.01, size=300))
    feed._on_frame(frame(T0 + 1))
    feed._on_frame(frame(T0 + 2, action="T", side="A", price=10.0, size=200))
    feed._on_frame(frame(T0 + 3, action="A", side="B", price=9.99, size=100))
    feed._on_frame(frame(T0 + 4))
    b = feed._take()
    assert b is not None and b.ev_sz is not None
    assert b.ts_event_ns.tolist() == [T0, T0 + 2, T0 + 4]
    assert b.ev_sz[b.is_trade].tolist() == [300.0, 200.0]
    assert feed.stats.conflated == 2


# ------------------------------------------------------------------------------- item 6


def _order(tmp: Path, files: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(
        f"[feed]\nfiles = {{ AMZN = {files} }}\n"
        '[[orders]]\nid = "A"\nsymbol = "AMZN"\nside = "buy"\nquantity = 100\n'
        "start = 2012-06-21T13:35:00Z\nend = 2012-06-21T14:15:00Z\nperiod_s = 300\n"
    )
    return p


def test_feed_files_refuse_an_unknown_type_in_one_line(tmp_path: Path) -> None:
    """feed.files with a file of no supported format fails at start, naming the key."""
    (tmp_path / "books.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError) as e:
        load_config(_order(tmp_path, '"books.parquet"'))
    msg = str(e.value)
    assert "feed.files" in msg and "books.parquet" in msg and "\n" not in msg.strip()


@pytest.mark.realdata
async def test_a_lobster_zip_in_feed_files_replays(tmp_path: Path) -> None:
    """A LOBSTER zip is accepted at start and the replay reads its books (before: 0 rows and
    a 57-line traceback)."""
    if not LOBSTER1.exists():
        pytest.skip(f"real data not available: {LOBSTER1}")
    cfg = load_config(_order(tmp_path, f'"{LOBSTER1}"'))[0]
    feed = ReplayFeed(cfg.feed.files["AMZN"], "AMZN")
    rows = trades = 0
    async for b in feed.updates():
        rows += len(b)
        trades += int(b.is_trade.sum())
    assert rows > 50_000 and trades > 1000 and feed.stats.rows_read == rows


# ------------------------------------------------------------------------------- item 7


def test_serve_feed_accepts_binance_depth() -> None:
    """`serve-feed --format binance-depth`, as the README shows, parses (with --futures)."""
    parser = argparse.ArgumentParser()
    serve_feed.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["serve-feed", "--data", "x.gz", "--format", "binance-depth", "--futures"]
    )
    assert args.format == "binance-depth" and args.futures


def test_serve_feed_refuses_an_unknown_book_file_in_one_line(tmp_path: Path, capsys) -> None:
    """An mbp10-json replay of a file of no known type exits 2 with one line, not a traceback."""
    parser = argparse.ArgumentParser()
    serve_feed.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve-feed", "--data", str(tmp_path / "x.parquet")])
    assert args.func(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


async def test_a_stalled_client_is_dropped_and_memory_is_bounded() -> None:
    """A client that stops reading is dropped once its unsent data passes max_buffer_bytes."""
    srv = FeedServer(SAMPLE, speed=1e-9, max_buffer_bytes=256 * 1024)
    async with srv, connect(srv.url, max_size=None) as ws:
        ws.transport.pause_reading()  # a stalled consumer
        blob = json.dumps({"pad": "x" * 60_000})
        async with asyncio.timeout(20):
            while srv.dropped_slow == 0:
                for _ in range(20):
                    srv._broadcast(blob)
                await asyncio.sleep(0)
    assert srv.dropped_slow == 1 and not srv._clients


async def test_a_client_that_sent_frames_gets_the_closing_handshake_at_once() -> None:
    """The server reads what clients send, so its close is not held up (before: 9.4 s)."""
    async with FeedServer(SAMPLE, speed=1e-9) as srv:
        ws = await connect(srv.url)
        for k in range(200):
            await ws.send(f"hello {k}")
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(srv.aclose())
        async with asyncio.timeout(3):  # the server's close_timeout is 2 s; before: 10 s
            await ws.wait_closed()
            await closing
    assert ws.close_code == 1001


async def test_normal_closes_are_1000_and_a_server_close_is_logged() -> None:
    """aclose() closes with 1000 (not 1011); a 1001 from the server is feed.disconnected."""
    async with FeedServer(SAMPLE, speed=1e-9) as srv:
        feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.02, reconnect_max_s=0.05)
        with capture_logs() as logs:
            async with asyncio.timeout(20):
                async for _ in feed.updates():
                    if feed.stats.connects:
                        break
            await feed.aclose()
            async with asyncio.timeout(5):
                # The server's handler logs when the close handshake is done: poll, bounded.
                done = "feed_server.client_disconnected"
                while not any(e["event"] == done for e in logs):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    codes = [e["code"] for e in logs if e["event"] == "feed_server.client_disconnected"]
    assert codes == [1000]

    srv = await FeedServer(SAMPLE, speed=1e-9).start()
    feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.02, reconnect_max_s=5)
    with capture_logs() as logs:
        async with asyncio.timeout(20):
            async for _ in feed.updates():
                if feed.stats.connects:
                    break
        await srv.aclose()
        async with asyncio.timeout(5):
            while not feed.stats.disconnects:  # noqa: ASYNC110 - a counter, polled, bounded
                await asyncio.sleep(0.01)
        await feed.aclose()
    gone = [e for e in logs if e["event"] == "feed.disconnected"]
    assert gone and gone[0]["code"] == 1001
