"""The daemon as a process: SIGUSR1 engages the kill switch, SIGTERM stops it gracefully
(journal and logs flushed; exit 4, halted), and HALTED is still there at the next start."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from agent.exitcodes import COMPLETED, HALTED
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
CONFIG = f"""
[logging]
format = "json"
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
speed = {{speed}}
[broker]
collar_bps = 100
[journal]
path = "journal.sqlite"
[strategy]
max_child_multiple = 0  # resumed after a halt, the rest goes as one catch-up child, on purpose
[[orders]]
id = "S"
symbol = "SYNA"
side = "buy"
quantity = 30000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T19:35:00Z
period_s = 300
lot = 100
"""


async def _until(proc, events: list[dict], name: str, limit_s: float = 60.0) -> dict:
    async with asyncio.timeout(limit_s):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"daemon exited before {name}: {events[-3:]}")
            try:
                e = json.loads(line)
            except ValueError:
                continue
            events.append(e)
            if e.get("event") == name:
                return e


async def _start(tmp_path, speed: float, *extra: str):
    (tmp_path / "c.toml").write_text(CONFIG.replace("{speed}", str(speed)))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--config",
        str(tmp_path / "c.toml"),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )


def _sent(events: list[dict]) -> list[str]:
    return [
        e["client_order_id"]
        for e in events
        if e.get("event") == "order.submitted" and e.get("strategy") == "mpc"
    ]


async def test_sigusr1_halts_sigterm_stops_and_halt_survives_restart(tmp_path):
    # Paced replay (2000x: the day in ~12 s), so the signals land mid-run.
    proc = await _start(tmp_path, 2000)
    events: list[dict] = []
    await _until(proc, events, "order.submitted")
    proc.send_signal(signal.SIGUSR1)
    await _until(proc, events, "daemon.halted")
    n_sent = len(_sent(events))
    await _until(proc, events, "risk.blocked")  # the next period's child is blocked
    proc.send_signal(signal.SIGTERM)
    await _until(proc, events, "daemon.stopping")
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    events += [json.loads(x) for x in rest.splitlines() if x.startswith(b"{")]
    assert proc.returncode == HALTED
    names = [e["event"] for e in events]
    assert names[-1] == "daemon.stopped"  # the last log line made it out
    assert "daemon.shutdown_cancel" in names and "run.summary" in names
    assert len(_sent(events)) == n_sent  # nothing sent after the halt
    (summary,) = [e for e in events if e["event"] == "run.summary"]
    assert summary["status"] == "incomplete" and summary["filled_qty"] < 30000

    # Next start (fast replay): still HALTED, sends nothing.
    proc = await _start(tmp_path, 0)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    events = [json.loads(x) for x in out.splitlines() if x.startswith(b"{")]
    assert proc.returncode == HALTED
    assert "daemon.halted" in [e["event"] for e in events] and _sent(events) == []
    # Resumed on purpose: it finishes the order, exactly.
    proc = await _start(tmp_path, 0, "--resume")
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    events = [json.loads(x) for x in out.splitlines() if x.startswith(b"{")]
    assert proc.returncode == COMPLETED
    (summary,) = [e for e in events if e["event"] == "run.summary"]
    assert "daemon.resumed" in [e["event"] for e in events]
    assert summary["status"] == "completed" and summary["filled_qty"] == 30000
