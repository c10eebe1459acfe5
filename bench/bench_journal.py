"""Benchmark: how long an intent waits to be durable while the journal is busy (issue 15).

The live run of issue 15 found an intent queued behind up to 18 other records, each its own
SQLite transaction on the one writer thread, while the event loop was busy deciding: the wait
for "intent durable" was p50 9.3 ms, p99 80 ms, against 0.08 ms for one save alone. Most of
that is not the disk: every sqlite call and every wake-up of the loop lets go of the GIL, and
taking it back from a busy event loop costs up to the interpreter's switch interval (5 ms).

Three journals, in the same run, interleaved, each on a fresh file:

- ``before``: the journal at ``--before`` (default: the commit this work started from), one
  transaction per record, loaded from git;
- ``executemany``: group commit, but each batch written with ``executemany`` (a sqlite step,
  so a GIL round trip, per row);
- ``group``: this journal: a batch is one multi-row INSERT per 100 rows, its waiters woken by
  one call onto the loop.

Scenarios (the loop's CPU work is pure Python, holding the GIL as decisions do):

- ``burst``: the loop busy all the time (1 ms slices); N events queued, then one intent
  awaited, ``--reps`` times for each N: the intent's wait;
- ``live``: the issue's mix at 1k books a second: each book costs ``--book-us`` of CPU, and
  per 10 s come 496 intents (each awaited in its own task), 1,258 events and 340 decisions
  (each decision costs 1.33 ms of CPU, the issue's p50), for ``--seconds``: the intents' wait.

Each figure is the median over ``--runs`` runs, its range over them in brackets. The machine
is shared: the load average is printed before and after.

Run: ``python bench/bench_journal.py [--runs 5] [--seconds 5] [--reps 10] [--book-us 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (pins BLAS threads before numpy loads)

from agent.journal import Journal
from agent.model import ChildOrder, OrderFilled, Side

REPO = Path(__file__).resolve().parents[1]
BEFORE = "ff20bbd"  # the journal before group commit (one transaction per record)

# The live mix, per 10 s at 1k msg/s: records per book.
P_INTENT, P_EVENT, P_DECISION = 496 / 10_000, 1_258 / 10_000, 340 / 10_000
DECISION_US = 1_330


def load_before(rev: str) -> type:
    """Return the ``Journal`` class of ``agent/journal.py`` at git revision ``rev``."""
    src = subprocess.run(
        ["git", "show", f"{rev}:agent/journal.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name = f"_journal_{rev}"
    mod = types.ModuleType(name)
    sys.modules[name] = mod  # dataclasses look their module up
    exec(compile(src, f"{rev}:agent/journal.py", "exec"), mod.__dict__)
    return mod.Journal


class ExecutemanyJournal(Journal):
    """Group commit written with ``executemany`` in BEGIN ... COMMIT (bench only)."""

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO records(parent_id, kind, body) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")


def burn(us: float) -> None:
    """Hold the GIL for ``us`` microseconds, as Python work on the event loop does."""
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def child(i: int) -> ChildOrder:
    return ChildOrder(f"P-bench-{i:07d}", "P", "SYM", Side.BUY, 100.0, 10.0, i)


def fill(i: int) -> OrderFilled:
    return OrderFilled(f"P-bench-{i:07d}", f"x{i}", 10.0, 10.0, i)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def stats(j: Any) -> dict[str, float]:
    """Transactions and records of a run, when the journal counts them (``before`` does not)."""
    n = getattr(j, "n_commits", None)
    return {} if n is None else {"records_per_txn": j.n_written / max(1, n)}


async def burst(cls: type, path: Path, ns: list[int], reps: int) -> dict[str, float]:
    """The intent's wait (ms, median over ``reps``) after N queued events, loop kept busy."""
    j = cls(path)
    running = True

    async def hog() -> None:
        while running:
            burn(1_000)
            await asyncio.sleep(0)

    h = asyncio.create_task(hog())
    await asyncio.sleep(0)
    out: dict[str, float] = {}
    k = 0
    for n in ns:
        waits = []
        for _ in range(reps):
            for _ in range(n):
                j.event("P", "mpc", fill(k))
                k += 1
            t0 = time.perf_counter()
            await j.intent("mpc", child(k))
            waits.append((time.perf_counter() - t0) * 1e3)
            k += 1
        out[f"N={n}"] = statistics.median(waits)
    running = False
    await h
    await j.flush()
    out |= stats(j)
    j.close()
    return out


