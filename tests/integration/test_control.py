"""Operators and the running daemon: the control channel (status, submit, cancel, kill,
resume, stop), the kill switch kept across restarts, and the metrics endpoint.

The feed here is gated: the test releases the replay chunk by chunk, so every command lands at
a known point of the run without any wall-clock sleep."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from structlog.testing import capture_logs

from agent.config import load_config
from agent.control import Control, send_command
from agent.daemon import run
from agent.journal import Journal
from agent.metrics import Metrics
from agent.runner import make_feed_factory
from tests.conftest import REPO
from tests.waiting import logged, wait_until

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
CONFIG = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
collar_bps = 100
[strategy]
forecast = "profile"  # children from the first period on: this test is about the channel
prior_profile = false
[journal]
path = "journal.sqlite"
[control]
socket = "ctl.sock"
[[orders]]
id = "A"
symbol = "SYNA"
side = "buy"
quantity = 30000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T19:35:00Z
period_s = 600
lot = 100
"""
ORDER_B = {
    "id": "B",
    "symbol": "SYNA",
    "side": "sell",
    "quantity": 5000,
    "start": "2025-06-02T15:00:00Z",
    "end": "2025-06-02T18:00:00Z",
    "period_s": 600,
    "lot": 100,
}


class Gate:
    """A replay released chunk by chunk by the test."""

    def __init__(self, cfg, rows: int = 1000) -> None:
        self.inner = make_feed_factory(cfg)
        self.rows = rows
        self.tokens: asyncio.Queue[int] = asyncio.Queue()
        self.served = 0
        self.moved = asyncio.Event()

    def __call__(self, symbol: str):
        gate = self

        class Feed:
            stats = None

            def __init__(self) -> None:
                self.inner = gate.inner(symbol)
                self.symbol = symbol

            async def updates(self):
                async for b in self.inner.updates():
                    for i in range(0, len(b), gate.rows):
                        if await gate.tokens.get() < 0:
                            return
                        yield b.slice(i, i + gate.rows)
                        gate.served += 1
                        gate.moved.set()

            async def aclose(self) -> None:
                await self.inner.aclose()

        return Feed()

    async def release(self, n: int) -> None:
        """Let ``n`` chunks through and wait until the daemon has taken them."""
        target = self.served + n
        for _ in range(n):
            self.tokens.put_nowait(1)
        while self.served < target:
            self.moved.clear()
            await self.moved.wait()
        for _ in range(5):
            await asyncio.sleep(0)


def mpc_sent(logs, after: int = 0) -> list[str]:
    return [
        e["client_order_id"]
        for e in logs[after:]
        if e["event"] == "order.submitted" and e.get("strategy") == "mpc"
    ]


