"""The kill -9 campaign: the daemon dies at seeded random points of a run against
``exec-agent serve-venue`` (its own process) and is restarted; after each restart it must hold
that no client order id was sent twice as new, its fills equal the venue's, child by child, and
its remaining quantity is exact.

Each point: a fresh directory and venue; the first run of the daemon is killed by SIGKILL,
either at a named crash point (``EXEC_AGENT_CRASH_AT=site:n``: after a decision is queued,
after an intent is durable but before the send, after the send, after an event is applied but
before it is durable) or from outside, a random delay after it logged ``daemon.started``; the
second run, with the same config, journal and FIX sequence store, works the order to its
deadline.

    python -m tests.chaos.kill9 --points 200 --seed 7 --jobs 2 [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.journal import Journal
from agent.model import ChildOrder
from agent.orders.tracker import OrderTracker

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
QTY = 30_000
N_PERIODS = 18
# crash site -> how many passes a run makes through it (about)
SITES = {
    "decided": N_PERIODS,
    "intent_durable": N_PERIODS,
    "submitted": N_PERIODS,
    "event_applied": 3 * N_PERIODS,
}

CONFIG = """
[logging]
format = "json"
[feed]
files = {{ SYNA = "{sample}" }}
[broker]
kind = "fix"
port = {port}
collar_bps = 100
store_path = "seq.json"
reconcile_timeout_s = 10
[journal]
path = "journal.sqlite"
[[orders]]
id = "{pid}"
symbol = "SYNA"
side = "buy"
quantity = {qty}
start = 2025-06-02T13:35:00Z
end = 2025-06-02T16:35:00Z
period_s = 600
lot = 100
"""


@dataclass
class PointResult:
    """What one kill point showed."""

    point: int
    fault: str
    killed: bool
    restart_rc: int
    n_children: int = 0
    venue_filled: float = 0.0
    daemon_filled: float = 0.0
    remaining: float = 0.0
    n_reconciled: int = 0
    duplicate_new: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when every obligation held."""
        return (
            not self.error
            and self.restart_rc == 0
            and not self.duplicate_new
            and not self.mismatched
            and abs(self.daemon_filled - self.venue_filled) < 1e-6
            and abs(self.remaining - (QTY - self.venue_filled)) < 1e-6
        )


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def _start_venue(d: Path) -> tuple[subprocess.Popen[str], int]:
    with open(d / "venue.err", "w") as err:  # the child keeps its own descriptor
        p = _popen_venue(d, err)
    assert p.stdout is not None
    line = p.stdout.readline()  # "fix://127.0.0.1:PORT" once it listens
    if not line.startswith("fix://"):
        p.kill()
        p.wait()
        p.stdout.close()
        raise RuntimeError(f"venue did not start: {(d / 'venue.err').read_text()[-500:]}")
    return p, int(line.rsplit(":", 1)[1])


def _popen_venue(d: Path, err: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cmd("serve-venue", "--config", "c.toml", "--port", "0", "--er-log", "er.jsonl"),
        cwd=d,
        stdout=subprocess.PIPE,
        stderr=err,  # type: ignore[arg-type]
        text=True,
    )


def _fault(rng: random.Random) -> tuple[str, dict[str, str], float | None]:
    if rng.random() < 0.25:
        # after the daemon logs daemon.started (imports and book loading done); the trading
        # part of a run takes about one second here
        delay = rng.uniform(0.0, 0.9)
        return f"external:{delay:.2f}s", {}, delay
    site = rng.choice(sorted(SITES))
    n = rng.randint(1, SITES[site])
    return f"{site}:{n}", {"EXEC_AGENT_CRASH_AT": f"{site}:{n}"}, None


