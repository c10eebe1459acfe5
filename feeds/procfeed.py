"""Websocket feeds read in a child process, so reading uses another core than the decisions.

``ReaderProcess`` starts one child process (``python -m feeds.procfeed``, a subprocess that
imports only this package, never the daemon's main module) that runs the unchanged
``feeds.live.WebSocketFeed`` of every symbol opened through it (connect, reconnect, decode,
validate, buffer, conflation and staleness counting) on its own asyncio loop.
``ProcessFeed`` is the daemon's side of one symbol: it has the consumer interface of a
``WebSocketFeed`` (``updates``, ``hold``, ``idle``, ``is_stale``, ``stats``, ``aclose``).

Transport: two one-way ``multiprocessing.connection`` pipes and one shared byte per feed (a
memfd mapping). The parent's loop watches the data pipe with ``loop.add_reader``; a batch is
one message of a fixed header and the batch's numpy columns as raw bytes (no per-row Python
object, no pickle), unpacked into views. The child sends a feed's next batch only when its
consumer asks (it comes back for one: the shared byte, which costs no system call; the child
reads it when rows wake it or at its heartbeat), so the rows that came while the daemon
worked arrive as one batch, and the rows a busy daemon has not taken wait in the child's
``RowBuffer``, bounded and counted there exactly as in the loop reader (``stats.conflated``).
A child whose rows wait unasked says so once (``R``; ``idle()`` is then false), and is sent a
word (``W``) when the consumer asks. ``hold`` values go to the child, whose feed holds rows as
the loop reader does. Each wake-up of the other process costs a system call and a scheduler
hop (about 0.25 ms of the writer's time on this project's VM): one per batch is the price.

Logs the child emits (``feed.connected``, ``feed.invalid_message`` ...) are sent through the
data pipe and logged again by the parent's structlog, in order with the batches, so they reach
the daemon's log stream (and its redaction). The child dies with the parent: it exits when the
command pipe closes (the parent exited, even by kill -9) or its parent pid changes. A child
that dies makes ``updates()`` raise ``FeedError`` naming the symbol, never a silent stop;
``aclose()`` gets the child's final counters into ``stats``, and the last feed closed ends the
child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import multiprocessing as mp
import os
import pickle
import signal
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from feeds.clock import Clock, WallClock
from feeds.errors import FeedError
from feeds.live import LiveStats, WebSocketFeed
from feeds.model import BookBatch

__all__ = ["ProcessFeed", "ReaderProcess"]

# Batch message: kind, symbol id, rows, levels, has-events flag, then the child's last valid
# book receive time and its frames / books / conflated counters; 48 bytes keeps the columns
# that follow 8-byte aligned.
_HDR = struct.Struct("<c3xIIHBxqqqq")
_BATCH, _PICKLED = b"B", b"P"
# Commands to the child: pickled (``_PICKLED`` + pickle) but for the two sent per batch.
_WANT = struct.Struct("<c3xI")  # b"W", symbol id: the parent took a batch, send the next
_HOLD = struct.Struct("<c?2xIq")  # b"H", has a time, symbol id, until_ns
# To the parent: b"R", symbol id: rows wait to wake the consumer, who has not asked yet.
_READY = struct.Struct("<c3xI")
_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding ``feeds``
_PIPE_BYTES = 1 << 20  # a large batch written whole while the parent is busy
_MAX_FEEDS = 4096  # feeds of one reader process (a byte each in the shared asks)
_CLOSE_WAIT_S = 5.0  # the child's aclose takes up to 3 s (close handshake, reader)


def _pack(sid: int, b: BookBatch, feed: WebSocketFeed) -> bytes:
    """Return one batch as a message: the header, then the columns' bytes."""
    st = feed.stats
    ev = b.action is not None
    n, levels = len(b), b.bid_px.shape[1]
    hdr = _HDR.pack(_BATCH, sid, n, levels, ev, feed.last_update_ns, st.frames, st.books,
                    st.conflated)  # fmt: skip
    cols: list[Any] = [b.ts_event_ns, b.ts_recv_ns, b.bid_px, b.bid_sz, b.ask_px, b.ask_sz]
    if ev:
        cols += [b.ev_px, b.ev_sz, b.action, b.ev_side]  # the uint8 columns last: alignment
    return b"".join([hdr, *[np.ascontiguousarray(c).data for c in cols]])