async def test_control_channel_submit_cancel_kill_resume_stop(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    cfg, _ = load_config(tmp_path / "c.toml")
    sock = cfg.control.socket
    gate = Gate(cfg)
    journal = Journal(cfg.journal.path)
    with capture_logs() as logs:
        task = asyncio.create_task(run(cfg, gate, journal=journal))
        await gate.release(8)
        assert mpc_sent(logs)  # A is trading

        st = await send_command(sock, {"cmd": "status"})
        assert st["ok"] and not st["halted"]
        assert [p["parent_id"] for p in st["parents"]] == ["A"]

        ok = await send_command(sock, {"cmd": "submit", "order": ORDER_B})
        assert ok["ok"] and ok["parent"]["parent_id"] == "B"
        dup = await send_command(sock, {"cmd": "submit", "order": ORDER_B})
        assert not dup["ok"] and "already in use" in dup["error"]
        bad = await send_command(
            sock, {"cmd": "submit", "order": ORDER_B | {"id": "C", "quantity": -5}}
        )
        assert not bad["ok"] and "quantity" in bad["error"]
        unknown = await send_command(sock, {"cmd": "frobnicate"})
        assert not unknown["ok"] and "unknown command" in unknown["error"]

        await gate.release(12)  # past 15:00: B trades too
        assert any(c.startswith("B-") for c in mpc_sent(logs))
        c = await send_command(sock, {"cmd": "cancel", "parent_id": "B", "reason": "client"})
        assert c["ok"] and c["parent"]["state"] == "cancelled"
        mark = len(logs)
        await gate.release(6)
        assert not any(x.startswith("B-") for x in mpc_sent(logs, mark))  # B sends no more

        k = await send_command(sock, {"cmd": "kill", "reason": "test"})
        assert k["ok"] and k["halted"]
        mark = len(logs)
        await gate.release(8)
        assert mpc_sent(logs, mark) == []  # nothing new while halted
        assert any(e["event"] == "risk.blocked" and e["gate"] == "halted" for e in logs[mark:])
        r = await send_command(sock, {"cmd": "resume"})
        assert r["ok"] and r["changed"]
        mark = len(logs)
        await gate.release(8)
        assert mpc_sent(logs, mark)  # trading again

        s = await send_command(sock, {"cmd": "stop"})
        assert s["ok"]
        gate.tokens.put_nowait(-1)  # the feed ends at the stop
        summaries = await asyncio.wait_for(task, 30)
    journal.close()
    by_id = {x.parent_id: x for x in summaries}
    assert by_id["B"].status == "cancelled"
    assert by_id["A"].status == "incomplete"
    commands = [e["cmd"] for e in logs if e["event"] == "control.command"]
    assert commands == [
        "status",
        "submit",
        "submit",
        "submit",
        "frobnicate",
        "cancel",
        "kill",
        "resume",
        "stop",
    ]
    assert not sock.exists()  # the socket file is removed at exit

    # The restart knows B (submitted on the socket) and that it was cancelled.
    j2 = Journal(cfg.journal.path)
    submitted, cancelled = j2.parents()
    assert [o["id"] for o in submitted] == ["B"] and "B" in cancelled
    j2.close()


async def test_kill_switch_is_kept_across_restarts_until_resumed(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG.replace('socket = "ctl.sock"', ""))
    cfg, _ = load_config(tmp_path / "c.toml")
    gate = Gate(cfg)
    journal = Journal(cfg.journal.path)
    control = Control(journal)
    with capture_logs() as logs:
        task = asyncio.create_task(run(cfg, gate, journal=journal, control=control))
        await gate.release(6)
        n_before = len(mpc_sent(logs))
        assert n_before
        control.halt("SIGUSR1")  # what the signal handler calls
        await gate.release(10)
        gate.tokens.put_nowait(-1)
        await asyncio.wait_for(task, 30)
    journal.close()
    assert len(mpc_sent(logs)) == n_before

    # Restart: still halted, nothing is sent.
    journal = Journal(cfg.journal.path)
    factory = make_feed_factory(cfg)
    with capture_logs() as logs:
        (s,) = await run(cfg, factory, journal=journal)
    assert mpc_sent(logs) == [] and s.status == "incomplete"
    assert any(e["event"] == "daemon.halted" for e in logs)
    # Resumed on purpose (exec-agent run --resume) in the last period: the catch-up goes out
    # in children of at most ten average periods (strategy.max_child_multiple), retried.
    control = Control(journal)
    assert control.halted and control.resume("test")
    with capture_logs() as logs:
        (s,) = await run(cfg, factory, journal=journal, control=control)
    assert any(e["event"] == "mpc.child_capped" for e in logs)
    journal.close()
    assert mpc_sent(logs) and s.status == "completed" and s.filled_qty == 30000
    assert not Control(Journal(cfg.journal.path)).halted


async def test_metrics_endpoint_counts_what_the_run_did(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG.replace('socket = "ctl.sock"', ""))
    cfg, _ = load_config(tmp_path / "c.toml")
    metrics = Metrics.serve("127.0.0.1", 0)
    try:
        (s,) = await run(cfg, make_feed_factory(cfg), metrics=metrics)
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        metrics.close()
    text = body.decode()

    def value(name: str) -> float:
        (line,) = [
            x for x in text.splitlines() if x.startswith(name + " ") or x.startswith(name + "{")
        ]
        return float(line.rsplit(" ", 1)[1])

    assert value('exec_agent_orders_sent_total{parent_id="A"}') == s.n_children
    assert value('exec_agent_filled_shares_total{parent_id="A"}') == s.filled_qty == 30000
    assert value('exec_agent_remaining_shares{parent_id="A"}') == 0.0
    assert value("exec_agent_halted") == 0.0
    assert value("exec_agent_solve_seconds_count") > 0
    # Replay: no feed lag (wall clock against another day's event times would be months).
    assert 'exec_agent_feed_lag_seconds{symbol="SYNA"}' not in text


async def test_a_daemon_with_no_orders_waits_for_parents_on_the_socket(tmp_path):
    """keep_running with no [[orders]]: the service waits; a parent submitted on the socket is
    worked to completion; the daemon stays up until told to stop."""
    text = CONFIG.split("[[orders]]")[0].replace(
        'socket = "ctl.sock"', 'socket = "ctl.sock"\nkeep_running = true'
    )
    (tmp_path / "c.toml").write_text(text)
    cfg, _ = load_config(tmp_path / "c.toml")
    assert cfg.orders == []
    journal = Journal(cfg.journal.path)
    with capture_logs() as logs:
        task = asyncio.create_task(run(cfg, make_feed_factory(cfg), journal=journal))
        await wait_until(cfg.control.socket.exists, what="the control socket")
        st = await send_command(cfg.control.socket, {"cmd": "status"})
        assert st["ok"] and st["parents"] == []
        order = ORDER_B | {"id": "W", "side": "buy", "quantity": 10000}
        assert (await send_command(cfg.control.socket, {"cmd": "submit", "order": order}))["ok"]
        # The replay runs to its end (its symbol task closes the feed); the daemon stays up.
        await wait_until(logged(logs, "feed.closed"), what="the end of the replay")
        st = await send_command(cfg.control.socket, {"cmd": "status"})
        assert st["parents"][0]["state"] == "completed" and not task.done()
        assert (await send_command(cfg.control.socket, {"cmd": "stop"}))["ok"]
        (s,) = await asyncio.wait_for(task, 30)
    journal.close()
    assert s.parent_id == "W" and s.filled_qty == 10000
    assert "order.parent_submitted" in [e["event"] for e in logs]


async def test_the_control_commands_from_the_command_line(tmp_path, capsys):
    """exec-agent status / submit --order FILE.toml / cancel / stop against a running daemon,
    and the exit codes: 0 accepted, 1 refused (with the reason), 2 no daemon or a bad file."""
    import json as _json

    from agent.__main__ import main

    text = CONFIG.split("[[orders]]")[0].replace(
        'socket = "ctl.sock"', 'socket = "ctl.sock"\nkeep_running = true'
    )
    (tmp_path / "c.toml").write_text(text)
    cfg, _ = load_config(tmp_path / "c.toml")
    sock = str(cfg.control.socket)
    (tmp_path / "order.toml").write_text(
        '[[orders]]\nid = "T"\nsymbol = "SYNA"\nside = "buy"\nquantity = 5000\n'
        "start = 2025-06-02T15:00:00Z\nend = 2025-06-02T18:00:00Z\nperiod_s = 600\nlot = 100\n"
    )
    (tmp_path / "bad.toml").write_text("[[orders]]\nid = 'U'\nquantity = 'many'\n")

    async def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = await asyncio.to_thread(main, list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, _, err = await cli("status", "--socket", sock)
    assert rc == 2 and "no daemon answers" in err
    journal = Journal(cfg.journal.path)
    task = asyncio.create_task(run(cfg, make_feed_factory(cfg), journal=journal))
    await wait_until(cfg.control.socket.exists, what="the control socket")
    rc, out, _ = await cli(
        "submit", "--config", str(tmp_path / "c.toml"), "--order", str(tmp_path / "order.toml")
    )
    assert rc == 0 and _json.loads(out)["parent"]["parent_id"] == "T"
    rc, out, _ = await cli("submit", "--socket", sock, "--order", str(tmp_path / "bad.toml"))
    assert rc == 1 and "order." in _json.loads(out)["error"]
    rc, _, err = await cli("submit", "--socket", sock, "--order", str(tmp_path / "nope.toml"))
    assert rc == 2 and "cannot read" in err
    rc, out, _ = await cli("cancel", "--socket", sock, "NOPE")
    assert rc == 1 and "no parent order" in _json.loads(out)["error"]
    rc, out, _ = await cli("status", "--socket", sock)
    assert rc == 0 and [p["parent_id"] for p in _json.loads(out)["parents"]] == ["T"]
    rc, _, _ = await cli("stop", "--socket", sock)
    assert rc == 0
    (s,) = await asyncio.wait_for(task, 60)
    journal.close()
    assert s.parent_id == "T"
