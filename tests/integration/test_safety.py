"""Issue 17 end to end: "never twice, never lost, never in".

The daemon on a real replay (SYNA) with its journal: an old journal that reused client order ids
loads and runs instead of crash-looping, a reused parent id is refused with its reason, a journal
that fills up halts the run with one line and exit 4, and the exit codes tell completed,
incomplete, halted and config error apart.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict

import pytest
from structlog.testing import capture_logs

from agent import exitcodes
from agent.config import load_config
from agent.daemon import Daemon, run
from agent.journal import Journal
from agent.model import ChildOrder, OrderFilled, Side
from agent.runner import make_feed_factory, run_from_config
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
CONFIG = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
collar_bps = 100
[journal]
path = "state/journal.sqlite"
[[orders]]
id = "OLD"
symbol = "SYNA"
side = "buy"
quantity = 3000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T14:05:00Z
period_s = 600
lot = 100
"""
ORDER = {
    "id": "OLD",
    "symbol": "SYNA",
    "side": "buy",
    "quantity": 1000,
    "start": "2025-06-02T15:00:00Z",
    "end": "2025-06-02T16:00:00Z",
    "period_s": 600,
    "lot": 100,
}


def write_config(tmp_path, text: str = CONFIG):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def old_bug_journal(path) -> None:
    """A journal as the old code left it: OLD ran, was submitted again, reused OLD-00001."""
    Journal(path).close()
    c = ChildOrder("OLD-00001", "OLD", "SYNA", Side.BUY, 100.0, 30.0, 1_748_871_300 * 10**9)

    def intent():
        return ("OLD", "intent", json.dumps(asdict(c) | {"leg": "mpc", "side": "buy"}))

    def fill(x):
        e = OrderFilled("OLD-00001", x, 100.0, 29.9, c.ts_created_ns + 1)
        return ("OLD", "event", json.dumps(asdict(e) | {"leg": "mpc", "type": "OrderFilled"}))

    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO records(parent_id, kind, body) VALUES (?, ?, ?)",
        [intent(), fill("e1"), ("OLD", "parent", json.dumps(ORDER)), intent(), fill("e2")],
    )
    con.commit()
    con.close()


async def test_an_old_journal_with_reused_ids_runs_instead_of_crash_looping(tmp_path):
    """Before: every start died with InvariantViolation: duplicate client_order_id OLD-00001.
    Now the history stops at the reuse and the run ends with summaries."""
    cfg, _ = load_config(write_config(tmp_path))
    old_bug_journal(cfg.journal.path)
    journal = Journal(cfg.journal.path)
    assert not journal.report().ok
    with capture_logs() as logs:
        (s,) = await run(cfg, make_feed_factory(cfg), journal=journal)
    journal.close()
    assert s.parent_id == "OLD" and s.filled_qty >= 100
    (c,) = [e for e in logs if e["event"] == "journal.conflict"]
    assert c["log_level"] == "error" and c["duplicate_ids"] == ["OLD-00001"]


async def test_a_parent_id_used_before_on_the_journal_is_refused_with_its_reason(tmp_path):
    """exec-agent submit of an id that already ran on this journal: refused, named, and
    nothing is recorded or started (before: accepted, ids OLD-00001... sent again)."""
    cfg, _ = load_config(write_config(tmp_path, CONFIG.split("[[orders]]")[0] + _KEEP))
    journal = Journal(cfg.journal.path)
    await journal.intent("mpc", ChildOrder("OLD-00001", "OLD", "SYNA", Side.BUY, 100.0, 30.0, 1))
    d = Daemon(cfg, make_feed_factory(cfg), None, None, journal, None)
    reply = await d.command({"cmd": "submit", "order": ORDER})
    journal.close()
    assert reply["ok"] is False and "'OLD' was already used" in reply["error"]
    assert d.runners == []


_KEEP = '[control]\nsocket = "ctl.sock"\nkeep_running = true\n'