def _unpack(symbol: str, buf: bytearray) -> tuple[BookBatch, tuple[int, int, int, int]]:
    """Return the batch of a message (writable views into ``buf``) and its counters."""
    _, _, n, levels, ev, last, frames, books, conflated = _HDR.unpack_from(buf)
    off = _HDR.size
    ts = np.frombuffer(buf, np.int64, 2 * n, off).reshape(2, n)
    off += 16 * n
    book = np.frombuffer(buf, np.float64, 4 * n * levels, off).reshape(4, n, levels)
    if not ev:
        return BookBatch(symbol, ts[0], ts[1], book[0], book[1], book[2], book[3]), (
            last, frames, books, conflated,
        )  # fmt: skip
    off += 32 * n * levels
    evf = np.frombuffer(buf, np.float64, 2 * n, off).reshape(2, n)
    evu = np.frombuffer(buf, np.uint8, 2 * n, off + 16 * n).reshape(2, n)
    batch = BookBatch(
        symbol, ts[0], ts[1], book[0], book[1], book[2], book[3], evu[0], evu[1], evf[0], evf[1]
    )
    return batch, (last, frames, books, conflated)


def _pipe() -> tuple[Connection, Connection]:
    """Return a one-way pipe (reader, writer) with a large kernel buffer where allowed."""
    r, w = mp.Pipe(duplex=False)
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(w.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    return r, w


class ReaderProcess:
    """One child process that reads the websocket feeds of every symbol opened through it.

    The child starts with the first feed's ``updates()`` and ends when the last feed is
    closed (a later feed starts a new one). ``pid`` is the running child's, or None.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited = asyncio.Event()
        self._asks: mmap.mmap | None = None  # one byte a feed: its consumer waits for a batch
        self._cmd: Connection | None = None
        self._data: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._feeds: dict[int, ProcessFeed] = {}
        self._next_sid = 0
        self._stopping = False
        self._log = structlog.get_logger()

    @property
    def pid(self) -> int | None:
        """Return the child's process id while it runs."""
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def feed(self, url: str, symbol: str, **kwargs: Any) -> ProcessFeed:
        """Return the feed of ``symbol`` at ``url``; ``kwargs`` go to ``ProcessFeed``."""
        return ProcessFeed(self, url, symbol, **kwargs)

    # -- parent side of the pipes --------------------------------------------------------------
    def _start(self) -> None:
        cmd_r, cmd_w = _pipe()
        data_r, data_w = _pipe()
        self._stopping = False
        self._exited = asyncio.Event()
        env = dict(os.environ)  # the child imports this very package, wherever it lies
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        asks_fd = os.memfd_create("exec-agent-feed-asks")
        os.ftruncate(asks_fd, _MAX_FEEDS)
        self._asks = mmap.mmap(asks_fd, _MAX_FEEDS)
        self._next_sid = 0
        fds = (cmd_r.fileno(), data_w.fileno(), asks_fd)
        args = [str(fds[0]), str(fds[1]), str(os.getpid()), str(asks_fd)]
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "feeds.procfeed", *args],
                pass_fds=fds,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(asks_fd)  # the mapping stays
        cmd_r.close()  # the child holds its ends: its death is EOF here, ours EOF there
        data_w.close()
        self._cmd, self._data = cmd_w, data_r
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(data_r.fileno(), self._on_readable)
        self._log.info("feed.reader_process_started", pid=self._proc.pid)

    def _open(self, f: ProcessFeed, spec: dict[str, Any]) -> int:
        if self._proc is None:
            self._start()
        sid = self._next_sid
        if sid >= _MAX_FEEDS:
            raise FeedError(f"{f.symbol}: more than {_MAX_FEEDS} feeds in one reader process")
        self._next_sid += 1
        self._feeds[sid] = f
        self._send(("open", sid, spec))
        return sid

    def _send(self, msg: tuple[Any, ...]) -> None:
        self._send_bytes(_PICKLED + pickle.dumps(msg))

    def _ask(self, sid: int) -> None:
        """Say that a feed's consumer waits for its next batch (no system call: the child
        sees it when rows wake it, or at its heartbeat)."""
        if self._asks is not None:
            self._asks[sid] = 1

    def _send_bytes(self, raw: bytes) -> None:
        if self._cmd is None:
            return
        with contextlib.suppress(OSError):  # the child is gone: the data pipe's EOF tells
            self._cmd.send_bytes(raw)

    def _on_readable(self, ready: bool = True) -> None:
        """Take every message waiting in the data pipe and hand it to its feed (``ready``:
        the loop said the pipe is readable, so the first read does not wait)."""
        conn = self._data
        try:
            for _ in range(256):  # then let the loop run; it calls back while data waits
                if conn is None or not (ready or conn.poll()):
                    return
                ready = False
                self._dispatch(conn.recv_bytes())
                conn = self._data  # None once a message closed it
        except (EOFError, OSError):
            self._gone()

    def _drain(self) -> None:
        if self._data is not None:
            self._on_readable(ready=False)

    def _dispatch(self, msg: bytes) -> None:
        kind = msg[:1]
        if kind == _BATCH:
            sid = _HDR.unpack_from(msg)[1]
            f = self._feeds.get(sid)
            if f is not None:
                f._on_batch(*_unpack(f.symbol, bytearray(msg)))
            return
        if kind == b"R":
            sid = _READY.unpack(msg)[1]
            f = self._feeds.get(sid)
            if f is None:
                return
            if f._asked and f._batch is None:  # it waits already: the child needs a word
                self._send_bytes(_WANT.pack(b"W", sid))
            else:
                f._ready = True
            return
        kind, *rest = pickle.loads(msg[1:])
        if kind == "log":
            level, event, kw = rest
            getattr(self._log, level, self._log.info)(event, **kw)
            return
        f = self._feeds.get(rest[0])
        if f is None:
            return
        if kind == "stats":
            f._on_stats(rest[1])
        elif kind == "closed":
            f._on_stats(rest[1])
            f._closed_event.set()
        elif kind == "error":
            f._fail(rest[1])

    def _gone(self) -> None:
        """The data pipe closed: the child exited. Tell every open feed unless we stopped it."""
        proc, self._proc = self._proc, None
        self._close_pipes()
        self._exited.set()
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(0.5)  # reap it: it has closed its pipe, so it is exiting
        if self._stopping:
            return
        pid = proc.pid if proc is not None else None
        self._log.error("feed.reader_process_died", pid=pid, exit_code=code)
        for f in list(self._feeds.values()):
            f._fail(f"{f.symbol}: the feed reader process (pid {pid}) died, exit code {code}")
        self._feeds.clear()

    def _close_pipes(self) -> None:
        if self._data is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._data.fileno())
        for c in (self._cmd, self._data):
            if c is not None:
                c.close()
        self._cmd = self._data = None

    async def _release(self, sid: int) -> None:
        """Forget a closed feed; end the child when no feed is left."""
        self._feeds.pop(sid, None)
        proc = self._proc
        if self._feeds or proc is None:
            return
        self._stopping = True
        self._send(("exit",))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self._exited.wait()  # the child closed its pipe: it is exiting
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(1.0)
        self._proc = None
        self._close_pipes()