def _wait_started(log: Path, proc: subprocess.Popen[bytes], limit_s: float = 60.0) -> None:
    """Return once the daemon has logged ``daemon.started`` (or has exited)."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < limit_s:
        if b'"daemon.started"' in log.read_bytes():
            return
        time.sleep(0.005)


def run_point(point: int, seed: int, root: Path) -> PointResult:
    """Run one kill point in its own directory under ``root``."""
    rng = random.Random(seed * 1_000_003 + point)
    d = root / f"p{point:04d}"
    d.mkdir(parents=True)
    pid = f"K{point}"
    t0 = time.perf_counter()
    fault, env_extra, delay = _fault(rng)
    (d / "c.toml").write_text(CONFIG.format(sample=SAMPLE.as_posix(), port=1, pid=pid, qty=QTY))
    venue, port = _start_venue(d)
    res = PointResult(point, fault, killed=False, restart_rc=-1)
    try:
        (d / "c.toml").write_text(
            CONFIG.format(sample=SAMPLE.as_posix(), port=port, pid=pid, qty=QTY)
        )
        env = os.environ | env_extra
        with open(d / "run1.log", "w") as out:
            p1 = subprocess.Popen(
                _cmd("run", "--config", "c.toml"),
                cwd=d,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                if delay is not None:
                    _wait_started(d / "run1.log", p1)
                p1.wait(timeout=delay if delay is not None else 120)
            except subprocess.TimeoutExpired:
                p1.send_signal(signal.SIGKILL)
                p1.wait()
        res.killed = p1.returncode == -signal.SIGKILL
        with open(d / "run2.log", "w") as out:
            p2 = subprocess.run(
                _cmd("run", "--config", "c.toml"),
                cwd=d,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=180,
                check=False,
            )
        res.restart_rc = p2.returncode
        _verify(d, pid, res)
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        venue.send_signal(signal.SIGTERM)
        try:
            venue.wait(timeout=10)
        except subprocess.TimeoutExpired:
            venue.kill()
            venue.wait()
        if venue.stdout is not None:
            venue.stdout.close()
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def _verify(d: Path, pid: str, res: PointResult) -> None:
    # The venue's view: every ExecutionReport it wrote, in order.
    new_count: dict[str, int] = defaultdict(int)
    venue_cum: dict[str, float] = defaultdict(float)
    for line in (d / "er.jsonl").read_text().splitlines():
        r = json.loads(line)
        coid = r["client_order_id"]
        # The MPC children, <pid>-<run tag>-<n> (the TWAP shadow, <pid>-twap-..., is simulated).
        if not coid.startswith(f"{pid}-") or coid.startswith(f"{pid}-twap-"):
            continue
        if r.get("text") == "duplicate ClOrdID":
            res.duplicate_new.append(coid)
        if r["exec_type"] == "0":
            new_count[coid] += 1
        if r["exec_type"] in ("0", "F", "4", "8") and r.get("text") != "duplicate ClOrdID":
            venue_cum[coid] = max(venue_cum[coid], r["cum_qty"])
    res.duplicate_new += [c for c, n in new_count.items() if n > 1]
    # The daemon's view: its journal, replayed as a restart would.
    j = Journal(d / "journal.sqlite")
    try:
        h = j.load(pid)
    finally:
        j.close()
    t = OrderTracker(QTY)
    intents: list[str] = []
    for leg, item in h.items:
        if leg != "mpc":
            continue
        if isinstance(item, ChildOrder):
            intents.append(item.client_order_id)
            t.on_submitted(item, item.ts_created_ns)
        else:
            t.on_event(item)
    res.duplicate_new += sorted({c for c in intents if intents.count(c) > 1})
    res.n_children = len(intents)
    res.daemon_filled = t.filled_qty
    res.remaining = t.remaining_qty
    res.venue_filled = sum(venue_cum.values())
    for coid in set(venue_cum) | set(t.children):
        ours = t.children[coid].filled_qty if coid in t.children else float("nan")
        theirs = venue_cum.get(coid, 0.0)
        if not abs(ours - theirs) < 1e-6:
            res.mismatched[coid] = (ours, theirs)
    log2 = (d / "run2.log").read_text()
    res.n_reconciled = log2.count('"order.reconciled"')


def campaign(points: int, seed: int, jobs: int, root: Path) -> list[PointResult]:
    """Run ``points`` kill points, ``jobs`` at a time."""
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(lambda i: run_point(i, seed, root), range(points)))


def summarize(results: list[PointResult]) -> dict[str, object]:
    """Return the campaign's figures."""
    secs = sorted(r.seconds for r in results)
    return {
        "points": len(results),
        "killed": sum(r.killed for r in results),
        "passed": sum(r.ok for r in results),
        "duplicate_new_orders": sum(len(r.duplicate_new) for r in results),
        "fill_mismatches": sum(len(r.mismatched) for r in results),
        "completed": sum(abs(r.daemon_filled - QTY) < 1e-6 for r in results),
        "reconciled_children": sum(r.n_reconciled for r in results),
        "median_point_s": secs[len(secs) // 2] if secs else None,
        "by_site": {
            s: sum(r.fault.startswith(s) for r in results) for s in [*sorted(SITES), "external"]
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run the campaign, print its summary, exit 1 on any failed point."""
    ap = argparse.ArgumentParser(
        prog="python -m tests.chaos.kill9",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write every point as JSON")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill9-") as tmp:
        results = campaign(a.points, a.seed, a.jobs, Path(tmp))
    s = summarize(results) | {"wall_s": round(time.perf_counter() - t0, 1), "seed": a.seed}
    print(json.dumps(s, indent=2))
    for r in results:
        if not r.ok:
            print("FAILED", json.dumps(asdict(r)), file=sys.stderr)
    if a.out:
        a.out.write_text(
            json.dumps({"summary": s, "points": [asdict(r) for r in results]}, indent=1)
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
