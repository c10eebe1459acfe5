"""The kill -9 campaign: the daemon dies at seeded random points of a run against
``exec-agent serve-venue`` (its own process) and is restarted; after each restart it must hold
that no client order id was sent twice, its fills equal the venue's order by order, and its
remaining quantity is exact.

Each point: a fresh directory and venue; the first run of the daemon is killed by SIGKILL,
either at a named crash point (``EXEC_AGENT_CRASH_AT=site:n``: after a decision is queued,
after an intent is durable but before the send, after the send, after an event is applied but
before it is durable, after a cancel or cancel/replace was sent) or from outside, a random
delay after it logged ``daemon.started``; the second run, with the same config, journal and FIX
sequence store, works the order to its deadline.

Points run the ``aggressive`` tactic (IOC children) or the ``passive`` one (day orders resting
at the touch, re-priced by cancel/replace, cancelled and crossed at the cut-off), so a kill
often finds children resting at the venue. An order's identity is its chain of ClOrdIDs (a
cancel/replace gives it a new one, OrigClOrdID pointing back): fills of every id of a chain
count once, and the daemon's filled quantity must equal the venue's executed one per chain.
Resting children open at the kill must be reconciled after the restart (known and worked, or
cancelled): none is left open on either side at the end, and the parent completes.

A point may also restart the venue between the kill and the daemon's restart (``serve-venue``
keeps its orders but not its queue model: it cancels what rested, unsolicited 150=4); the
daemon must take those cancels, cross what is left and complete with the same checks.

    python -m tests.chaos.kill9 --points 200 --seed 7 --jobs 2 [--out report.json]
    python -m tests.chaos.kill9 --points 200 --tactic passive --restart-venue-every 5
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.errors import InvariantViolation
from agent.journal import Journal
from agent.model import ChildOrder, ReplaceRequested
from agent.orders.tracker import OrderTracker

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
QTY = 30_000
N_PERIODS = 18
TACTICS = ("aggressive", "passive")
# crash site -> how many passes a run makes through it (about), per tactic
SITES = {
    "decided": N_PERIODS,
    "intent_durable": N_PERIODS,
    "submitted": N_PERIODS,
    "event_applied": 3 * N_PERIODS,
}
PASSIVE_SITES = SITES | {
    # a passive run also records its cancels and replaces (event_applied) and sends them
    "event_applied": 5 * N_PERIODS,
    "requested": 2 * N_PERIODS,
}
# An outside kill lands uniformly in this many seconds after daemon.started: a little less than
# the trading part of a run on an unloaded machine (2026-12-01: aggressive 0.71 s, passive
# 0.80 s), so that it falls inside the run; a loaded machine only makes the run longer.
RUN_S = {"aggressive": 0.6, "passive": 0.7}
_CLOSED = frozenset("248")  # OrdStatus filled, cancelled, rejected

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
[tactic]
kind = "{tactic}"
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
    """What one kill point showed (quantities per chain of ClOrdIDs: one order each)."""

    point: int
    tactic: str
    fault: str
    killed: bool
    restart_rc: int
    n_children: int = 0
    n_replaced: int = 0
    venue_filled: float = 0.0
    daemon_filled: float = 0.0
    remaining: float = 0.0
    n_reconciled: int = 0
    resting_at_kill: int = 0
    venue_restarted: bool = False
    cancelled_by_venue_restart: int = 0
    reconcile_timeouts: int = 0
    duplicate_new: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[float, float]] = field(default_factory=dict)
    open_at_end: list[str] = field(default_factory=list)
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
            and not self.open_at_end
            and not self.reconcile_timeouts
            and abs(self.daemon_filled - self.venue_filled) < 1e-6
            and self.venue_filled <= QTY + 1e-6
            and abs(self.remaining - (QTY - self.venue_filled)) < 1e-6
        )


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def _start_venue(d: Path, port: int = 0) -> tuple[subprocess.Popen[str], int]:
    with open(d / "venue.err", "a") as err:  # the child keeps its own descriptor
        p = _popen_venue(d, err, port)
    assert p.stdout is not None
    line = p.stdout.readline()  # "fix://127.0.0.1:PORT" once it listens
    if not line.startswith("fix://"):
        p.kill()
        p.wait()
        p.stdout.close()
        raise RuntimeError(f"venue did not start: {(d / 'venue.err').read_text()[-500:]}")
    return p, int(line.rsplit(":", 1)[1])


def _stop_venue(venue: subprocess.Popen[str]) -> None:
    venue.send_signal(signal.SIGTERM)
    try:
        venue.wait(timeout=10)
    except subprocess.TimeoutExpired:
        venue.kill()
        venue.wait()
    if venue.stdout is not None:
        venue.stdout.close()


def _popen_venue(d: Path, err: object, port: int = 0) -> subprocess.Popen[str]:
    # its state (sequence numbers, orders) in ./venue, next to the daemon's store_path
    return subprocess.Popen(
        _cmd("serve-venue", "--config", "c.toml", "--port", str(port), "--er-log", "er.jsonl"),
        cwd=d,
        stdout=subprocess.PIPE,
        stderr=err,  # type: ignore[arg-type]
        text=True,
    )


def _fault(rng: random.Random, tactic: str) -> tuple[str, dict[str, str], float | None]:
    if rng.random() < 0.25:
        # after the daemon logs daemon.started (imports and book loading done)
        delay = rng.uniform(0.0, RUN_S[tactic])
        return f"external:{delay:.2f}s", {}, delay
    sites = PASSIVE_SITES if tactic == "passive" else SITES
    site = rng.choice(sorted(sites))
    n = rng.randint(1, sites[site])
    return f"{site}:{n}", {"EXEC_AGENT_CRASH_AT": f"{site}:{n}"}, None


def _wait_started(log: Path, proc: subprocess.Popen[bytes], limit_s: float = 60.0) -> None:
    """Return once the daemon has logged ``daemon.started`` (or has exited)."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < limit_s:
        if b'"daemon.started"' in log.read_bytes():
            return
        time.sleep(0.005)


