"""Crash-safe order journal: SQLite in WAL mode with ``synchronous=FULL`` (every commit is on
disk before it returns), written by one dedicated thread off the event loop.

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
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, get_args

from agent.model import ChildOrder, OrderEvent, Side, TrackerEvent

__all__ = ["Journal", "ParentHistory"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id TEXT NOT NULL,
    kind TEXT NOT NULL,          -- decision | intent | event
    body TEXT NOT NULL           -- JSON
);
CREATE INDEX IF NOT EXISTS records_parent ON records(parent_id, seq);
"""

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

    @property
    def empty(self) -> bool:
        """Return True when nothing was recorded."""
        return not (self.periods or self.items)


class Journal:
    """The journal file; all writes go through one thread, in submission order.

    Args:
        path: SQLite file (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._pool.submit(self._open).result()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _write(self, parent_id: str, kind: str, body: dict[str, Any]) -> None:
        assert self._conn is not None
        self._conn.execute(
            "INSERT INTO records(parent_id, kind, body) VALUES (?, ?, ?)",
            (parent_id, kind, json.dumps(body)),
        )

    # -- async writes (ordered by the single writer thread) --------------------------------------
    async def intent(self, leg: str, child: ChildOrder) -> None:
        """Record a child before it is sent; returns once it is durable."""
        body = asdict(child) | {"leg": leg, "side": child.side.value}
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self._write, child.parent_id, "intent", body
        )

    def decision(self, parent_id: str, period: int, arrival_mid: float, carry: float = 0.0) -> None:
        """Record that a period was decided (queued; durable in order)."""
        body = {"period": period, "arrival_mid": arrival_mid, "carry": carry}
        self._pool.submit(self._write, parent_id, "decision", body)

    def event(self, parent_id: str, leg: str, event: TrackerEvent) -> None:
        """Record an order event the tracker applied (queued; durable in order)."""
        body = asdict(event) | {"type": type(event).__name__, "leg": leg}
        self._pool.submit(self._write, parent_id, "event", body)

    def anomaly(self, parent_id: str, leg: str, event: OrderEvent, error: str) -> None:
        """Record a broker report the tracker refused (kept for a human; not replayed)."""
        body = asdict(event) | {"type": type(event).__name__, "leg": leg, "error": error}
        self._pool.submit(self._write, parent_id, "anomaly", body)

    def set_halted(self, halted: bool, reason: str) -> None:
        """Record the kill-switch state (durable before this returns)."""
        self._pool.submit(self._write, "*", "halt", {"halted": halted, "reason": reason}).result()

    def halted(self) -> bool:
        """Return the last recorded kill-switch state (False when never set)."""

        def _read() -> tuple[str] | None:
            assert self._conn is not None
            cur = self._conn.execute(
                "SELECT body FROM records WHERE parent_id = '*' AND kind = 'halt' "
                "ORDER BY seq DESC LIMIT 1"
            )
            return cur.fetchone()

        row = self._pool.submit(_read).result()
        return bool(row and json.loads(row[0])["halted"])

    async def add_parent(self, order: dict[str, Any]) -> None:
        """Record a parent submitted while running (durable before it returns)."""
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self._write, str(order["id"]), "parent", order
        )

    async def cancel_parent(self, parent_id: str, reason: str) -> None:
        """Record that a parent was cancelled (durable before it returns)."""
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self._write, parent_id, "parent_cancelled", {"reason": reason}
        )

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
        for pid, kind, body in self._pool.submit(_read).result():
            if kind == "parent":
                submitted.append(json.loads(body))
            else:
                cancelled[pid] = json.loads(body).get("reason", "")
        return submitted, cancelled

    async def flush(self) -> None:
        """Return once every queued write is durable."""
        await asyncio.get_running_loop().run_in_executor(self._pool, lambda: None)

    def close(self) -> None:
        """Finish the queued writes and close the file."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(_close).result()
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
        for kind, body_s in self._pool.submit(_read).result():
            body = json.loads(body_s)
            if kind == "decision":
                h.periods.append(int(body["period"]))
                if body.get("arrival_mid") is not None:
                    h.arrival_mid = float(body["arrival_mid"])
                h.carry = float(body.get("carry", 0.0))
            elif kind == "intent":
                leg = body.pop("leg")
                body["side"] = Side(body["side"])
                h.items.append((leg, ChildOrder(**body)))
            elif kind == "event":
                leg = body.pop("leg")
                cls = _EVENTS[body.pop("type")]
                h.items.append((leg, cls(**body)))
        return h