def test_exit_codes_completed_incomplete_halted(tmp_path, capsys):
    """0 when the parent completed, 3 when it did not (before: 0), 4 when halted."""
    p = write_config(tmp_path)
    assert run_from_config(p, log_format="json", log_level="error") == exitcodes.COMPLETED
    big = CONFIG.replace("quantity = 3000", "quantity = 3000000").replace(
        "state/journal", "state/j2"
    )
    p2 = write_config(tmp_path, big)
    assert run_from_config(p2, log_format="json", log_level="error") == exitcodes.INCOMPLETE
    j = Journal(tmp_path / "state" / "j3.sqlite")
    j.set_halted(True, "test")
    j.close()
    p3 = write_config(tmp_path, CONFIG.replace("state/journal", "state/j3"))
    assert run_from_config(p3, log_format="json", log_level="error") == exitcodes.HALTED
    capsys.readouterr()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("quantity = 3000", "quantity = inf"), "orders[0].quantity"),
        (("quantity = 3000", "quantity = nan"), "orders[0].quantity"),
        (("quantity = 3000", "quantity = 1e18"), "orders[0].quantity"),
        (("collar_bps = 100", "collar_bps = inf"), "broker.collar_bps"),
        (("collar_bps = 100", "collar_bps = 1e300"), "broker.collar_bps"),
        (("[journal]", "[risk]\nmax_gross_notional = inf\n[journal]"), "risk.max_gross_notional"),
        (("[journal]", "[risk]\nmax_parent_qty = 1000\n[journal]"), "orders[0].quantity"),
    ],
)
def test_non_finite_or_absurd_numbers_are_one_line_exit_2(tmp_path, capsys, edit, key):
    """Before: quantity = inf printed a traceback and exited 1."""
    rc = run_from_config(write_config(tmp_path, CONFIG.replace(*edit)))
    err = capsys.readouterr().err
    assert rc == exitcodes.CONFIG_ERROR
    assert err.count("\n") == 1 and key in err and "Traceback" not in err


def test_a_journal_that_fills_up_halts_with_one_line_and_exit_4(tmp_path, capsys, monkeypatch):
    """The disk under the journal fills after a few records: the run ends with exit 4 and one
    line naming the journal, the failure is logged at error level, and no child went out
    without its intent being durable (before: a traceback)."""
    opened = Journal._open

    def small(self):
        opened(self)
        n = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count={n + 1}")

    monkeypatch.setattr(Journal, "_open", small)
    p = write_config(tmp_path, CONFIG.replace("quantity = 3000", "quantity = 30000"))
    rc = run_from_config(p, log_format="json", log_level="info")
    out = capsys.readouterr()
    assert rc == exitcodes.HALTED
    assert out.err.count("\n") == 1 and "halted: journal" in out.err
    lines = [json.loads(x) for x in out.out.splitlines() if x.startswith("{")]
    assert any(e["event"] == "journal.unavailable" and e["level"] == "error" for e in lines)
    monkeypatch.undo()
    cfg, _ = load_config(p)
    j = Journal(cfg.journal.path)
    durable = j.client_order_ids()
    j.close()
    sent = {e["client_order_id"] for e in lines if e["event"] == "order.submitted"}
    assert sent and sent <= durable


@pytest.mark.parametrize(
    ("change", "want"),
    [
        ({"quantity": float("inf")}, "order.quantity: Input should be a finite number"),
        ({"quantity": 1e18}, "order.quantity: Input should be less than or equal to"),
        ({"period_s": float("nan")}, "order.period_s: Input should be a finite number"),
    ],
)
async def test_a_submitted_order_with_an_absurd_number_is_refused_naming_the_key(
    tmp_path, change, want
):
    """Over the control channel (JSON carries Infinity): refused with the key, nothing added."""
    cfg, _ = load_config(write_config(tmp_path, CONFIG.split("[[orders]]")[0] + _KEEP))
    d = Daemon(cfg, make_feed_factory(cfg), None, None, None, None)
    raw = json.loads(json.dumps(ORDER | {"id": "NEW"} | change))
    reply = await d.command({"cmd": "submit", "order": raw})
    assert reply["ok"] is False and want in reply["error"] and d.runners == []


def test_an_unexpected_error_is_one_redacted_line_and_exit_1(tmp_path, capsys, monkeypatch):
    """A crash whose message holds a URL token: exit 1, one line, no token on stderr."""
    import agent.runner

    def boom(cfg):
        raise RuntimeError("cannot open wss://u:CANARY-77@h/?token=CANARY-77")

    monkeypatch.setattr(agent.runner, "build_profiles", boom)
    rc = run_from_config(write_config(tmp_path), log_format="json")
    out = capsys.readouterr()
    assert rc == exitcodes.FAILED and out.err.count("\n") == 1
    assert "CANARY-77" not in out.err + out.out and "daemon.crashed" in out.out


def test_the_exit_codes_are_in_the_help(capsys):
    from agent.__main__ import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for code, word in ((0, "completed"), (2, "config"), (3, "incomplete"), (4, "halted")):
        assert f"{code} " in text and word in text
    assert len({exitcodes.COMPLETED, exitcodes.INCOMPLETE, exitcodes.HALTED, 2, 1}) == 5


def test_a_journal_path_that_is_not_a_journal_is_a_config_error(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "journal.sqlite").write_text("not a database, " * 100)
    rc = run_from_config(write_config(tmp_path), log_format="json")
    err = capsys.readouterr().err
    assert rc == exitcodes.CONFIG_ERROR and err.count("\n") == 1 and "journal.path" in err
