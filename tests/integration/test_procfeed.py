"""Websocket feeds read in a child process (``feeds.procfeed``) against real websocket servers
on loopback: the same rows and counters as the in-loop reader, hold, a killed child, no child
left behind (after ``aclose`` or a kill -9 of the parent), and the daemon on it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection, serve

from agent.config import load_config
from agent.daemon import run
from agent.errors import ConfigError
from agent.runner import make_feed_factory
from feeds.errors import FeedError
from feeds.jsonmsg import encode_mbp10
from feeds.live import WebSocketFeed
from feeds.model import BookBatch
from feeds.procfeed import ReaderProcess
from feeds.readers import read_mbp10
from feeds.server import FeedServer
from tests.conftest import REPO
from tests.integration.test_live import CONFIG, SAMPLE, check
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

GARBAGE = [
    b"not json",
    '{"type":"mbp10","symbol":"SYNA"}',
    '{"type":"mbp10","symbol":"SYNA","ts_event":1,'
    '"bid_px":[10.0],"bid_sz":[1],"ask_px":[9.0],"ask_sz":[1]}',  # crossed
]


def sample_frames(n: int = 400) -> list[bytes | str]:
    """The first ``n`` books of the sample as messages, garbage mixed in."""
    batch = next(iter(read_mbp10(SAMPLE, symbol="SYNA")))
    frames: list[bytes | str] = [encode_mbp10(batch, i) for i in range(n)]
    for k, g in enumerate(GARBAGE):
        frames.insert(50 + 100 * k, g)
    return frames


class FrameServer:
    """A websocket server sending each client ``frames`` as it connects, then what ``push``
    broadcasts; connections stay open until closed by the client."""

    def __init__(self, frames: list[bytes | str]) -> None:
        self.frames = frames
        self.clients: list[ServerConnection] = []

    async def _handler(self, ws: ServerConnection) -> None:
        self.clients.append(ws)
        for f in self.frames:
            await ws.send(f)
        await ws.wait_closed()

    async def push(self, frame: bytes | str) -> None:
        for ws in self.clients:
            await ws.send(frame)

    async def __aenter__(self) -> FrameServer:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def take_rows(it: AsyncIterator[BookBatch], n: int, limit_s: float = 10.0) -> BookBatch:
    """Return the next ``n`` rows of a feed as one batch (fails after ``limit_s``)."""
    got: list[BookBatch] = []
    async with asyncio.timeout(limit_s):
        while sum(len(b) for b in got) < n:
            b = await anext(it)
            if len(b):
                got.append(b)
    return BookBatch.concat(got)


def gone(pid: int) -> bool:
    """Return True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def same_rows(a: BookBatch, b: BookBatch) -> None:
    """Assert equal rows (receive times aside: each reader stamps its own)."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.ts_event_ns, b.ts_event_ns)
    for name in ("bid_px", "bid_sz", "ask_px", "ask_sz", "action", "ev_side", "ev_px", "ev_sz"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


async def test_the_process_feed_delivers_the_rows_and_counts_of_the_loop_feed():
    frames = sample_frames()
    ref = WebSocketFeed("ws://127.0.0.1:9", "SYNA")
    for f in frames:
        ref._on_frame(f)  # the same frames through the in-loop receive path, synchronously
    expected = ref._take()
    assert expected is not None and ref.stats.books == len(expected) > 300
    async with FrameServer(frames) as srv:
        loop_feed = WebSocketFeed(srv.url, "SYNA", heartbeat_s=0.05)
        reader = ReaderProcess()
        proc_feed = reader.feed(srv.url, "SYNA", heartbeat_s=0.05)
        with capture_logs() as logs:
            got_loop = await take_rows(loop_feed.updates(), len(expected))
            got_proc = await take_rows(proc_feed.updates(), len(expected))
            await loop_feed.aclose()
            await proc_feed.aclose()
    same_rows(got_proc, expected)
    same_rows(got_loop, expected)
    assert got_proc.ts_recv_ns.min() > 0 and np.all(np.diff(got_proc.ts_recv_ns) >= 0)
    # The counters are the child's own, taken at close, and match the in-loop reader's.
    for st in (loop_feed.stats, proc_feed.stats):
        assert st.frames == len(frames) and st.books == len(expected)
        assert st.invalid == ref.stats.invalid and sum(st.invalid.values()) == len(GARBAGE)
        assert st.connects == 1 and st.conflated == 0
        assert st.last_ts_event_ns == int(expected.ts_event_ns[-1])  # the last book accepted
    # The child's log events reach this process's log stream, with the symbol bound.
    names = [e["event"] for e in logs if e.get("symbol") == "SYNA"]
    assert names.count("feed.connected") == 2
    assert names.count("feed.invalid_message") == 2 * len(GARBAGE)


async def test_hold_keeps_rows_before_the_next_decision_and_a_later_row_brings_them():
    frames = sample_frames(3)[:1]  # one book on connect; the test pushes the next ones
    batch = next(iter(read_mbp10(SAMPLE, symbol="SYNA")))
    t = batch.ts_event_ns
    async with FrameServer(frames) as srv:
        reader = ReaderProcess()
        # Long hold and heartbeat: only a row past the hold can bring the held one now.
        feed = reader.feed(srv.url, "SYNA", heartbeat_s=30.0, max_hold_ms=30_000)
        it = feed.updates()
        first = await take_rows(it, 1)
        assert first.ts_event_ns.tolist() == [t[0]]
        feed.hold(int(t[2]))  # rows up to the third book's time cannot make the consumer act
        await feed.refresh_stats()  # commands are handled in order: the hold is in force
        await srv.push(encode_mbp10(batch, 1))  # <= the hold: waits

        async def held() -> bool:
            return (await feed.refresh_stats()).frames >= 2

        await wait_until(held, timeout_s=10, what="the child read the held book")
        assert feed.stats.frames == 2 and feed.idle()  # held: nothing for the consumer yet
        far = int(t[2]) + 1
        await srv.push(encode_mbp10(batch, 3, ts_event_ns=max(far, int(t[3]))))  # past it
        # The consumer has not asked: the book waits in the child, which says so (idle()).
        await wait_until(lambda: not feed.idle(), timeout_s=10, what="the child said rows wait")
        got = await asyncio.wait_for(anext(it), 10)
        await feed.aclose()
    assert len(got) == 2 and got.ts_event_ns[0] == t[1]  # one batch: the held book and the later
    assert feed.stats.books == 3


async def test_a_killed_reader_process_raises_feed_error_naming_the_symbol():
    async with FrameServer(sample_frames(20)) as srv:
        reader = ReaderProcess()
        feed = reader.feed(srv.url, "SYNA", heartbeat_s=0.05)
        it = feed.updates()
        await take_rows(it, 5)
        pid = reader.pid
        assert pid is not None
        with capture_logs() as logs:
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(FeedError, match=r"^SYNA: the feed reader process .* died"):
                async with asyncio.timeout(10):
                    while True:
                        await anext(it)
        await feed.aclose()
    assert any(e["event"] == "feed.reader_process_died" for e in logs)
    assert reader.pid is None and gone(pid)


async def test_one_child_reads_every_symbol_and_the_last_aclose_ends_it():
    async with FrameServer(sample_frames(20)) as srv:
        reader = ReaderProcess()
        a, b = (reader.feed(srv.url, "SYNA", heartbeat_s=0.05) for _ in range(2))
        await take_rows(a.updates(), 5)
        await take_rows(b.updates(), 5)
        pid = reader.pid
        assert pid is not None
        await a.aclose()
        assert reader.pid == pid  # still reading for the other feed
        await b.aclose()
        assert a.stats.books == b.stats.books == 20
    assert reader.pid is None and gone(pid)


PARENT = """
import asyncio, sys
from feeds.procfeed import ReaderProcess

