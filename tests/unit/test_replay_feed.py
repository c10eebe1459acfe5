"""ReplayFeed: validation and skip accounting, rate-limited logs, pacing on a ManualClock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from feeds import replay as replay_mod
from feeds.base import BookFeed
from feeds.clock import ManualClock
from feeds.errors import FeedDataError
from feeds.model import BookBatch
from feeds.readers import read_mbp10
from feeds.replay import ReplayFeed
from feeds.synth import generate_day, write_mbp10_csv

FIXTURES = Path(__file__).resolve().parents[1] / "data"
BAD_ROWS = FIXTURES / "mbp10_bad_rows.csv"
T0_WALL = 1_000_000_000_000


async def collect(feed: ReplayFeed) -> list[BookBatch]:
    return [b async for b in feed.updates()]


async def until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the loop until ``pred()``; bounded so a broken feed fails instead of hanging."""
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 - progress comes from worker threads
            await asyncio.sleep(0)


async def spin(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def small_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "SYNA_small.mbp-10.csv"
    return write_mbp10_csv(generate_day("SYNA", "2025-06-02", 3, n_rows=400), path)


def test_replay_feed_is_a_book_feed() -> None:
    """ReplayFeed satisfies the BookFeed protocol."""
    assert isinstance(ReplayFeed(BAD_ROWS, "TEST"), BookFeed)


async def test_fast_replay_skips_and_counts_bad_rows() -> None:
    """As fast as possible: only valid rows come out; every bad row is counted by reason."""
    feed = ReplayFeed(BAD_ROWS, "TEST")
    with capture_logs() as logs:
        out = await collect(feed)
    whole = BookBatch.concat(out)
    assert len(whole) == 3
    s = feed.stats
    assert (s.rows_read, s.rows_valid, s.rows_invalid) == (12, 3, 9)
    assert s.invalid == {
        "non_finite": 1,
        "non_positive_size": 1,
        "size_without_price": 1,
        "crossed": 1,
        "locked": 1,
        "out_of_order": 1,
        "gap": 1,
        "time_backwards": 1,
        "empty_side": 1,
    }
    bad = [e for e in logs if e["event"] == "feed.invalid_snapshot"]
    assert [e["row"] for e in bad] == list(range(1, 10))
    crossed = next(e for e in bad if e["reason"] == "crossed")
    (raw,) = read_mbp10(BAD_ROWS)
    assert crossed["ts"] == int(raw.ts_event_ns[4])
    assert crossed["log_level"] == "warning"
    finished = [e for e in logs if e["event"] == "feed.replay_finished"]
    assert finished and finished[0]["rows_invalid"] == 9


async def test_invalid_logs_are_rate_limited(tmp_path: Path) -> None:
    """After log_first rows of a reason, only a suppression notice and the counters remain."""
    df = generate_day("SYNA", "2025-06-02", 5, n_rows=60)
    df.loc[10:39, "bid_px_00"] = df.loc[10:39, "ask_px_00"] + 0.01  # 30 crossed books
    path = write_mbp10_csv(df, tmp_path / "crossed.csv")
    feed = ReplayFeed(path, "SYNA", chunk_rows=7, log_first=3)
    with capture_logs() as logs:
        out = await collect(feed)
    assert sum(len(b) for b in out) == 30
    assert feed.stats.invalid == {"crossed": 30}
    bad = [e for e in logs if e["event"] == "feed.invalid_snapshot"]
    assert [e["row"] for e in bad] == [10, 11, 12]
    assert sum(e["event"] == "feed.invalid_snapshot_suppressed" for e in logs) == 1


async def test_time_is_checked_across_chunks(tmp_path: Path) -> None:
    """A backwards timestamp at a chunk boundary is caught (prev_ts_ns is carried)."""
    df = generate_day("SYNA", "2025-06-02", 6, n_rows=20)
    df.loc[10, "ts_event"] = df.loc[0, "ts_event"]
    path = write_mbp10_csv(df, tmp_path / "back.csv")
    feed = ReplayFeed(path, "SYNA", chunk_rows=10)  # row 10 opens the second chunk
    out = await collect(feed)
    assert feed.stats.invalid == {"time_backwards": 1}
    assert sum(len(b) for b in out) == 19


async def test_fast_mode_max_batch_rows(small_day: Path) -> None:
    """max_batch_rows bounds the batches of a fast replay; nothing is lost or reordered."""
    feed = ReplayFeed(small_day, "SYNA", chunk_rows=150, max_batch_rows=64)
    out = await collect(feed)
    assert max(len(b) for b in out) <= 64
    whole = BookBatch.concat(out)
    assert len(whole) == 400
    assert np.all(np.diff(whole.ts_event_ns) > 0)
    assert feed.stats.batches_out == len(out)


async def test_missing_file_raises_with_path(tmp_path: Path) -> None:
    """A missing file raises FeedDataError naming it, from the first updates() step."""
    feed = ReplayFeed(tmp_path / "gone.csv.gz", "X")
    with pytest.raises(FeedDataError, match=r"gone\.csv\.gz"):
        await collect(feed)


async def test_reading_happens_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, small_day: Path
) -> None:
    """The reader runs (and is iterated) in a worker thread, not on the loop's thread."""
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def spy(*args: object, **kw: object):
        seen.append(threading.get_ident())
        for b in read_mbp10(*args, **kw):  # type: ignore[arg-type]
            seen.append(threading.get_ident())
            yield b

    monkeypatch.setattr(replay_mod, "read_books", spy)
    out = await collect(ReplayFeed(small_day, "SYNA", chunk_rows=100))
    assert sum(len(b) for b in out) == 400
    assert seen and loop_thread not in seen


