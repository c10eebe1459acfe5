"""Crash-safe order journal: SQLite in WAL mode with ``synchronous=FULL`` (every commit is on
disk before it returns), written by one dedicated thread off the event loop.

Group commit. Every write joins one queue in the order it was issued; the writer thread takes
everything queued when it wakes and commits each run of records in ONE transaction (one fsync:
with WAL and ``synchronous=FULL`` SQLite syncs the WAL once per commit, whatever the number of
rows), in queue order, so the file's ``seq`` order is the issue order. An awaited write
(``intent``, ``add_parent``, ``cancel_parent``, ``set_halted``, ``flush``) returns only once the
transaction holding it is committed; a burst of intents waits for one commit, not one each.
Reads and checked writes (``load``, ``start_run``, ``add_parent``...) run after every record
queued before them is committed. A caller that stops waiting does not withdraw its record.

What is recorded, in order, for every parent order:

- ``decision``: each period decided (so a restart does not decide it again);
- ``intent``: each child *before* it is sent (the daemon awaits this commit, so a crash can
  never leave an order at the venue that the journal does not know);
- ``event``: each acknowledgement, fill (keyed by ExecID, so it is applied once), cancel and
  reject, as the tracker accepted it.

``load(parent_id)`` returns that history; ``agent.daemon`` replays it into a fresh tracker on
restart, so what is filled and what is left are exact, client order ids are never reused, and a
child that was sent but never closed stays open (in doubt, its shares reserved) instead of being
sent again.

Ids. Every daemon start takes a fresh run tag (``start_run``, recorded, never repeated on a
journal; ``make_run_tag`` without one) for client order ids ``{parent}-{tag}-{n:05d}``, so ids
are unique across restarts and days towards a venue. A parent id is never reused on a journal:
``add_parent`` raises ``DuplicateParent`` for an id it ever saw (``parent_known``). A journal
written before that rule may hold a parent twice: ``report()`` lists it, ``parents()`` keeps the
first, and ``load()`` stops at the first reused client order id (``ParentHistory.conflict``)
instead of feeding a duplicate to the tracker, so a start reports it rather than crash-looping.

Faults (contract). A write or read that fails (disk full, I/O error) makes the journal
*unavailable* for good (``fault`` is set; nothing after it is written, so replay never sees a
history with a hole in it), logs ``journal.unavailable`` at error level once and calls
``on_fault(error)`` on the event loop, where the daemon engages the kill switch. A failed
transaction is rolled back whole: none of its records is durable, and each of its waiters gets
``JournalUnavailable`` (a record that cannot be encoded ends its batch instead: the records
before it are committed, it and all after it are not). Then:

- ``intent``, ``add_parent``, ``cancel_parent``, ``start_run``, ``set_halted``, ``flush``,
  ``load``, ``parents``, ``halted``, ``parent_known``, ``client_order_ids`` raise
  ``JournalUnavailable`` (an intent that is not durable is never sent);
- ``decision``, ``event``, ``anomaly``, ``queue_intent`` (queued) never raise: a failure is
  reported through ``fault``/``on_fault``, and the queued writes it kept from the disk (those
  of the failed transaction and every one after it) are counted in ``health()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args

import structlog

from agent.errors import DuplicateParent, JournalUnavailable
from agent.model import ChildOrder, OrderEvent, Side, TrackerEvent
from agent.paths import check_state_path

__all__ = ["Journal", "JournalReport", "ParentHistory", "make_run_tag"]

_T = TypeVar("_T")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def make_run_tag(now_ns: int) -> str:
    """Return the run tag of a start at ``now_ns``: its UTC millisecond in base 36 (8 chars).

    Sortable, and unique per start unless two starts share a millisecond (``start_run`` on a
    journal makes it unique for sure). Eight characters last until the year 2059.
    """
    n = max(0, now_ns // 1_000_000)
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out.rjust(8, "0")


@dataclass(frozen=True, slots=True)
class JournalReport:
    """What an old journal holds that the id rules forbid (empty on a journal written now)."""

    duplicate_parents: tuple[str, ...] = ()  # parent ids submitted more than once
    duplicate_client_order_ids: tuple[str, ...] = ()  # client order ids with two intents

    @property
    def ok(self) -> bool:
        """Return True when nothing is duplicated."""
        return not (self.duplicate_parents or self.duplicate_client_order_ids)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id TEXT NOT NULL,
    kind TEXT NOT NULL,          -- decision | intent | event
    body TEXT NOT NULL           -- JSON
);
CREATE INDEX IF NOT EXISTS records_parent ON records(parent_id, seq);
"""