async def main():
    reader = ReaderProcess()
    feed = reader.feed("ws://127.0.0.1:9", "SYNA", heartbeat_s=0.05, reconnect_max_s=0.1)
    await anext(feed.updates())
    print(f"CHILD={reader.pid}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_reader_process_exits_when_its_parent_is_killed():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(30):
            line = b""
            while not line.startswith(b"CHILD="):
                line = await parent.stdout.readline()
                assert line, "the parent ended before its reader started"
        child = int(line.split(b"=")[1])
        assert not gone(child)
        parent.kill()  # kill -9: no clean-up code runs in the parent
        await asyncio.wait_for(parent.wait(), 10)
        await wait_until(lambda: gone(child), timeout_s=10, what="the orphan reader exits")
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def test_the_daemon_completes_an_order_with_the_process_reader(tmp_path):
    # The books start once the reader process is connected: its start-up (a Python process)
    # took longer than the whole replay once, on a machine at load 8.
    async with FeedServer(SAMPLE, speed=3600, wait_for_clients=1, start_delay_s=0.3) as srv:
        p = tmp_path / "live.toml"
        text = CONFIG.format(url=srv.url, stale=5.0)
        p.write_text(text.replace("[feed]", '[feed]\nreader = "process"'))
        cfg = load_config(p)[0]
        assert cfg.feed.reader == "process"
        with capture_logs() as logs:
            (s,) = await asyncio.wait_for(run(cfg, make_feed_factory(cfg)), 60)
    check(logs, s)
    assert any(e["event"] == "feed.connected" for e in logs)  # from the child
    (closed,) = [e for e in logs if e["event"] == "feed.closed"]
    assert closed["frames"] > 0 and closed["books"] > 0 and closed["connects"] >= 1


def test_the_process_reader_is_refused_for_a_replay(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[feed]\nkind = "replay"\nreader = "process"\n')
    with pytest.raises(ConfigError, match="reader"):
        load_config(p)
