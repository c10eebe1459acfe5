"""Journal group commit (issue 15): what is queued while the writer is busy is committed in one
transaction, in issue order; an awaited write returns only once its transaction is committed;
a failure in a batch writes nothing after the failing record and answers every waiter whose
record is not durable with JournalUnavailable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from structlog.testing import capture_logs

from agent.errors import DuplicateParent, JournalUnavailable
from agent.journal import Journal
from agent.model import ChildOrder, OrderFilled, Side
from tests.waiting import wait_until


def child(n: int, parent: str = "P") -> ChildOrder:
    return ChildOrder(f"{parent}-x-{n:05d}", parent, "S", Side.BUY, 100.0, 10.0, n)


def fill(n: int, parent: str = "P") -> OrderFilled:
    return OrderFilled(f"{parent}-x-{n:05d}", f"e{n}", 100.0, 10.0, n)


def rows(path) -> list[tuple[str, str, dict]]:
    """What a fresh reader of the file sees (committed records only), in seq order."""
    con = sqlite3.connect(path)
    try:
        got = con.execute("SELECT parent_id, kind, body FROM records ORDER BY seq").fetchall()
    finally:
        con.close()
    return [(p, k, json.loads(b)) for p, k, b in got]


def labels(path) -> list[str]:
    """Each record as ``kind:id`` (client order id, or period), in seq order."""
    out = []
    for _, kind, body in rows(path):
        key = body.get("client_order_id", body.get("period", body.get("id", "")))
        out.append(f"{kind}:{key}")
    return out


def commits(j: Journal) -> list[str]:
    """Start counting the transactions the journal's connection commits, from the statements
    it runs (a trace callback on the connection itself, not the journal's own counter): each
    COMMIT, and each INSERT run outside BEGIN ... COMMIT (its own transaction)."""
    seen: list[str] = []
    open_: list[bool] = [False]

    def trace(sql: str) -> None:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head == "BEGIN":
            open_[0] = True
        elif head in ("COMMIT", "ROLLBACK"):
            open_[0] = False
            if head == "COMMIT":
                seen.append(sql)
        elif head == "INSERT" and not open_[0]:
            seen.append(sql)

    j._pool.submit(lambda: j._conn.set_trace_callback(trace)).result()
    return seen


@contextmanager
def writer_held(j: Journal) -> Iterator[None]:
    """Keep the writer thread busy until the block ends: what is issued inside it queues up
    and reaches the writer together, as it does behind a slow fsync."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    j._pool.submit(hold)
    assert held.wait(30)
    try:
        yield
    finally:
        release.set()


async def queued(j: Journal, n: int) -> None:
    await wait_until(lambda: len(j._ops) >= n, timeout_s=30, what=f"{n} records queued")


async def test_concurrent_intents_share_one_transaction_in_issue_order(tmp_path):
    """50 parents each record a decision and await their child's intent while the writer is
    busy: all 100 records are committed in ONE transaction (the old journal made 100, one per
    record), no intent returns before it, and the file holds them in issue order."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    seen = commits(j)
    n = 50

    async def parent(i: int) -> None:
        j.decision("P", i, 10.0)
        await j.intent("mpc", child(i))

    with writer_held(j):
        tasks = [asyncio.create_task(parent(i)) for i in range(n)]
        await queued(j, 2 * n)
        assert not any(t.done() for t in tasks)  # nothing is durable yet, so nothing returned
        assert rows(path) == []
    await asyncio.gather(*tasks)
    assert len(seen) == 1 == j.n_commits and j.n_written == 2 * n
    # Each task ran to its await in turn: its decision, then its intent.
    expected = [x for i in range(n) for x in (f"decision:{i}", f"intent:P-x-{i:05d}")]
    assert labels(path) == expected
    for i in range(n):  # the fills, queued as each intent returns: after all of the burst
        j.event("P", "mpc", fill(i))
    await j.flush()
    assert labels(path) == expected + [f"event:P-x-{i:05d}" for i in range(n)]
    h = j.load("P")
    assert h.periods == list(range(n)) and len(h.items) == 2 * n
    j.close()


async def test_awaited_write_waits_for_its_own_transaction_not_the_next(tmp_path):
    """Records queued after an intent (while its batch commits) do not delay it: they go to the
    next transaction, and the flush issued after them returns only once they are durable."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    seen = commits(j)
    with writer_held(j):
        first = asyncio.create_task(j.intent("mpc", child(1)))
        await queued(j, 1)
    await first
    assert labels(path) == ["intent:P-x-00001"]
    with writer_held(j):
        for i in range(2, 12):
            j.event("P", "mpc", fill(i))
        flushed = asyncio.create_task(j.flush())
        await queued(j, 11)
        assert not flushed.done()
    await flushed
    assert len(labels(path)) == 11 and len(seen) == 2
    j.close()


def _boom_trigger(path) -> None:
    """Make SQLite refuse any record of parent BOOM (as a full disk would, mid-batch)."""
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.parent_id = 'BOOM' "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    )
    con.commit()
    con.close()


async def test_a_failure_mid_batch_writes_nothing_of_it_and_fails_its_waiters(tmp_path):
    """A record refused by SQLite in the middle of a batch (a trigger aborts it, as a full disk
    would) rolls the whole transaction back: the records committed before the batch stay, none
    of the batch is in the file, every intent of the batch raises JournalUnavailable, on_fault
    runs once, and the queued writes it kept from the disk are counted."""
    path = tmp_path / "j.sqlite"
    faults: list[JournalUnavailable] = []
    j = Journal(path, on_fault=faults.append)
    await j.intent("mpc", child(0))  # durable before the batch
    _boom_trigger(path)
    with capture_logs() as logs:
        with writer_held(j):
            a = asyncio.create_task(j.intent("mpc", child(1)))
            await queued(j, 1)
            j.event("P", "mpc", fill(1))
            b = asyncio.create_task(j.intent("mpc", child(2, parent="BOOM")))
            await queued(j, 3)
            j.event("P", "mpc", fill(2))
            c = asyncio.create_task(j.intent("mpc", child(3)))
            await queued(j, 5)
        results = await asyncio.gather(a, b, c, return_exceptions=True)
        await asyncio.sleep(0)  # on_fault is scheduled on the loop
    assert all(isinstance(r, JournalUnavailable) for r in results), results
    assert "injected fault" in str(results[0]) and "5 records" in str(results[0])
    assert isinstance(results[0].__cause__, sqlite3.Error)
    assert labels(path) == ["intent:P-x-00000"]  # not one record of the batch, none after it
    assert not j._pool.submit(lambda: j._conn.in_transaction).result()  # rolled back, not left open
    assert faults == [j.fault] and j.health()["writes_refused"] == 2
    with pytest.raises(JournalUnavailable):
        await j.intent("mpc", child(4))
    j.event("P", "mpc", fill(4))  # queued: never raises, counted
    j.queue_intent("twap", child(5))
    assert j.health()["writes_refused"] == 4
    j.close()
    assert labels(path) == ["intent:P-x-00000"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["journal.unavailable"]


async def test_a_batch_larger_than_one_statement_is_still_one_transaction(tmp_path):
    """250 records (several INSERT statements) reach the writer together: one transaction,
    in issue order."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    seen = commits(j)
    n = 125
    with writer_held(j):
        for i in range(n):
            j.decision("P", i, 10.0)
        tasks = [asyncio.create_task(j.intent("mpc", child(i))) for i in range(n)]
        await queued(j, 2 * n)
    await asyncio.gather(*tasks)
    assert len(seen) == 1 == j.n_commits
    assert labels(path) == [f"decision:{i}" for i in range(n)] + [
        f"intent:P-x-{i:05d}" for i in range(n)
    ]
    j.close()


async def test_a_failure_in_a_later_statement_of_a_batch_rolls_back_the_earlier_ones(tmp_path):
    """The refused record is the 201st of a 250-record batch: the 200 before it were inserted
    by earlier statements of the same transaction, and the rollback takes them out too."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    await j.intent("mpc", child(0))
    _boom_trigger(path)
    with writer_held(j):
        for i in range(200):
            j.event("P", "mpc", fill(i))
        bad = asyncio.create_task(j.intent("mpc", child(1, parent="BOOM")))
        await queued(j, 201)
        for i in range(200, 249):
            j.event("P", "mpc", fill(i))
        flushed = asyncio.create_task(j.flush())
        await queued(j, 251)
    for t in (bad, flushed):
        with pytest.raises(JournalUnavailable, match="injected fault"):
            await t
    assert not j._pool.submit(lambda: j._conn.in_transaction).result()
    assert labels(path) == ["intent:P-x-00000"]
    assert j.health()["writes_refused"] == 249
    j.close()
    assert labels(path) == ["intent:P-x-00000"]


async def test_a_record_that_cannot_be_encoded_ends_its_batch_there(tmp_path):
    """An event whose body JSON cannot encode (a caller's bug) in the middle of a batch: the
    records issued before it are committed and their intent returns; it and everything after
    it are not written, and the intent after it raises JournalUnavailable."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    with writer_held(j):
        a = asyncio.create_task(j.intent("mpc", child(1)))
        await queued(j, 1)
        j.event("P", "mpc", OrderFilled("P-x-00001", object(), 100.0, 10.0, 1))  # type: ignore[arg-type]
        c = asyncio.create_task(j.intent("mpc", child(3)))
        await queued(j, 3)
    await a
    with pytest.raises(JournalUnavailable, match="not JSON serializable"):
        await c
    assert labels(path) == ["intent:P-x-00001"]
    assert j.fault is not None and isinstance(j.fault.__cause__, TypeError)
    j.close()


async def test_a_full_disk_mid_batch_fails_the_batch_and_keeps_the_prefix(tmp_path):
    """The real fault: SQLITE_FULL (the file capped at its size) on a batch of small intents
    with a big one in the middle: none of the batch is written, all raise."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    await j.intent("mpc", child(0))
    pages = j._pool.submit(lambda: j._conn.execute("PRAGMA page_count").fetchone()[0]).result()
    j._pool.submit(lambda: j._conn.execute(f"PRAGMA max_page_count={pages}")).result()
    big = ChildOrder("P-x-00002", "P", "S" * 20_000, Side.BUY, 1.0, 10.0, 5)
    with writer_held(j):
        tasks = [
            asyncio.create_task(j.intent("mpc", c)) for c in (child(1), big, child(3), child(4))
        ]
        await queued(j, 4)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, JournalUnavailable) for r in results), results
    assert "full" in str(results[0])
    j.close()
    assert labels(path) == ["intent:P-x-00000"]


