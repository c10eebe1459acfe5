"""Benchmark: live feed path on loopback, from frame received to book handed to the agent.

A separate ``exec-agent serve-feed`` process replays the shipped SYNA day at a speed giving
about 1,000 and 10,000 messages per second; this process runs ``WebSocketFeed`` and a consumer
that does the daemon's per-book work (window append, venue advance). Latency is our receive
time (frame decoded) to the consumer taking the book, p50/p99; conflated books (replaced by a
newer one before the consumer took them) are counted, and peak memory is reported.
Also the decode + validate cost per frame, in-process, against ``json.loads``.

Run: ``python bench/bench_live.py [--seconds 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (pins BLAS threads before numpy loads)
import numpy as np

from agent.core.venue import SimVenue as SimulatedVenue
from agent.core.window import RollingWindow
from feeds.jsonmsg import decode_mbp10, encode_mbp10
from feeds.live import WebSocketFeed
from feeds.readers import read_mbp10
from feeds.validate import validate_batch

SAMPLE = Path(__file__).resolve().parents[1] / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
ROWS_PER_EVENT_S = 50_000 / 23_400  # the sample's average rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def consume(url: str, seconds: float) -> dict[str, float]:
    feed = WebSocketFeed(url, "SYNA", heartbeat_s=0.05, max_size=1 << 16)
    window = RollingWindow("SYNA", 600 * 10**9)
    venue = SimulatedVenue(0)
    lat: list[int] = []
    t_end = None
    async for b in feed.updates():
        if not len(b):
            continue
        now = time.time_ns()
        if t_end is None:
            t_end = time.perf_counter() + seconds
        lat.append(now - int(b.ts_recv_ns[0]))
        window.append(b)
        venue.advance(b)
        if time.perf_counter() >= t_end:
            break
    await feed.aclose()
    a = np.array(lat) / 1e3
    return {
        "books": len(lat),
        "frames": feed.stats.frames,
        "conflated": feed.stats.conflated,
        "p50_us": float(np.percentile(a, 50)),
        "p99_us": float(np.percentile(a, 99)),
        "rate": feed.stats.frames / seconds,
    }


def run_rate(target: float, seconds: float) -> dict[str, float]:
    port = free_port()
    speed = target / ROWS_PER_EVENT_S
    srv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "serve-feed",
            "--data",
            str(SAMPLE),
            "--port",
            str(port),
            "--speed",
            f"{speed:.1f}",
            "--start-delay",
            "1.0",
            "--loop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        srv.stdout.readline()  # the URL: listening
        return asyncio.run(consume(f"ws://127.0.0.1:{port}", seconds))
    finally:
        srv.terminate()
        srv.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    batch = next(read_mbp10(SAMPLE))
    frames = [encode_mbp10(batch, i) for i in range(2000)]
    t0 = time.perf_counter()
    for f in frames:
        decode_mbp10(f, 0, "SYNA")  # typed decode + one-book validation, as the feed does
    t_ours = (time.perf_counter() - t0) / len(frames)
    t0 = time.perf_counter()
    for f in frames:
        b, _ = decode_mbp10(f, 0, "SYNA", validate=False)
        validate_batch(b, None)
    t_vec = (time.perf_counter() - t0) / len(frames)
    t0 = time.perf_counter()
    for f in frames:
        json.loads(f)
    t_json = (time.perf_counter() - t0) / len(frames)
    print(
        f"decode+validate per frame: {t_ours * 1e6:.1f} us (with the vectorised batch "
        f"validator instead: {t_vec * 1e6:.1f} us; json.loads alone: {t_json * 1e6:.1f} us)"
    )
    print(
        f"{'target msg/s':>12} {'recv msg/s':>11} {'books':>7} {'conflated':>9} "
        f"{'p50 us':>8} {'p99 us':>8}"
    )
    for target in (1_000, 10_000, 40_000):  # the last one finds the ceiling
        r = run_rate(target, args.seconds)
        print(
            f"{target:>12} {r['rate']:>11.0f} {r['books']:>7} {r['conflated']:>9} "
            f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the consumer process: {peak:.0f} MB (conflation keeps it bounded)")


if __name__ == "__main__":
    main()