async def live(cls: type, path: Path, seconds: float, book_us: float, seed: int) -> dict:
    """The intents' wait (ms) under the issue's mix of records at 1k books a second."""
    j = cls(path)
    rng = random.Random(seed)
    waits: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def send(i: int) -> None:
        t0 = time.perf_counter()
        await j.intent("mpc", child(i))
        waits.append((time.perf_counter() - t0) * 1e3)

    loop = asyncio.get_running_loop()
    t_next = loop.time()
    n_books = int(seconds * 1_000)
    for i in range(n_books):
        t_next += 1e-3
        delay = t_next - loop.time()
        await asyncio.sleep(max(0.0, delay))
        burn(book_us)
        if rng.random() < P_DECISION:
            burn(DECISION_US)
            j.decision("P", i, 10.0)
        if rng.random() < P_EVENT:
            j.event("P", "mpc", fill(i))
        if rng.random() < P_INTENT:
            t = asyncio.create_task(send(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    await j.flush()
    out = {"p50": pct(waits, 0.5), "p99": pct(waits, 0.99), "max": max(waits), "n": len(waits)}
    out |= stats(j)
    j.close()
    return out


def fmt(runs: list[dict[str, float]]) -> str:
    """Each figure's median over the runs, and its range in brackets."""
    out = []
    for k in runs[0]:
        xs = [r[k] for r in runs]
        if k == "n":
            out.append(f"n {statistics.median(xs):.0f}")
        elif k.startswith("rec"):
            out.append(f"{k} {statistics.median(xs):.2f}")
        else:
            out.append(f"{k} {statistics.median(xs):6.2f} ms [{min(xs):.1f}-{max(xs):.1f}]")
    return "  ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="of each live run")
    ap.add_argument("--reps", type=int, default=10, help="intents timed per N in burst")
    ap.add_argument("--ns", type=int, nargs="+", default=[0, 8, 32])
    ap.add_argument("--book-us", type=float, default=200.0, help="CPU per book in live")
    ap.add_argument("--before", default=BEFORE, help="git revision of the old journal")
    ap.add_argument("--dir", default=None, help="where the journal files go (default: tmp)")
    ap.add_argument(
        "--switch-ms", type=float, default=None, help="sys.setswitchinterval (default: as is)"
    )
    args = ap.parse_args()
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1e3)

    modes = {
        "before": load_before(args.before),
        "executemany": ExecutemanyJournal,
        "group": Journal,
    }
    print(
        f"load average {os.getloadavg()}  sqlite {sqlite3.sqlite_version}  "
        f"switch interval {sys.getswitchinterval() * 1e3:.1f} ms  cpus {os.cpu_count()}"
    )
    res: dict[str, dict[str, list[dict[str, float]]]] = {"burst": {}, "live": {}}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_journal_") as d:
        for r in range(args.runs):
            for name, cls in modes.items():  # interleaved: the machine's load hits all alike
                p = Path(d) / f"{name}-{r}-burst.sqlite"
                res["burst"].setdefault(name, []).append(
                    asyncio.run(burst(cls, p, args.ns, args.reps))
                )
                p = Path(d) / f"{name}-{r}-live.sqlite"
                res["live"].setdefault(name, []).append(
                    asyncio.run(live(cls, p, args.seconds, args.book_us, seed=r))
                )
    print(
        f"\nburst: loop busy (1 ms slices), N events queued, then one intent awaited: its wait "
        f"(median of {args.reps}), median of {args.runs} runs"
    )
    for name, runs in res["burst"].items():
        print(f"  {name:12s} {fmt(runs)}")
    print(
        f"\nlive: 1k books/s x {args.book_us:.0f} us CPU, the issue's mix of records, "
        f"{args.seconds:.0f} s: intent wait, median of {args.runs} runs"
    )
    for name, runs in res["live"].items():
        print(f"  {name:12s} {fmt(runs)}")
    print(f"\nload average {os.getloadavg()}")


if __name__ == "__main__":
    main()