class ProcessFeed:
    """Book feed of one symbol read by a ``ReaderProcess`` (a ``WebSocketFeed`` there).

    Args:
        reader: The child process that reads it (shared by the daemon's symbols).
        url, symbol: As ``WebSocketFeed``.
        clock: Clock of ``is_stale`` (``WallClock``: the child's receive times are wall time).
        ca_file: PEM bundle the child trusts for ``wss://`` (its ``ssl_context``; an SSL
            context itself cannot cross processes).
        heartbeat_s, stale_after_s: As ``WebSocketFeed`` (they also pass to the child).
        **kwargs: The other ``WebSocketFeed`` options (``fmt``, ``max_hold_ms``, ...), for the
            child's feed; they must be picklable.
    """

    def __init__(
        self,
        reader: ReaderProcess,
        url: str,
        symbol: str,
        *,
        clock: Clock | None = None,
        ca_file: str | None = None,
        heartbeat_s: float = 0.5,
        stale_after_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.symbol = symbol
        self.reader = reader
        self.clock = clock or WallClock()
        self.heartbeat_s = heartbeat_s
        self.stale_after_ns = int(stale_after_s * 1e9)
        self._spec = dict(
            kwargs, url=url, symbol=symbol, ca_file=ca_file, heartbeat_s=heartbeat_s,
            stale_after_s=stale_after_s,
        )  # fmt: skip
        self.stats = LiveStats()
        self.last_update_ns = self.clock.now_ns()
        self._sid: int | None = None
        self._batch: BookBatch | None = None  # received, not yet yielded (one credit)
        self._new = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._stats_event = asyncio.Event()
        self._error: str | None = None
        self._hold: int | None = None
        self._asked = False  # a credit is with the child: it sends the next batch at once
        self._ready = False  # the child said rows wait for the next ask
        self._closed = False

    # -- from the reader process ---------------------------------------------------------------
    def _on_batch(self, batch: BookBatch, counts: tuple[int, int, int, int]) -> None:
        last, self.stats.frames, self.stats.books, self.stats.conflated = counts
        self.last_update_ns = last
        # A second batch before the first is taken (an ask seen twice): keep both, in order.
        self._batch = batch if self._batch is None else BookBatch.concat([self._batch, batch])
        self._asked = self._ready = False
        self._new.set()

    def _on_stats(self, d: dict[str, Any]) -> None:
        self.stats = LiveStats(**d)
        self._stats_event.set()

    def _fail(self, message: str) -> None:
        if self._error is None:
            self._error = message
        self._new.set()
        self._closed_event.set()

    # -- consumer ------------------------------------------------------------------------------
    def is_stale(self, now_ns: int | None = None) -> bool:
        """Return True when the child saw no valid book for ``stale_after_s``."""
        now = self.clock.now_ns() if now_ns is None else now_ns
        return now - self.last_update_ns > self.stale_after_ns

    def idle(self) -> bool:
        """Return True when no batch waits to wake the consumer: none received, none in the
        pipe, and the child has not said that rows wait for the consumer's next ask."""
        if self._batch is None:
            self.reader._drain()
        return self._batch is None and not self._ready and self._error is None

    def hold(self, until_ns: int | None) -> None:
        """As ``WebSocketFeed.hold``: the child's feed holds rows with event time <=
        ``until_ns`` (at most ``max_hold_ms``); sent only when it changes."""
        if until_ns != self._hold and self._sid is not None and not self._closed:
            self._hold = until_ns
            has = until_ns is not None
            self.reader._send_bytes(_HOLD.pack(b"H", has, self._sid, until_ns if has else 0))

    async def refresh_stats(self, timeout_s: float = 5.0) -> LiveStats:
        """Ask the child for its counters now; return ``stats`` once they came (or after
        ``timeout_s``). Commands are handled in order, so a ``hold`` sent before has been
        applied when this returns."""
        if self._sid is not None and not self._closed and self._error is None:
            self._stats_event.clear()
            self.reader._send(("stats", self._sid))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._stats_event.wait()
        return self.stats

    async def updates(self) -> AsyncIterator[BookBatch]:
        """Yield each batch the child sends (an empty one on its heartbeats, or when it has
        sent nothing for a few heartbeats); raise ``FeedError`` if the child fails.

        The child is asked for a batch when the consumer comes back for one, so the rows that
        arrived while it worked come as one batch, as from the loop reader."""
        if self._sid is None and not self._closed:
            self._sid = self.reader._open(self, self._spec)
        want = _WANT.pack(b"W", self._sid or 0)
        empty = BookBatch.empty(self.symbol)
        while not self._closed:
            if self._batch is None and not self._asked and self._error is None:
                self._asked = True
                self.reader._ask(self._sid or 0)
                if self._ready:  # rows wait in the child, which does not look: tell it
                    self._ready = False
                    self.reader._send_bytes(want)
            if self._batch is None and self._error is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(4 * self.heartbeat_s):
                        await self._new.wait()
            self._new.clear()
            if self._error is not None and not self._closed:
                raise FeedError(self._error)
            batch, self._batch = self._batch, None
            if not self._closed:
                yield empty if batch is None else batch

    async def aclose(self) -> None:
        """Close the child's feed (1000, normal closure), take its final counters; the last
        feed closed ends the child process. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._new.set()
        sid = self._sid
        if sid is None:
            return
        if self._error is None:
            self.reader._send(("close", sid))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await self._closed_event.wait()
        await self.reader._release(sid)


# -- the child process -------------------------------------------------------------------------
def _child_main(cmd: Connection, data: Connection, parent_pid: int, asks_fd: int) -> None:
    """Run the feeds the parent opens until it says exit, its pipe closes or it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    _forward_logs(data)
    asks = mmap.mmap(asks_fd, _MAX_FEEDS)
    os.close(asks_fd)
    asyncio.run(_Child(cmd, data, parent_pid, asks).run())


def _forward_logs(data: Connection) -> None:
    """Send every log event to the parent, which logs it in its own stream."""

    def forward(_logger: Any, _method: str, ev: MutableMapping[str, Any]) -> Any:
        level = str(ev.pop("level", "info"))
        event = str(ev.pop("event", ""))
        try:
            payload = pickle.dumps(("log", level, event, dict(ev)))
        except Exception:
            payload = pickle.dumps(("log", level, event, {k: repr(v) for k, v in ev.items()}))
        with contextlib.suppress(OSError):
            data.send_bytes(_PICKLED + payload)
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            forward,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )


class _Pumped:
    """One feed in the child: its ``WebSocketFeed``, the task sending its batches, and the
    state of the parent's asks."""

    __slots__ = ("credit", "feed", "pulling", "task", "told")

    def __init__(self, feed: WebSocketFeed) -> None:
        self.feed = feed
        self.credit = asyncio.Event()  # a ``W`` came: the parent waits for this feed
        self.pulling = False  # the task waits for the feed's next batch
        self.told = False  # the parent was told rows wait (``R``)
        self.task: asyncio.Task[None] | None = None


class _Child:
    def __init__(self, cmd: Connection, data: Connection, parent_pid: int, asks: mmap.mmap) -> None:
        self.cmd, self.data, self.parent_pid, self.asks = cmd, data, parent_pid, asks
        self.feeds: dict[int, _Pumped] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        loop.add_reader(self.cmd.fileno(), self._on_cmd)
        watch = asyncio.create_task(self._watch_parent())
        try:
            await self.done
        finally:
            watch.cancel()
            loop.remove_reader(self.cmd.fileno())
            await asyncio.gather(*(self._close(sid, report=False) for sid in list(self.feeds)))

    async def _watch_parent(self) -> None:
        while True:  # the pipe's EOF is the main signal; this catches an fd kept elsewhere
            await asyncio.sleep(0.5)
            if os.getppid() != self.parent_pid:
                self._stop()

    def _stop(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.data.send_bytes(_PICKLED + pickle.dumps(msg))
        except OSError:
            self._stop()

    def _on_cmd(self) -> None:
        try:
            ready = True  # the loop said so: the first read does not wait
            while ready or self.cmd.poll():
                ready = False
                raw = self.cmd.recv_bytes()
                kind = raw[:1]
                if kind == b"W":
                    p = self.feeds.get(_WANT.unpack(raw)[1])
                    if p is not None:
                        p.credit.set()
                elif kind == b"H":
                    _, has, sid, until = _HOLD.unpack(raw)
                    p = self.feeds.get(sid)
                    if p is not None:
                        p.feed.hold(until if has else None)
                else:
                    self._handle(pickle.loads(raw[1:]))
        except (EOFError, OSError):
            self._stop()  # the parent is gone

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "exit":
            self._stop()
            return
        sid = msg[1]
        if kind == "open":
            spec = dict(msg[2])
            ca_file = spec.pop("ca_file", None)
            url, symbol = spec.pop("url"), spec.pop("symbol")
            if ca_file is not None:
                spec["ssl_context"] = ssl.create_default_context(cafile=ca_file)
            p = _Pumped(WebSocketFeed(url, symbol, **spec))
            ready = _READY.pack(b"R", sid)
            asks = self.asks

            def wake(p: _Pumped = p, ready: bytes = ready) -> None:
                if p.pulling:  # the task takes the rows now
                    return
                if asks[sid]:  # the parent waits (its ask in shared memory): take them now
                    p.credit.set()
                elif not p.told:  # it is busy: say rows wait (its idle()), once
                    p.told = True
                    with contextlib.suppress(OSError):
                        self.data.send_bytes(ready)

            p.feed.on_wake = wake
            p.task = asyncio.create_task(self._pump(sid, p), name=f"pump-{symbol}")
            self.feeds[sid] = p
        elif sid in self.feeds:
            p = self.feeds[sid]
            if kind == "stats":
                self._send(("stats", sid, p.feed.stats.as_dict()))
            elif kind == "close":
                t = asyncio.create_task(self._close(sid))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)

    async def _pump(self, sid: int, p: _Pumped) -> None:
        """Send the feed's batches, one each time the parent asks (its flag in shared
        memory, seen when rows wake it or at each heartbeat; or a ``W`` command)."""
        feed, asks = p.feed, self.asks
        updates = feed.updates()
        try:
            while True:
                if not (p.credit.is_set() or asks[sid]):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(feed.heartbeat_s):
                            await p.credit.wait()
                    if not (p.credit.is_set() or asks[sid]):
                        continue
                p.credit.clear()
                asks[sid] = 0
                p.told, p.pulling = False, True
                try:
                    batch = await anext(updates)
                finally:
                    p.pulling = False
                try:
                    self.data.send_bytes(_pack(sid, batch, feed))
                except OSError:
                    self._stop()
                    return
                if not len(batch):  # a heartbeat: the full counters too
                    self._send(("stats", sid, feed.stats.as_dict()))
        except StopAsyncIteration:
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # FeedError (a dead reader) or our bug: the parent raises it
            msg = str(e) if isinstance(e, FeedError) else f"{feed.symbol}: {e!r}"
            self._send(("error", sid, msg))

    async def _close(self, sid: int, report: bool = True) -> None:
        entry = self.feeds.pop(sid, None)
        if entry is None:
            return
        await entry.feed.aclose()
        if entry.task is not None:
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task
        if report:
            self._send(("closed", sid, entry.feed.stats.as_dict()))


if __name__ == "__main__":  # python -m feeds.procfeed CMD DATA PARENT_PID ASKS (ReaderProcess)
    _cmd, _data, _ppid, _asks = (int(a) for a in sys.argv[1:5])
    _child_main(Connection(_cmd, writable=False), Connection(_data, readable=False), _ppid, _asks)