def run_point(
    point: int, seed: int, root: Path, tactic: str = "aggressive", restart_venue: bool = False
) -> PointResult:
    """Run one kill point in its own directory under ``root``; with ``restart_venue`` the venue
    is restarted too (on the same port and state) between the kill and the daemon's restart."""
    if tactic not in TACTICS:
        raise ValueError(f"tactic: {tactic!r} is not one of {TACTICS}")
    rng = random.Random(seed * 1_000_003 + point)
    d = root / f"p{point:04d}"
    d.mkdir(parents=True)
    pid = f"K{point}"
    t0 = time.perf_counter()
    fault, env_extra, delay = _fault(rng, tactic)

    def config(port: int) -> str:
        return CONFIG.format(sample=SAMPLE.as_posix(), port=port, pid=pid, qty=QTY, tactic=tactic)

    (d / "c.toml").write_text(config(1))
    venue, port = _start_venue(d)
    res = PointResult(point, tactic, fault, killed=False, restart_rc=-1)
    res.venue_restarted = restart_venue
    try:
        (d / "c.toml").write_text(config(port))
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
        if restart_venue:
            _stop_venue(venue)
            venue, _ = _start_venue(d, port)
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
        _stop_venue(venue)
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


@dataclass
class VenueChains:
    """The venue's view, from its ExecutionReport log: each order as its chain of ClOrdIDs."""

    root: dict[str, str] = field(default_factory=dict)  # ClOrdID -> first ClOrdID of its chain
    fills: dict[str, dict[str, float]] = field(default_factory=dict)  # root -> ExecID -> qty
    cum: dict[str, float] = field(default_factory=dict)  # root -> CumQty last reported
    status: dict[str, str] = field(default_factory=dict)  # root -> OrdStatus last reported
    uses: dict[str, int] = field(default_factory=dict)  # ClOrdID -> times it opened an order
    refused_duplicates: list[str] = field(default_factory=list)

    def executed(self, root: str) -> float:
        """Return the shares the venue executed on a chain (each ExecID once)."""
        return sum(self.fills.get(root, {}).values())


def venue_chains(er_log: Path, prefix: str, skip: str = "") -> VenueChains:
    """Read ``er_log`` (the venue's JSON lines) into chains, for ClOrdIDs starting ``prefix``
    (and not ``skip``)."""
    v = VenueChains()
    for line in er_log.read_text().splitlines():
        r = json.loads(line)
        coid = r["client_order_id"]
        if not coid.startswith(prefix) or (skip and coid.startswith(skip)):
            continue
        if r.get("text") == "duplicate ClOrdID":
            v.refused_duplicates.append(coid)
            continue
        et = r["exec_type"]
        if et == "5":  # replaced: the new ClOrdID joins the chain of OrigClOrdID
            v.root[coid] = v.root.get(r["orig_client_order_id"], r["orig_client_order_id"])
        root = v.root.setdefault(coid, coid)
        if et in ("0", "5"):
            v.uses[coid] = v.uses.get(coid, 0) + 1
        if et == "F":
            v.fills.setdefault(root, {})[r["exec_id"]] = r["last_qty"]
        v.cum[root] = max(v.cum.get(root, 0.0), r["cum_qty"])
        v.status[root] = r["status"]
    return v