async def test_aclose_stops_the_stream(small_day: Path) -> None:
    """aclose() ends updates() at its next step; a closed feed yields nothing."""
    feed = ReplayFeed(small_day, "SYNA", chunk_rows=50)
    got = 0
    async for b in feed.updates():
        got += len(b)
        await feed.aclose()
    assert got == 50
    assert [b async for b in feed.updates()] == []
    await feed.aclose()  # idempotent


def _due(ts: np.ndarray, speed: float) -> np.ndarray:
    return T0_WALL + np.ceil((ts - ts[0]) / speed).astype(np.int64)


async def test_paced_releases_rows_exactly_when_due(small_day: Path) -> None:
    """speed=K: a row is released once now >= t0_wall + (ts - t0_event)/K, never earlier."""
    (raw,) = read_mbp10(small_day)
    speed = 4.0
    due = _due(raw.ts_event_ns, speed)
    clock = ManualClock(T0_WALL)
    feed = ReplayFeed(small_day, "SYNA", speed=speed, clock=clock)
    released: list[tuple[int, BookBatch]] = []

    async def consume() -> None:
        async for b in feed.updates():
            released.append((clock.now_ns(), b))

    task = asyncio.create_task(consume())
    await until(lambda: len(released) == 1)
    assert len(released[0][1]) == 1  # row 0 is due at t0_wall
    # Just before row 5 is due: rows 1..4 only (in 10 ms slices).
    clock.advance_to(int(due[5]) - 1)
    await until(lambda: sum(len(b) for _, b in released) == 5)
    await spin()
    got = BookBatch.concat([b for _, b in released])
    assert got.ts_event_ns.tolist() == raw.ts_event_ns[:5].tolist()
    # Exactly at row 5's due time: row 5 alone.
    k = len(released)
    clock.advance_to(int(due[5]))
    await until(lambda: len(released) == k + 1)
    assert released[k][1].ts_event_ns.tolist() == [raw.ts_event_ns[5]]
    # Far ahead: the rest, in slices spanning at most 10 ms of wall time each.
    clock.advance_to(int(due[-1]))
    await asyncio.wait_for(task, 10)
    for _, b in released:
        d = _due(raw.ts_event_ns, speed)[np.searchsorted(raw.ts_event_ns, b.ts_event_ns)]
        assert d[-1] - d[0] <= 10_000_000
    whole = BookBatch.concat([b for _, b in released])
    np.testing.assert_array_equal(whole.ts_event_ns, raw.ts_event_ns)
    for now, b in released:
        assert (_due(raw.ts_event_ns, speed)[np.searchsorted(raw.ts_event_ns, b.ts_event_ns)]
                <= now).all()  # fmt: skip


async def test_paced_batches_are_bounded_and_follow_the_clock(small_day: Path) -> None:
    """In paced mode with small chunks, batches respect max_batch_rows and event time x K."""
    (raw,) = read_mbp10(small_day)
    speed = 10.0
    due = _due(raw.ts_event_ns, speed)
    clock = ManualClock(T0_WALL)
    feed = ReplayFeed(small_day, "SYNA", speed=speed, clock=clock, chunk_rows=60,
                      max_batch_rows=25)  # fmt: skip
    released: list[tuple[int, BookBatch]] = []

    async def consume() -> None:
        async for b in feed.updates():
            released.append((clock.now_ns(), b))

    task = asyncio.create_task(consume())
    step = int((due[-1] - due[0]) // 20) + 1
    async with asyncio.timeout(20):
        while not task.done():
            await spin(20)
            clock.advance(step)
    assert sum(len(b) for _, b in released) == 400
    assert max(len(b) for _, b in released) <= 25
    for now, b in released:
        idx = np.searchsorted(raw.ts_event_ns, b.ts_event_ns)
        assert (due[idx] <= now).all()


def test_bad_arguments() -> None:
    """speed must be positive, max_batch_rows at least 1."""
    with pytest.raises(ValueError, match="speed"):
        ReplayFeed(BAD_ROWS, "T", speed=0)
    with pytest.raises(ValueError, match="max_batch_rows"):
        ReplayFeed(BAD_ROWS, "T", max_batch_rows=0)
    with pytest.raises(ValueError, match="batch_window_ns"):
        ReplayFeed(BAD_ROWS, "T", batch_window_ns=-1)


async def test_malformed_rows_are_counted_skips(tmp_path: Path) -> None:
    """Garbage cells never stop the replay: those rows are counted and skipped."""
    lines = BAD_ROWS.read_text().splitlines()
    good = lines[1]
    lines[2] = "not-a-time," + good.split(",", 1)[1]
    lines[3] = good.replace(",100.00,", ",x.y,", 1)  # bid_px_00 unparseable
    path = tmp_path / "malformed.csv.gz"
    import gzip

    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    feed = ReplayFeed(path, "TEST")
    out = await collect(feed)
    assert sum(len(b) for b in out) == 3
    assert feed.stats.rows_read == 12
    assert feed.stats.invalid["non_finite"] == 1
    assert feed.stats.invalid["size_without_price"] == 2
