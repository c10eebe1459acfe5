"""Journal safety (issue 17): ids never reused, old duplicate journals load with a report, and a
journal that cannot write says so with a typed error, never silently."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import asdict

import pytest
from structlog.testing import capture_logs

from agent.control import Control
from agent.errors import ConfigError, DuplicateParent, JournalUnavailable
from agent.journal import Journal, make_run_tag
from agent.model import ChildOrder, OrderFilled, Side

T = 1_764_581_101_000_000_000  # 2025-12-01 09:25:01 UTC


def child(coid: str, parent: str = "OLD") -> ChildOrder:
    return ChildOrder(coid, parent, "S", Side.BUY, 100.0, 10.0, 5)


def raw_insert(path, rows):
    """Write records as the old code did (no checks): how a pre-fix journal looks."""
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO records(parent_id, kind, body) VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()


def test_run_tags_are_short_sortable_and_never_repeat_on_a_journal(tmp_path):
    """Two starts in the same millisecond still get two tags; without a journal a tag is the
    start's millisecond, so restarts and days differ."""
    assert make_run_tag(T) == make_run_tag(T + 999_999) != make_run_tag(T + 1_000_000)
    assert len(make_run_tag(T)) == 8 and make_run_tag(T) < make_run_tag(T + 86_400 * 10**9)

    async def go():
        j = Journal(tmp_path / "j.sqlite")
        tags = [await j.start_run(T) for _ in range(3)]
        j.close()
        j2 = Journal(tmp_path / "j.sqlite")  # a restart: the earlier tags are remembered
        tags.append(await j2.start_run(T))
        j2.close()
        return tags

    tags = asyncio.run(go())
    assert len(set(tags)) == 4 and tags[0] == make_run_tag(T)


async def test_a_parent_id_is_never_accepted_twice(tmp_path):
    """add_parent refuses an id the journal has seen (submitted, or traded from the config),
    with a typed error naming it; nothing is written for the refused one."""
    j = Journal(tmp_path / "j.sqlite")
    await j.intent("mpc", child("CFG-x-00001", parent="CFG"))  # a config parent that traded
    await j.add_parent({"id": "NEW", "quantity": 100})
    assert j.parent_known("NEW") and j.parent_known("CFG") and not j.parent_known("OTHER")
    for pid in ("NEW", "CFG"):
        with pytest.raises(DuplicateParent, match=f"'{pid}' was already used"):
            await j.add_parent({"id": pid, "quantity": 100})
    submitted, _ = j.parents()
    assert [p["id"] for p in submitted] == ["NEW"]
    assert j.client_order_ids() == {"CFG-x-00001"}
    assert j.report().ok
    j.close()


async def test_a_journal_with_duplicate_ids_from_the_old_bug_loads_with_a_report(tmp_path):
    """The issue's journal: parent OLD ran, was submitted again and reused OLD-00001. It
    loads: the report names the duplicates, parents() keeps one OLD, load() stops at the reuse
    (no duplicate reaches a tracker) and says why."""
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    first, again = child("OLD-00001"), child("OLD-00001")
    fill = OrderFilled("OLD-00001", "x1", 100.0, 10.0, 6)

    def intent(c):
        return ("OLD", "intent", json.dumps(asdict(c) | {"leg": "mpc", "side": "buy"}))

    def event(e):
        return ("OLD", "event", json.dumps(asdict(e) | {"leg": "mpc", "type": "OrderFilled"}))

    rows = [
        ("OLD", "parent", json.dumps({"id": "OLD", "quantity": 100})),
        intent(first),
        event(fill),
        ("OLD", "parent", json.dumps({"id": "OLD", "quantity": 100})),
        intent(again),
        event(OrderFilled("OLD-00001", "x2", 100.0, 10.0, 9)),
    ]
    raw_insert(path, rows)
    j = Journal(path)
    rep = j.report()
    assert rep.duplicate_parents == ("OLD",)
    assert rep.duplicate_client_order_ids == ("OLD-00001",)
    submitted, _ = j.parents()
    assert len(submitted) == 1
    h = j.load("OLD")
    assert h.items == [("mpc", first), ("mpc", fill)]
    assert h.duplicate_ids == ["OLD-00001"] and h.n_dropped == 2
    assert "OLD-00001 was sent twice" in h.conflict
    j.close()