def _verify(d: Path, pid: str, res: PointResult) -> None:
    # The venue's view: every ExecutionReport it wrote, in order. The MPC children are
    # <pid>-<run tag>-<n>[-r<k>] (the TWAP shadow, <pid>-twap-..., is simulated in process).
    v = venue_chains(d / "er.jsonl", f"{pid}-", skip=f"{pid}-twap-")
    res.duplicate_new += v.refused_duplicates
    res.duplicate_new += [c for c, n in v.uses.items() if n > 1]
    # The daemon's view: its journal, replayed as a restart would.
    j = Journal(d / "journal.sqlite")
    try:
        h = j.load(pid)
    finally:
        j.close()
    t = OrderTracker(QTY)
    ids: list[str] = []  # every ClOrdID the daemon gave out: intents and replaces
    for leg, item in h.items:
        if leg != "mpc":
            continue
        try:
            if isinstance(item, ChildOrder):
                ids.append(item.client_order_id)
                t.on_submitted(item, item.ts_created_ns)
            else:
                if isinstance(item, ReplaceRequested) and item.new_client_order_id:
                    ids.append(item.new_client_order_id)
                t.on_event(item)
        except InvariantViolation as e:  # a duplicate id, an overfill: the journal is wrong
            res.error = f"journal replay: {e}"
            return
    res.duplicate_new += sorted({c for c in ids if ids.count(c) > 1})
    res.n_children = len(t.children)
    res.n_replaced = sum(bool(c.prior_ids) for c in t.children.values())
    res.daemon_filled = t.filled_qty
    res.remaining = t.remaining_qty
    res.venue_filled = sum(v.executed(r) for r in set(v.root.values()))
    ours: dict[str, float] = {}
    for c in t.children.values():
        first = c.prior_ids[0] if c.prior_ids else c.order.client_order_id
        ours[first] = c.filled_qty
        if not c.state.terminal:
            res.open_at_end.append(f"daemon:{c.order.client_order_id}")
    for root in set(v.root.values()) | set(ours):
        theirs = v.executed(root)
        mine = ours.get(root, float("nan"))
        if not (abs(mine - theirs) < 1e-6 and abs(v.cum.get(root, 0.0) - theirs) < 1e-6):
            res.mismatched[root] = (mine, theirs)
        if root in v.status and v.status[root] not in _CLOSED:
            res.open_at_end.append(f"venue:{root}")
    log2 = (d / "run2.log").read_text()
    res.n_reconciled = log2.count('"order.reconciled"')
    res.reconcile_timeouts = log2.count('"reconcile.timeout"')
    res.cancelled_by_venue_restart = log2.count("venue restarted: resting order cancelled")
    tifs = {c.order.client_order_id: c.order.rests for c in t.children.values()}
    for c in t.children.values():
        for old in c.prior_ids:
            tifs[old] = c.order.rests
    for line in log2.splitlines():
        restored = '"order.in_doubt"' in line and '"after_restart"' in line
        if restored and tifs.get(json.loads(line)["client_order_id"], False):
            res.resting_at_kill += 1


def campaign(
    points: int,
    seed: int,
    jobs: int,
    root: Path,
    tactic: str = "aggressive",
    restart_venue_every: int = 0,
) -> list[PointResult]:
    """Run ``points`` kill points of one tactic (``both``: alternate), ``jobs`` at a time; every
    ``restart_venue_every``-th point restarts the venue too (0: never)."""

    def one(i: int) -> PointResult:
        n = restart_venue_every
        return run_point(
            i,
            seed,
            root,
            TACTICS[i % 2] if tactic == "both" else tactic,
            restart_venue=bool(n) and i % n == n - 1,
        )

    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(one, range(points)))


def summarize(results: list[PointResult]) -> dict[str, object]:
    """Return the campaign's figures."""
    secs = sorted(r.seconds for r in results)
    return {
        "points": len(results),
        "by_tactic": {t: sum(r.tactic == t for r in results) for t in TACTICS},
        "killed": sum(r.killed for r in results),
        "passed": sum(r.ok for r in results),
        "duplicate_new_orders": sum(len(r.duplicate_new) for r in results),
        "fill_mismatches": sum(len(r.mismatched) for r in results),
        "open_at_end": sum(len(r.open_at_end) for r in results),
        "completed": sum(abs(r.daemon_filled - QTY) < 1e-6 for r in results),
        "overfilled": sum(r.venue_filled > QTY + 1e-6 for r in results),
        "reconciled_children": sum(r.n_reconciled for r in results),
        "resting_at_kill": sum(r.resting_at_kill for r in results),
        "points_resting_at_kill": sum(r.resting_at_kill > 0 for r in results),
        "replaced_children": sum(r.n_replaced for r in results),
        "venue_restarts": sum(r.venue_restarted for r in results),
        "cancelled_by_venue_restart": sum(r.cancelled_by_venue_restart for r in results),
        "reconcile_timeouts": sum(r.reconcile_timeouts for r in results),
        "median_point_s": secs[len(secs) // 2] if secs else None,
        "by_site": {
            s: sum(r.fault.startswith(s) for r in results)
            for s in [*sorted(PASSIVE_SITES), "external"]
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
    ap.add_argument("--tactic", choices=[*TACTICS, "both"], default="aggressive")
    ap.add_argument(
        "--restart-venue-every",
        type=int,
        default=0,
        metavar="N",
        help="every N-th point restarts the venue too, between the kill and the restart",
    )
    ap.add_argument("--out", type=Path, default=None, help="write every point as JSON")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill9-") as tmp:
        results = campaign(a.points, a.seed, a.jobs, Path(tmp), a.tactic, a.restart_venue_every)
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
