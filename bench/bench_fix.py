"""Benchmark: FIX 4.4 order flow over loopback, adapter to simulated venue.

Orders per second (N NewOrderSingle sent back to back, until every one has its final report)
and the order-to-acknowledgement round trip (send one, wait for its 150=0), p50 and p99. The
venue runs in a separate process (``exec-agent serve-venue``), as in production.

Run: ``python bench/bench_fix.py [--orders 2000]``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (pins BLAS threads before numpy loads)
import numpy as np

from agent.brokers.fix import FixBroker
from agent.model import ChildOrder, OrderAccepted, OrderCancelled, OrderFilled, Side

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
[feed]
files = {{ SYNA = "{data}" }}
[broker]
kind = "fix"
port = {port}
latency_ms = 0
store_path = "seq.json"
[journal]
path = "journal.sqlite"
[[orders]]
id = "B"
symbol = "SYNA"
side = "buy"
quantity = 100
start = 2025-06-02T14:00:00Z
end = 2025-06-02T15:00:00Z
period_s = 60
"""
T = 1_748_872_800 * 10**9  # 2025-06-02 14:00 UTC, inside the sample


def order(i: int) -> ChildOrder:
    return ChildOrder(f"B-{i:07d}", "B", "SYNA", Side.BUY, 100.0, 60.0, T + i * 10**6)


async def measure(port: int, n: int) -> tuple[float, np.ndarray]:
    broker = FixBroker("127.0.0.1", port, "AGENT", "VENUE", heartbeat_s=30)
    await broker.start()
    events = broker.events()
    # throughput: N orders back to back, wait for every final report (filled or cancelled)
    t0 = time.perf_counter()
    for i in range(n):
        await broker.submit(order(i))
    done = 0
    filled: dict[str, float] = {}
    async for e in events:
        if isinstance(e, OrderFilled):
            filled[e.client_order_id] = filled.get(e.client_order_id, 0) + e.qty
            if filled[e.client_order_id] >= 100:
                done += 1
        elif isinstance(e, OrderCancelled):
            done += 1
        if done >= n:
            break
    rate = n / (time.perf_counter() - t0)
    # round trip: one order at a time, until its acknowledgement
    rtt = []
    for i in range(n, n + min(n, 1000)):
        t1 = time.perf_counter_ns()
        await broker.submit(order(i))
        async for e in events:
            if isinstance(e, OrderAccepted) and e.client_order_id == f"B-{i:07d}":
                break
        rtt.append(time.perf_counter_ns() - t1)
    await broker.aclose()
    return rate, np.array(rtt) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=2000)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        data = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
        cfg.write_text(CONFIG.format(data=data.as_posix(), port=port))
        venue = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "serve-venue",
                "--config",
                str(cfg),
                "--er-log",
                str(Path(tmp) / "er.jsonl"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            venue.stdout.readline()  # listening
            rate, rtt = asyncio.run(measure(port, args.orders))
        finally:
            venue.terminate()
            venue.wait(10)
    print(f"orders per second (send to final report, {args.orders} orders): {rate:,.0f}")
    print(
        f"order-to-ack round trip over {rtt.size} orders: p50 {np.percentile(rtt, 50):.0f} us, "
        f"p99 {np.percentile(rtt, 99):.0f} us"
    )


if __name__ == "__main__":
    main()