def test_journal_path_of_the_wrong_type_is_refused_and_its_folder_is_private(tmp_path):
    """A directory where the journal goes is refused with one line naming the key; a new
    folder is created 0700."""
    (tmp_path / "isdir").mkdir()
    with pytest.raises(ConfigError, match=r"journal\.path: .*isdir: exists and is a directory"):
        Journal(tmp_path / "isdir")
    j = Journal(tmp_path / "new" / "deeper" / "j.sqlite")
    j.close()
    for d in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert d.stat().st_mode & 0o777 == 0o700


def _cap(j: Journal, pages: int) -> None:
    """Limit the file to ``pages`` pages: SQLite then answers SQLITE_FULL, as a full disk."""
    j._pool.submit(lambda: j._conn.execute(f"PRAGMA max_page_count={pages}")).result()


def _fill(j: Journal) -> int:
    return j._pool.submit(lambda: j._conn.execute("PRAGMA page_count").fetchone()[0]).result()


async def test_a_full_disk_raises_journal_unavailable_on_durable_writes(tmp_path):
    """An intent that cannot be made durable raises JournalUnavailable (not sqlite3's error);
    from then on every durable call raises it too, and on_fault ran once on the loop."""
    faults: list[JournalUnavailable] = []
    j = Journal(tmp_path / "j.sqlite", on_fault=faults.append)
    await j.intent("mpc", child("P-00001", "P"))
    _cap(j, _fill(j))
    big = ChildOrder("P-00002", "P", "S" * 20_000, Side.BUY, 1.0, 10.0, 5)
    with capture_logs() as logs, pytest.raises(JournalUnavailable, match="full") as ei:
        await j.intent("mpc", big)
        await asyncio.sleep(0)  # the report is scheduled on the loop
    await asyncio.sleep(0)
    assert isinstance(ei.value.__cause__, sqlite3.Error)
    assert faults == [ei.value]
    with pytest.raises(JournalUnavailable):
        await j.intent("mpc", child("P-00003", "P"))
    with pytest.raises(JournalUnavailable):
        await j.add_parent({"id": "Q"})
    with pytest.raises(JournalUnavailable):
        await j.flush()
    with pytest.raises(JournalUnavailable):
        j.load("P")
    j.event("P", "mpc", OrderFilled("P-00001", "x", 1.0, 10.0, 6))  # queued: never raises
    assert j.health()["ok"] is False and j.health()["writes_refused"] == 1
    j.close()
    await asyncio.sleep(0)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["journal.unavailable"]


async def test_a_failed_queued_event_write_is_reported_not_silent(tmp_path):
    """event() cannot raise into the event pump: its failure still sets the fault, logs
    journal.unavailable at error level and calls on_fault, whose kill switch holds in memory
    when the journal cannot record it."""
    j = Journal(tmp_path / "j.sqlite")
    control = Control(j)
    j.on_fault = lambda e: control.halt(f"journal unavailable: {e}")
    await j.intent("mpc", child("P-00001", "P"))
    _cap(j, _fill(j))
    with capture_logs() as logs:
        j.event("P", "mpc", OrderFilled("P-00001", "x" * 20_000, 1.0, 10.0, 6))
        with pytest.raises(JournalUnavailable):
            await j.flush()
        for _ in range(3):
            await asyncio.sleep(0)
    assert j.fault is not None
    assert control.halted and control.halt_event.is_set()
    names = [e["event"] for e in logs]
    assert names[:3] == ["journal.unavailable", "daemon.halt_not_durable", "daemon.halted"]
    with pytest.raises(JournalUnavailable):
        control.resume("operator")  # cannot be recorded: stays halted
    assert control.halted
    j.close()