_INSERT = "INSERT INTO records(parent_id, kind, body) VALUES (?, ?, ?)"
# Rows per INSERT of a batch: 3 parameters a row stays under SQLite's oldest bound of 999.
_CHUNK = 100


@functools.cache
def _insert_rows_sql(n: int) -> str:
    """The INSERT of ``n`` rows in one statement (rows inserted in the order listed)."""
    return "INSERT INTO records(parent_id, kind, body) VALUES " + ",".join(["(?, ?, ?)"] * n)


# Every event the tracker applies, venue reports and our cancel/replace requests alike.
_EVENTS: dict[str, type] = {c.__name__: c for c in get_args(TrackerEvent)}


class ParentHistory:
    """What the journal knows of one parent, in write order."""

    def __init__(self) -> None:
        self.periods: list[int] = []
        self.arrival_mid = float("nan")
        self.carry = 0.0  # the planner's lot-rounding residual after the last decision
        # (leg, ChildOrder | OrderEvent) in write order: intents and events interleaved
        self.items: list[tuple[str, ChildOrder | OrderEvent]] = []
        # Set when the journal reuses a client order id of this parent (an old journal): the
        # history stops before the reuse and what follows it needs a human, not a replay.
        self.conflict = ""
        self.duplicate_ids: list[str] = []
        self.n_dropped = 0  # records after the reuse, not replayed

    @property
    def empty(self) -> bool:
        """Return True when nothing was recorded."""
        return not (self.periods or self.items)


@dataclass(slots=True)
class _Write:
    """One record for the writer thread; ``done`` resolves once its transaction is committed.

    ``kind == ""`` writes nothing: a flush, resolved with the records queued before it.
    """

    parent_id: str
    kind: str
    body: dict[str, Any] | None
    # None: a queued write, nobody waits. An asyncio future: a coroutine waits (all of a
    # batch's are resolved by one call onto their loop). A concurrent one: a thread waits.
    done: Future[None] | asyncio.Future[None] | None


@dataclass(slots=True)
class _Call:
    """A read, or a write that must read first, run on the writer thread after every record
    queued before it is committed."""

    fn: Callable[[], Any]
    done: Future[Any]


def _settle(fut: Future[Any], err: BaseException | None = None) -> None:
    """Resolve a waiting thread (one whose caller gave up is left as it is: the record stands)."""
    with contextlib.suppress(InvalidStateError):
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)


def _settle_aio(futs: list[asyncio.Future[None]], err: BaseException | None) -> None:
    """Resolve waiting coroutines, on their loop (a cancelled one is left as it is)."""
    for f in futs:
        if not f.done():
            if err is None:
                f.set_result(None)
            else:
                f.set_exception(err)


