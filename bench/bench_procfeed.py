"""Benchmark: what a batch costs to cross from the feed reader process to the daemon.

Two parts (``feeds.procfeed``, ``feed.reader = "process"``):

1. Per batch, in one process (no scheduling noise): the child's side (``_pack``: header and
   columns joined, ``send_bytes`` on a pipe) and the daemon's side (``recv_bytes``, the copy to
   a writable buffer, ``_unpack`` into a ``BookBatch`` of views, and the credit sent back),
   for batches of 1, 10, 100 and 1000 sample books with their event columns. The daemon's
   side is what the decision loop pays per batch instead of reading the frames itself.
2. Across processes: a ``ReaderProcess`` reading a loopback websocket server that sends
   ``--frames`` books ``--interval-ms`` apart; per batch, the wall time from the child's
   receipt of its last row (``ts_recv_ns``) to the batch in the consumer's hands: the pipe,
   both wake-ups and the unpack (p50, p99, max).

Run: ``python bench/bench_procfeed.py [--frames 2000] [--interval-ms 1] [--repeats 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import _common  # noqa: F401  (one BLAS thread)
import numpy as np

from feeds.jsonmsg import encode_mbp10
from feeds.live import WebSocketFeed
from feeds.model import BookBatch
from feeds.procfeed import _WANT, ReaderProcess, _pack, _pipe, _unpack
from feeds.readers import read_mbp10

SAMPLE = Path(__file__).resolve().parents[1] / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"


def sample(n: int) -> BookBatch:
    """The first ``n`` books of the sample, with event columns."""
    b = next(iter(read_mbp10(SAMPLE, symbol="SYNA")))
    return b.slice(0, n)


def per_batch(repeats: int) -> None:
    feed = WebSocketFeed("ws://127.0.0.1:9", "SYNA")  # its counters go into the header
    r, w = _pipe()
    credit_r, credit_w = _pipe()
    want = _WANT.pack(b"W", 0)
    print(f"{'rows':>6} {'bytes':>8} {'child us':>9} {'daemon us':>10}  (median of {repeats})")
    for n in (1, 10, 100, 1000):
        b = sample(n)
        child, daemon = [], []
        size = 0
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            msg = _pack(0, b, feed)
            w.send_bytes(msg)
            t1 = time.perf_counter_ns()
            got, _ = _unpack("SYNA", bytearray(r.recv_bytes()))
            credit_w.send_bytes(want)
            t2 = time.perf_counter_ns()
            credit_r.recv_bytes()  # not timed: the child's side of the credit
            child.append(t1 - t0)
            daemon.append(t2 - t1)
            size = len(msg)
        assert np.array_equal(got.bid_px, b.bid_px, equal_nan=True)
        print(f"{n:>6} {size:>8} {np.median(child) / 1e3:>9.1f} {np.median(daemon) / 1e3:>10.1f}")


async def across(frames: int, interval_ms: float) -> None:
    from websockets.asyncio.server import serve

    b = sample(min(frames, 5000))
    msgs = [encode_mbp10(b, i % len(b)) for i in range(frames)]
    start = asyncio.Event()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        await start.wait()
        for m in msgs:
            await ws.send(m)
            await asyncio.sleep(interval_ms / 1000)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        reader = ReaderProcess()
        feed = reader.feed(url, "SYNA", heartbeat_s=0.5, max_hold_ms=0)
        lat: list[int] = []
        rows = 0
        it = feed.updates()
        start.set()
        async with asyncio.timeout(frames * interval_ms / 1000 * 5 + 30):
            while rows < frames:
                got = await anext(it)
                if len(got):
                    lat.append(time.time_ns() - int(got.ts_recv_ns[-1]))
                    rows += len(got)
        await feed.aclose()
    a = np.array(lat) / 1e3
    print(
        f"{frames} books {interval_ms:g} ms apart, {len(lat)} batches: child receipt -> batch "
        f"in the consumer's hands p50 {np.percentile(a, 50):.0f} us, "
        f"p99 {np.percentile(a, 99):.0f} us, max {a.max():.0f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    per_batch(args.repeats)
    asyncio.run(across(args.frames, args.interval_ms))


if __name__ == "__main__":
    main()