async def test_a_check_runs_after_the_records_queued_before_it(tmp_path):
    """add_parent's check reads the journal after every record queued before it is committed:
    a parent id that only a queued (not yet written) decision used is refused."""
    j = Journal(tmp_path / "j.sqlite")
    with writer_held(j):
        j.decision("Q", 0, 10.0)
        add = asyncio.create_task(j.add_parent({"id": "Q", "quantity": 100}))
        ok = asyncio.create_task(j.add_parent({"id": "R", "quantity": 100}))
        await queued(j, 3)
    with pytest.raises(DuplicateParent):
        await add
    await ok
    assert [p["id"] for p in j.parents()[0]] == ["R"]
    j.close()


async def test_queue_intent_is_durable_in_order_without_waiting(tmp_path):
    """A shadow leg's child is queued (the caller does not wait for the disk) and lands in
    order, before its fill, and replays like any intent."""
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.queue_intent("twap", child(1, parent="P-twap"))
    j.event("P-twap", "twap", fill(1, parent="P-twap"))
    await j.flush()
    assert labels(path) == ["intent:P-twap-x-00001", "event:P-twap-x-00001"]
    assert j.load("P-twap").items == [
        ("twap", child(1, parent="P-twap")),
        ("twap", fill(1, parent="P-twap")),
    ]
    j.close()


async def test_writes_after_close_are_refused_not_lost_silently(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.close()
    j.event("P", "mpc", fill(1))
    assert j.health()["writes_refused"] == 1
    with pytest.raises(JournalUnavailable, match="closed"):
        await j.intent("mpc", child(1))
    j.close()  # twice is fine