def _release(writes: list[_Write], err: BaseException | None = None) -> None:
    """Answer the waiters of ``writes``: the coroutines with one call onto their loop (each
    call wakes the loop through its self-pipe, which lets go of the GIL: one a batch, not one
    a record), the threads directly."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for w in writes:
        d = w.done
        if isinstance(d, Future):
            _settle(d, err)
        elif d is not None:
            by_loop.setdefault(d.get_loop(), []).append(d)
    for loop, futs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_aio, futs, err)


class Journal:
    """The journal file; all writes go through one thread, in submission order.

    Args:
        path: SQLite file (created if missing; its folder too, mode 0700).
        on_fault: Called once, on the event loop when there is one, when the journal becomes
            unavailable (the daemon engages the kill switch there).

    Raises:
        ConfigError: ``path`` exists and is not a regular file (see ``agent.paths``).
        JournalUnavailable: the file cannot be opened as a journal.
    """

    def __init__(
        self,
        path: str | Path,
        on_fault: Callable[[JournalUnavailable], object] | None = None,
    ) -> None:
        self.path = check_state_path(path, "file", "journal.path")
        self.on_fault = on_fault
        self.fault: JournalUnavailable | None = None
        self.n_refused = 0  # queued writes not made durable because of the fault
        self.n_commits = 0  # transactions committed by the writer (one fsync each)
        self.n_written = 0  # records they held
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._report: JournalReport | None = None
        # The writer's queue: records and calls in issue order, taken whole by _drain.
        self._lock = threading.Lock()
        self._ops: list[_Write | _Call] = []
        self._draining = False  # a _drain is scheduled or running on the pool
        self._closed = False  # close() queued: nothing more is accepted
        self._catch_loop()
        try:
            self._pool.submit(self._open).result()
        except sqlite3.Error as e:
            self._pool.shutdown(wait=True)
            raise JournalUnavailable(f"journal {self.path}: cannot open: {e}") from e

    def _open(self) -> None:
        # The statement cache holds every batch size's INSERT (up to _CHUNK) besides the rest.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    # -- faults ----------------------------------------------------------------------------------
    def _catch_loop(self) -> None:
        # Remember the loop the daemon runs on (calls come from it), for on_fault.
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def _guard(self, fn: Callable[[], _T], what: str) -> _T:
        """Run ``fn`` on the writer thread's connection; turn any failure into the fault."""
        if self.fault is not None:
            raise self.fault
        if self._conn is None:
            raise JournalUnavailable(f"journal {self.path}: closed (while {what})")
        try:
            return fn()
        except sqlite3.Error as e:
            err = JournalUnavailable(f"journal {self.path}: {what} failed: {e}")
            err.__cause__ = e
            self._fail(err)
            raise err from e

    def _fail(self, err: JournalUnavailable) -> None:
        if self.fault is not None:
            return
        self.fault = err
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._announce, err)
                return
            except RuntimeError:  # loop closed in between
                pass
        self._announce(err)

    def _announce(self, err: JournalUnavailable) -> None:
        structlog.get_logger().error(
            "journal.unavailable",
            path=str(self.path),
            error=str(err),
            hint="nothing more is sent; free the disk, then restart (the journal resumes)",
        )
        if self.on_fault is not None:
            self.on_fault(err)

    def health(self) -> dict[str, Any]:
        """Return the journal's state for ``exec-agent status``."""
        return {
            "ok": self.fault is None,
            "path": str(self.path),
            "error": str(self.fault) if self.fault is not None else None,
            "writes_refused": self.n_refused,
            "records_written": self.n_written,
            "transactions": self.n_commits,
        }

    # -- the writer thread -----------------------------------------------------------------------
    def _submit(self, op: _Write | _Call, *, last: bool = False) -> None:
        """Queue ``op`` for the writer; ``last`` (close) accepts nothing after it."""
        with self._lock:
            if self._closed:
                raise JournalUnavailable(f"journal {self.path}: closed")
            self._ops.append(op)
            self._closed = last
            if self._draining:
                return  # the running drain takes it with the next batch
            self._draining = True
        self._pool.submit(self._drain)

    def _drain(self) -> None:
        # Take everything queued, run it, and again until the queue is empty: what arrives
        # during one commit goes into the next, so a busy journal commits in batches.
        while True:
            with self._lock:
                ops = self._ops
                if not ops:
                    self._draining = False
                    return
                self._ops = []
            try:
                self._run(ops)
            except BaseException as e:  # a bug here must not leave waiters hanging
                err = JournalUnavailable(f"journal {self.path}: writer failed: {e!r}")
                err.__cause__ = e
                self._fail(err)
                _release([op for op in ops if isinstance(op, _Write)], err)
                for op in ops:
                    if isinstance(op, _Call):
                        _settle(op.done, err)

    def _run(self, ops: list[_Write | _Call]) -> None:
        """Commit runs of consecutive records as one transaction each; a call runs after the
        records before it are committed, so it reads them and its own writes follow them."""
        group: list[_Write] = []
        for op in ops:
            if isinstance(op, _Write):
                group.append(op)
                continue
            self._commit(group)
            group = []
            if op.done.set_running_or_notify_cancel():  # not when its caller gave up
                try:
                    result = op.fn()
                except BaseException as e:
                    op.done.set_exception(e)
                else:
                    op.done.set_result(result)
        self._commit(group)

    def _commit(self, group: list[_Write]) -> None:
        """Write ``group`` in one transaction (one fsync), then release its waiters.

        A failure writes nothing of the group (rolled back), makes the journal unavailable,
        and answers every waiter of the group with the fault; a record that cannot be encoded
        ends the group there: what precedes it is committed, nothing after it is.
        """
        if not group:
            return
        if self.fault is not None or self._conn is None:
            self._refuse(group, self.fault or JournalUnavailable(f"journal {self.path}: closed"))
            return
        rows: list[tuple[str, str, str]] = []
        n_ok, bad = len(group), None
        for i, w in enumerate(group):
            if not w.kind:
                continue  # a flush
            try:
                rows.append((w.parent_id, w.kind, json.dumps(w.body)))
            except (TypeError, ValueError) as e:  # the caller's bug, still never silent
                n_ok = i
                bad = JournalUnavailable(
                    f"journal {self.path}: writing {w.kind} of {w.parent_id} failed: {e!r}"
                )
                bad.__cause__ = e
                break
        if rows:
            conn = self._conn
            try:
                self._insert(conn, rows)
            except sqlite3.Error as e:
                if conn.in_transaction:  # SQLITE_FULL or IOERR may have rolled it back already
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                pid, kind, _ = rows[0]
                what = (
                    f"writing {kind} of {pid}"
                    if len(rows) == 1
                    else f"writing {len(rows)} records ({kind} of {pid} first)"
                )
                err = JournalUnavailable(f"journal {self.path}: {what} failed: {e}")
                err.__cause__ = e
                self._fail(err)
                self._refuse(group, err)
                return
            self.n_commits += 1
            self.n_written += len(rows)
        _release(group[:n_ok])
        if bad is not None:
            self._fail(bad)
            self._refuse(group[n_ok:], bad)

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
        """Insert ``rows`` in order as ONE transaction: a statement per chunk of rows, not per
        row (each sqlite call lets go of the GIL, and taking it back from a busy event loop
        costs up to the switch interval), inside BEGIN ... COMMIT when there are several."""
        if len(rows) <= _CHUNK:  # one statement: its own transaction, atomic and durable
            conn.execute(_insert_rows_sql(len(rows)), [x for r in rows for x in r])
            return
        conn.execute("BEGIN")
        for i in range(0, len(rows), _CHUNK):
            part = rows[i : i + _CHUNK]
            conn.execute(_insert_rows_sql(len(part)), [x for r in part for x in r])
        conn.execute("COMMIT")

    def _refuse(self, group: list[_Write], err: JournalUnavailable) -> None:
        """Answer records that are not durable: waiters get ``err``, queued ones are counted."""
        _release(group, err)
        n = sum(1 for w in group if w.done is None and w.kind)
        with self._lock:
            self.n_refused += n

    def _write(self, parent_id: str, kind: str, body: dict[str, Any]) -> None:
        """Insert one record now (inside a call on the writer thread, its own transaction)."""
        assert self._conn is not None
        self._conn.execute(_INSERT, (parent_id, kind, json.dumps(body)))

    def _queue(self, parent_id: str, kind: str, body: dict[str, Any]) -> None:
        # Queued write: never raises into the caller; a failure becomes the fault (logged,
        # on_fault), and a write refused after it is counted.
        self._catch_loop()
        if self.fault is None:
            try:
                self._submit(_Write(parent_id, kind, body, None))
                return
            except JournalUnavailable:  # closed
                pass
        with self._lock:
            self.n_refused += 1

    async def _await_durable(self, parent_id: str, kind: str, body: dict[str, Any] | None) -> None:
        """Queue a record and return once the transaction holding it is committed."""
        self._catch_loop()
        if self.fault is not None:
            raise self.fault
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Write(parent_id, kind, body, fut))
        await fut

    def _call(self, fn: Callable[[], _T], what: str) -> _T:
        """Run a read or a checked write on the writer thread and wait (blocking)."""
        self._catch_loop()
        if self.fault is not None:
            raise self.fault
        fut: Future[_T] = Future()
        self._submit(_Call(lambda: self._guard(fn, what), fut))
        return fut.result()

    async def _acall(self, fn: Callable[[], _T], what: str) -> _T:
        self._catch_loop()
        if self.fault is not None:
            raise self.fault
        fut: Future[_T] = Future()
        self._submit(_Call(lambda: self._guard(fn, what), fut))
        return await asyncio.wrap_future(fut)

    # -- writes (ordered by the single writer thread) --------------------------------------------
    async def intent(self, leg: str, child: ChildOrder) -> None:
        """Record a child before it is sent; returns once it is durable."""
        body = asdict(child) | {"leg": leg, "side": child.side.value}
        await self._await_durable(child.parent_id, "intent", body)

    def queue_intent(self, leg: str, child: ChildOrder) -> None:
        """Record a child that never reaches a venue (the TWAP shadow leg): queued, durable in
        order, so before any event of it, like ``event``; never raises."""
        body = asdict(child) | {"leg": leg, "side": child.side.value}
        self._queue(child.parent_id, "intent", body)

    def decision(self, parent_id: str, period: int, arrival_mid: float, carry: float = 0.0) -> None:
        """Record that a period was decided (queued; durable in order)."""
        body = {"period": period, "arrival_mid": arrival_mid, "carry": carry}
        self._queue(parent_id, "decision", body)

    def event(self, parent_id: str, leg: str, event: TrackerEvent) -> None:
        """Record an order event the tracker applied (queued; durable in order)."""
        body = asdict(event) | {"type": type(event).__name__, "leg": leg}
        self._queue(parent_id, "event", body)

    def anomaly(self, parent_id: str, leg: str, event: OrderEvent, error: str) -> None:
        """Record a broker report the tracker refused (kept for a human; not replayed)."""
        body = asdict(event) | {"type": type(event).__name__, "leg": leg, "error": error}
        self._queue(parent_id, "anomaly", body)

    def set_halted(self, halted: bool, reason: str) -> None:
        """Record the kill-switch state (durable before this returns)."""
        if self.fault is not None:
            raise self.fault
        done: Future[None] = Future()
        self._submit(_Write("*", "halt", {"halted": halted, "reason": reason}, done))
        done.result()

    def halted(self) -> bool:
        """Return the last recorded kill-switch state (False when never set)."""

        def _read() -> str | None:
            assert self._conn is not None
            cur = self._conn.execute(
                "SELECT body FROM records WHERE parent_id = '*' AND kind = 'halt' "
                "ORDER BY seq DESC LIMIT 1"
            )
            row = cur.fetchone()
            return None if row is None else str(row[0])

        body = self._call(_read, "reading the kill switch")
        return bool(body and json.loads(body)["halted"])

    async def add_parent(self, order: dict[str, Any]) -> None:
        """Record a parent submitted while running (durable before it returns).

        Raises:
            DuplicateParent: the journal already knows this id (checked on the writer
                thread, so two submissions of one id cannot both pass).
        """
        pid = str(order["id"])

        def _add() -> None:
            if self._known(pid):
                raise DuplicateParent(pid)
            self._write(pid, "parent", order)

        await self._acall(_add, f"recording parent {pid}")

    async def cancel_parent(self, parent_id: str, reason: str) -> None:
        """Record that a parent was cancelled (durable before it returns)."""
        await self._await_durable(parent_id, "parent_cancelled", {"reason": reason})

    async def start_run(self, now_ns: int) -> str:
        """Record a new daemon start and return its run tag, never used before on this journal.

        Args:
            now_ns: Start time, ns since the epoch (the tag is ``make_run_tag`` of it, moved on
                by a millisecond at a time past any tag already recorded).
        """

        def _start() -> str:
            assert self._conn is not None
            rows = self._conn.execute(
                "SELECT body FROM records WHERE parent_id = '*' AND kind = 'run'"
            ).fetchall()
            used = {json.loads(b)["tag"] for (b,) in rows}
            t = now_ns
            while (tag := make_run_tag(t)) in used:
                t += 1_000_000
            self._write("*", "run", {"tag": tag, "ts_ns": now_ns})
            return tag

        return await self._acall(_start, "recording the run")

    def _known(self, parent_id: str) -> bool:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT 1 FROM records WHERE parent_id = ? OR parent_id = ? LIMIT 1",
            (parent_id, f"{parent_id}-twap"),
        ).fetchone()
        return row is not None

    def parent_known(self, parent_id: str) -> bool:
        """Return True when the journal ever recorded anything under this parent id."""
        return self._call(lambda: self._known(parent_id), f"looking up parent {parent_id}")

    def client_order_ids(self) -> set[str]:
        """Return every client order id the journal ever recorded an intent for."""

        def _read() -> set[str]:
            assert self._conn is not None
            cur = self._conn.execute(
                "SELECT json_extract(body, '$.client_order_id') FROM records WHERE kind = 'intent'"
            )
            return {str(r[0]) for r in cur.fetchall()}

        return self._call(_read, "reading client order ids")

    def report(self) -> JournalReport:
        """Return what the journal holds against the id rules (from an older version)."""
        if self._report is None:

            def _read() -> tuple[list[str], list[str]]:
                assert self._conn is not None
                parents = self._conn.execute(
                    "SELECT parent_id FROM records WHERE kind = 'parent' "
                    "GROUP BY parent_id HAVING COUNT(*) > 1 ORDER BY MIN(seq)"
                ).fetchall()
                coids = self._conn.execute(
                    "SELECT json_extract(body, '$.client_order_id') AS c FROM records "
                    "WHERE kind = 'intent' GROUP BY c HAVING COUNT(*) > 1 ORDER BY MIN(seq)"
                ).fetchall()
                return [str(r[0]) for r in parents], [str(r[0]) for r in coids]

            dp, dc = self._call(_read, "checking ids")
            self._report = JournalReport(tuple(dp), tuple(dc))
        return self._report

    def parents(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Return the parents submitted while running, and the cancelled ones (id -> reason)."""

        def _read() -> list[tuple[str, str, str]]:
            assert self._conn is not None
            cur = self._conn.execute(
                "SELECT parent_id, kind, body FROM records "
                "WHERE kind IN ('parent', 'parent_cancelled') ORDER BY seq"
            )
            return list(cur.fetchall())

        submitted: list[dict[str, Any]] = []
        cancelled: dict[str, str] = {}
        seen: set[str] = set()
        for pid, kind, body in self._call(_read, "reading parents"):
            if kind == "parent":
                if pid in seen:  # an old journal's reused id: the first one is the parent
                    continue
                seen.add(pid)
                submitted.append(json.loads(body))
            else:
                cancelled[pid] = json.loads(body).get("reason", "")
        return submitted, cancelled

    async def flush(self) -> None:
        """Return once every write queued before it is durable.

        Raises:
            JournalUnavailable: a write failed (then not every write is durable).
        """
        await self._await_durable("", "", None)
        if self.fault is not None:
            raise self.fault

    def close(self) -> None:
        """Finish the queued writes and close the file."""

        def _close() -> None:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error as e:
                    self._fail(JournalUnavailable(f"journal {self.path}: close failed: {e}"))
                self._conn = None

        done: Future[None] = Future()
        try:
            self._submit(_Call(_close, done), last=True)
        except JournalUnavailable:  # closed already
            return
        done.result()
        self._pool.shutdown(wait=True)

    # -- reading -----------------------------------------------------------------------------
    def load(self, parent_id: str) -> ParentHistory:
        """Return the recorded history of a parent (empty when none)."""

        def _read() -> list[tuple[str, str]]:
            assert self._conn is not None
            cur = self._conn.execute(
                "SELECT kind, body FROM records WHERE parent_id = ? ORDER BY seq", (parent_id,)
            )
            return list(cur.fetchall())

        h = ParentHistory()
        seen: set[str] = set()
        for kind, body_s in self._call(_read, f"reading parent {parent_id}"):
            if h.conflict:
                h.n_dropped += 1
                continue
            body = json.loads(body_s)
            if kind == "decision":
                h.periods.append(int(body["period"]))
                if body.get("arrival_mid") is not None:
                    h.arrival_mid = float(body["arrival_mid"])
                h.carry = float(body.get("carry", 0.0))
            elif kind == "intent":
                leg = body.pop("leg")
                body["side"] = Side(body["side"])
                coid = body["client_order_id"]
                if coid in seen:
                    h.duplicate_ids.append(coid)
                    h.conflict = (
                        f"client order id {coid} was sent twice under parent {parent_id} "
                        "(a journal from before ids were unique): history kept up to the reuse"
                    )
                    h.n_dropped += 1
                    continue
                seen.add(coid)
                h.items.append((leg, ChildOrder(**body)))
            elif kind == "event":
                leg = body.pop("leg")
                cls = _EVENTS[body.pop("type")]
                h.items.append((leg, cls(**body)))
        if h.conflict:
            structlog.get_logger().error(
                "journal.conflict",
                parent_id=parent_id,
                duplicate_ids=h.duplicate_ids,
                records_not_replayed=h.n_dropped,
                detail=h.conflict,
                hint="check these ids at the venue; the parent resumes from before the reuse",
            )
        return h
