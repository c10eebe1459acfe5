"""Benchmark: the real daemon on loopback, from a book's frame to the child handed to the broker.

A feed process (this file with ``--serve``, the loopback equivalent of ``exec-agent serve-feed``:
the same JSON MBP-10 messages, one websocket server per symbol) sends books of 4 symbols at a fixed
aggregate rate (1k, 10k, 40k messages a second) and records the wall time at which it hands every
frame to the socket. It wakes every 0.5 ms and writes the frames then due to each connection in one
write (``_flush``): each is still its own websocket message, as a real feed's bursts are, without a
system call per frame on the cores the daemon uses. The daemon itself (``python -m agent run
--config ...``, a subprocess, simulated broker, one parent per symbol, JSON logs) trades them.
Event times are rewritten to a fixed spacing per symbol, so the book that triggers a decision at
event time ``t`` is known: the symbol's first book with ``ts_event > t`` (the daemon decides once a
later book proves the instant complete).

Latency, per MPC child: the daemon's own ``order.submitted`` fields, ``submitted_ns``
(``time.time_ns()`` just before ``broker.submit``) minus ``trigger_recv_ns`` (the receive time,
on the reader's wall clock, of the book whose arrival proved the decision's instant: receipt to
child). A line without them (a decision the wall clock made due, or an older daemon) falls back
to the send time of the triggering frame, which adds the loopback transit (``latency_of``).

With ``--broker fix`` the daemon sends its children as FIX 4.4 NewOrderSingle (``broker.kind =
"fix"``, with the journal and sequence store that kind requires, in the run's folder) to our
own venue, ``exec-agent serve-venue`` (a subprocess, as in production). Latency then ends when
the NewOrderSingle is written to the socket: the adapter's ``broker.order_sent`` line carries
``written_ns`` (``time.time_ns()`` right after the transport write), matched by ClOrdID to its
child's ``order.submitted`` line and so to the triggering frame. The venue is given the very
books the feed sends (the same rows with the same re-spaced event times, one CSV per symbol in
the run's folder), so it fills the children on the book the daemon saw, ``latency_ms`` after
the decision, as the simulated broker does. Its CPU is not counted (it is the counterparty).

Books: sent by the feed process, received by the daemon (``feed.closed``: frames), conflated by
its reader (replaced before the daemon took them), processed (taken), dropped (sent, never
received or invalid), each as a share of the books sent while the daemon was reading (up to
the last book its reader accepted, ``feed.closed``'s ``last_ts_event_ns``: TCP delivers in
order, and the frames still in flight when the daemon closed its feeds are not drops). CPU: the
daemon's user + system time (``wait4``) from the first book sent to its exit, per message
received. When the reader conflates, the book that should have triggered a decision may be
replaced: latency is still counted from that book (the market event), not from a later one.

Run: ``python bench/bench_live.py [--seconds 10] [--decisions-per-s 10] [--rates 1000,10000,40000]
[--repeats 1] [--reader loop|process] [--broker simulated|fix] [--lead-ms 0] [--feed-nice 0]``
(bounded: every run is stopped at ``seconds + 60`` of wall time). ``--reader`` is the daemon's
``feed.reader``; with ``process`` the CPU counts the reader process too. ``--broker``: see above
(default simulated). ``--lead-ms``: ``strategy.decision_lead_ms`` in wall ms (each period decided
that long before it starts, its child sent with the period's first book, whose frame the latency is
then counted from). ``--feed-nice N`` runs the feed process at niceness N: in production the feed
comes from another machine, and a positive N lets the daemon and its reader have a core first when
the three want both (the default, 0, is the same priority for all).
``BENCH_LIVE_KEEP=1`` keeps each run's folder (config, daemon log); ``BENCH_LIVE_PROFILE=1`` runs
the daemon under cProfile (``daemon.prof`` in that folder)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (pins BLAS threads before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DAYS = [
    REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz",
    REPO / "replay_data" / "SYNB_2025-06-02.mbp-10.csv.gz",
    REPO / "replay_data" / "history" / "SYNA_2025-05-30.mbp-10.csv.gz",
    REPO / "replay_data" / "history" / "SYNB_2025-05-30.mbp-10.csv.gz",
]
SYMBOLS = ["S0", "S1", "S2", "S3"]
T0_NS = 1_748_871_000_000_000_000  # 2025-06-02T13:30:00Z: event time of every symbol's book 0
DT_EVENT_NS = 50_000_000  # 20 books an event second per symbol
TEMPLATE_ROWS = 20_000  # distinct books per symbol; the feed cycles through them
WARMUP_WALL_S = 0.5  # the parents start after this much feed (wall seconds' worth)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GRACE_S = 5.0  # wall seconds the daemon may lag the feed's end before it is stopped
KEEP = bool(os.environ.get("BENCH_LIVE_KEEP"))  # keep the run's folder (config, logs)
PROFILE = bool(os.environ.get("BENCH_LIVE_PROFILE"))  # the daemon under cProfile (daemon.prof)


# -- the feed process --------------------------------------------------------------------------
def _templates(n_books: int) -> list[list[tuple[bytes, bytes]]]:
    """Per symbol, ``n_books`` frames split around the event time (filled in when sent)."""
    from feeds.jsonmsg import Mbp10Message, _px_list
    from feeds.readers import read_mbp10

    out = []
    mark = 1_111_111_111_111_111_111
    for sym, path in zip(SYMBOLS, DAYS, strict=True):
        rows = []
        for b in read_mbp10(path):
            for i in range(len(b)):
                m = Mbp10Message(
                    symbol=sym,
                    ts_event=mark,
                    bid_px=_px_list(b.bid_px[i]),
                    bid_sz=b.bid_sz[i].tolist(),
                    ask_px=_px_list(b.ask_px[i]),
                    ask_sz=b.ask_sz[i].tolist(),
                )
                head, tail = json.dumps(_to_dict(m)).encode().split(str(mark).encode())
                rows.append((head, tail))
                if len(rows) >= n_books:
                    break
            if len(rows) >= n_books:
                break
        out.append(rows)
    return out


def _to_dict(m: object) -> dict:
    import msgspec

    return msgspec.to_builtins(m)


def _flush(ws: Any) -> None:
    """Write what a connection's protocol has framed as one transport write: the frames due in
    one tick leave in one TCP send, as a real feed's bursts do, instead of a system call per
    frame (``broadcast``). Every frame is still its own websocket message; the feed process
    is the exchange's stand-in and its CPU is not the daemon's."""
    chunks = ws.protocol.data_to_send()
    if not chunks:
        return
    if all(chunks):
        ws.transport.write(b"".join(chunks))
        return
    for c in chunks:  # an end of stream (b""): the library's own path
        if c:
            ws.transport.write(c)
        elif ws.transport.can_write_eof():
            ws.transport.write_eof()


async def _serve(rate: float, seconds: float, out: Path) -> None:
    from websockets.asyncio.server import serve
    from websockets.protocol import OPEN

    per_sym = int(rate * seconds / len(SYMBOLS)) + 1
    tmpl = _templates(min(per_sym, TEMPLATE_ROWS))
    clients: list[set] = [set() for _ in SYMBOLS]
    ready = asyncio.Event()
    gone = asyncio.Event()

    def handler_for(k: int):
        async def handler(ws) -> None:
            clients[k].add(ws)
            if all(clients):
                ready.set()
            try:
                await ws.wait_closed()
            finally:
                clients[k].discard(ws)
                if not any(clients):
                    gone.set()

        return handler

    servers = [await serve(handler_for(k), "127.0.0.1", 0) for k in range(len(SYMBOLS))]
    ports = [next(iter(s.sockets)).getsockname()[1] for s in servers]
    print(json.dumps({"urls": [f"ws://127.0.0.1:{p}" for p in ports]}), flush=True)
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(0.5)  # every client subscribed
    sent_ns = np.zeros((len(SYMBOLS), per_sym), dtype=np.int64)
    n_total = per_sym * len(SYMBOLS)
    gap = 1.0 / rate
    out.with_suffix(".started").touch()  # the bench samples the daemon's CPU time here
    t_start = time.perf_counter()
    i = 0
    while i < n_total:
        due = int((time.perf_counter() - t_start) / gap) + 1
        while i < min(due, n_total):  # everything due by now, round-robin over the symbols
            k, j = i % len(SYMBOLS), i // len(SYMBOLS)
            head, tail = tmpl[k][j % len(tmpl[k])]
            ts = T0_NS + j * DT_EVENT_NS
            frame = head + str(ts).encode() + tail
            sent_ns[k, j] = time.time_ns()
            for ws in clients[k]:
                if ws.protocol.state is OPEN:
                    ws.protocol.send_binary(frame)  # framed now, written below
            i += 1
        for conns in clients:
            for ws in conns:
                _flush(ws)
        await asyncio.sleep(0.0005 if i < n_total else 0)
    elapsed = time.perf_counter() - t_start
    np.save(out, sent_ns)
    out.with_suffix(".json").write_text(json.dumps({"sent": n_total, "elapsed_s": elapsed}))
    if any(clients):  # the daemon leaves once its parents are done
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), 60)
    for s in servers:
        s.close()


# -- the daemon ----------------------------------------------------------------------------------
def _iso(ns: int) -> str:
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")


def _config(
    urls: list[str],
    rate: float,
    seconds: float,
    decisions_per_s: float,
    reader: str = "loop",
    fix_port: int | None = None,
    lead_ms: float = 0.0,
) -> str:
    """The daemon's TOML: simulated broker, or with ``fix_port`` FIX to that loopback port
    (journal and sequence store next to the config); ``lead_ms`` (wall ms) is the decision
    lead, ``strategy.decision_lead_ms`` in event time."""
    speed = rate / len(SYMBOLS) * DT_EVENT_NS / 1e9  # event seconds per wall second
    period_s = speed / decisions_per_s
    start = T0_NS + int(speed * WARMUP_WALL_S * 1e9)
    end = T0_NS + int(speed * (seconds - 1.0) * 1e9)  # before the feed stops: parents finish
    n_periods = int((end - start) / 1e9 / period_s)
    end = start + int(n_periods * period_s * 1e9)
    lines = [
        "[logging]",
        'format = "json"',
        'level = "info"',
        "[feed]",
        'kind = "websocket"',
        f'reader = "{reader}"',
        "urls = { " + ", ".join(f'{s} = "{u}"' for s, u in zip(SYMBOLS, urls, strict=True)) + " }",
        "stale_after_s = 30.0",
        "heartbeat_s = 1.0",
        # Event times are a recorded day's, re-spaced: event time alone drives the decisions.
        "wall_clock = false",
        *_broker_lines(fix_port),
        "[strategy]",
        'model = "quadratic"',
        *([f"decision_lead_ms = {lead_ms * speed:.3f}"] if lead_ms else []),
    ]
    for k, sym in enumerate(SYMBOLS):
        lines += [
            "[[orders]]",
            f'id = "P{k}"',
            f'symbol = "{sym}"',
            f'side = "{"buy" if k % 2 == 0 else "sell"}"',
            f"quantity = {200 * n_periods}",
            f"start = {_iso(start)}",
            f"end = {_iso(end)}",
            f"period_s = {period_s:.6f}",
            "lot = 100",
        ]
    return "\n".join(lines) + "\n"


def _broker_lines(fix_port: int | None) -> list[str]:
    if fix_port is None:
        return ["[broker]", 'kind = "simulated"', "latency_ms = 5", "collar_bps = 100"]
    return [
        "[broker]",
        'kind = "fix"',
        'host = "127.0.0.1"',
        f"port = {fix_port}",
        "latency_ms = 5",  # the venue executes at TransactTime + 5 ms, as the simulated broker
        "collar_bps = 100",
        'store_path = "fix-seq.json"',
        "[journal]",
        'path = "journal.sqlite"',
    ]


# -- the venue (--broker fix) --------------------------------------------------------------------
def _venue_files(d: Path, rate: float, seconds: float) -> dict[str, Path]:
    """Write, per symbol, the books the feed will send (same rows, same event times) as a
    Databento MBP-10 CSV the venue matches against; return symbol -> file."""
    import pandas as pd

    per_sym = int(rate * seconds / len(SYMBOLS)) + 1
    out = {}
    for sym, path in zip(SYMBOLS, DAYS, strict=True):
        df = pd.read_csv(path, nrows=min(per_sym, TEMPLATE_ROWS))  # the feed's templates
        j = np.arange(per_sym)
        rows = df.iloc[j % len(df)].reset_index(drop=True)
        ts = pd.to_datetime(T0_NS + j * DT_EVENT_NS, utc=True)
        rows["ts_event"] = ts
        if "ts_recv" in rows:
            rows["ts_recv"] = ts
        rows["symbol"] = sym
        out[sym] = d / f"venue-{sym}.mbp-10.csv"
        rows.to_csv(out[sym], index=False)
    return out


def _venue_config(files: dict[str, Path]) -> str:
    """The TOML ``exec-agent serve-venue`` reads: the books to match, latency, CompIDs."""
    books = ", ".join(f'{s} = "{p.as_posix()}"' for s, p in files.items())
    lines = [
        "[feed]",
        "files = { " + books + " }",
        *_broker_lines(9878),  # the port is given on the command line (--port 0)
        # Not traded (the venue only reads [feed] and [broker]); a config needs a parent.
        "[[orders]]",
        'id = "V"',
        f'symbol = "{SYMBOLS[0]}"',
        'side = "buy"',
        "quantity = 100",
        f"start = {_iso(T0_NS)}",
        f"end = {_iso(T0_NS + 60 * 10**9)}",
        "period_s = 60",
    ]
    return "\n".join(lines) + "\n"


def _start_venue(
    d: Path, files: dict[str, Path], env: dict[str, str]
) -> tuple[subprocess.Popen, int]:
    """Start ``exec-agent serve-venue`` on a free port; return it and the port."""
    cfg = d / "venue.toml"
    cfg.write_text(_venue_config(files))
    cmd = [sys.executable, "-m", "agent", "serve-venue", "--config", str(cfg), "--port", "0"]
    cmd += ["--er-log", str(d / "venue-executions.jsonl"), "--state-dir", str(d / "venue")]
    with (d / "venue.log").open("w") as err:
        venue = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)
    line = venue.stdout.readline().decode().strip()  # fix://127.0.0.1:PORT once listening
    if not line.startswith("fix://"):
        venue.kill()  # a no-op once it has exited (config error, port in use)
        venue.wait(10)
        tail = (d / "venue.log").read_text().splitlines()[-5:]
        raise SystemExit(f"serve-venue did not start ({venue.returncode}):\n" + "\n".join(tail))
    return venue, int(line.rsplit(":", 1)[1])


def _cpu_s(pid: int) -> float | None:
    """Return a process's user + system CPU seconds so far (Linux ``/proc``), or None."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float | None:
    """Return ``_cpu_s`` of a process plus its running children's (the feed reader process of
    ``feed.reader = "process"``: ``wait4`` counts the children it reaped)."""
    own = _cpu_s(pid)
    if own is None:
        return None
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return own + sum(c for k in kids if (c := _cpu_s(int(k))) is not None)


def _log_ns(ts: str) -> int:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def latency_of(
    ev: dict, sent_ns: np.ndarray, written_ns: dict[str, int] | None = None
) -> float | None:
    """Return receipt (or send) to child handed to the broker, in seconds, for one child's
    ``order.submitted`` line; with ``written_ns`` (ClOrdID -> ``broker.order_sent``'s
    ``written_ns``), to its NewOrderSingle written to the FIX socket (None: never written)."""
    if written_ns is not None:
        end = written_ns.get(ev["client_order_id"])
        if end is None:
            return None
        start = ev.get("trigger_recv_ns")
        if start is None:
            start = _frame_ns(ev, sent_ns)
        return None if start is None else (end - int(start)) / 1e9
    if "trigger_recv_ns" in ev and "submitted_ns" in ev:  # once the daemon logs them
        return (int(ev["submitted_ns"]) - int(ev["trigger_recv_ns"])) / 1e9
    start = _frame_ns(ev, sent_ns)
    return None if start is None else (_log_ns(ev["timestamp"]) - start) / 1e9


def _frame_ns(ev: dict, sent_ns: np.ndarray) -> int | None:
    """Return the send time of the frame that triggered a child's decision (None: not sent)."""
    k = SYMBOLS.index(ev["symbol"])
    j = (int(ev["ts_ns"]) - T0_NS) // DT_EVENT_NS + 1  # first book after the decision time
    if not 0 <= j < sent_ns.shape[1] or sent_ns[k, j] == 0:
        return None
    return int(sent_ns[k, j])


def _sent_while_read(closed: dict, sent_ns: np.ndarray) -> int:
    """Return the books of one symbol sent while the daemon read it (see ``run_rate``)."""
    row = sent_ns[SYMBOLS.index(closed["symbol"])]
    last = closed.get("last_ts_event_ns")
    if last is not None:
        j = (int(last) - T0_NS) // DT_EVENT_NS  # the last book's index: its event time
        return int(np.count_nonzero(row[: j + 1] > 0))
    return int(np.count_nonzero((row > 0) & (row <= _log_ns(closed["timestamp"]))))


def written_of(events: list[dict]) -> dict[str, int]:
    """Return ClOrdID -> wall time its NewOrderSingle was written (``broker.order_sent``)."""
    return {
        e["client_order_id"]: int(e["written_ns"])
        for e in events
        if e.get("event") == "broker.order_sent" and e.get("written_ns") is not None
    }


def run_rate(
    rate: float,
    seconds: float,
    decisions_per_s: float,
    reader: str = "loop",
    broker: str = "simulated",
    lead_ms: float = 0.0,
    feed_nice: int = 0,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_live_") as tmp:
        d = Path(tempfile.mkdtemp(prefix="bench_live_keep_")) if KEEP else Path(tmp)
        out = d / "sent.npy"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        venue, fix_port = None, None
        if broker == "fix":  # listening (its books loaded) before the feed waits for clients
            venue, fix_port = _start_venue(d, _venue_files(d, rate, seconds), env)
        serve_cmd = [sys.executable, __file__, "--serve", "--rate", str(rate)]
        serve_cmd += ["--seconds", str(seconds), "--out", str(out)]
        srv = subprocess.Popen(
            serve_cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=Path(__file__).parent,
            preexec_fn=(lambda: os.nice(feed_nice)) if feed_nice else None,
        )
        daemon = None
        try:
            urls = json.loads(srv.stdout.readline())["urls"]
            cfg = d / "live.toml"
            cfg.write_text(_config(urls, rate, seconds, decisions_per_s, reader, fix_port, lead_ms))
            log = (d / "daemon.log").open("w")
            prof = ["-m", "cProfile", "-o", str(d / "daemon.prof")] if PROFILE else []
            daemon = subprocess.Popen(
                [sys.executable, *prof, "-m", "agent", "run", "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
            deadline = time.monotonic() + seconds + 60
            status, usage, cpu0, stop_at, stopped = 0, None, None, None, ""
            while True:
                if cpu0 is None and out.with_suffix(".started").exists():
                    cpu0 = _tree_cpu_s(daemon.pid)  # start-up (imports, config) left out
                if stop_at is None and out.with_suffix(".json").exists():
                    stop_at = time.monotonic() + GRACE_S  # the feed has sent everything
                pid, status, usage = os.wait4(daemon.pid, os.WNOHANG)
                if pid:
                    daemon.returncode = os.waitstatus_to_exitcode(status)
                    break
                now = time.monotonic()
                if not stopped and ((stop_at is not None and now > stop_at) or now > deadline):
                    # Still behind the feed: stop it as an operator would (SIGTERM: children
                    # cancelled, feed stats logged); what it decided so far is measured.
                    daemon.send_signal(signal.SIGTERM)
                    stopped, deadline = "stopped", now + 15
                elif stopped and now > deadline:
                    daemon.kill()
                    stopped = "killed"
                time.sleep(0.02)
            log.close()
            # 3: some parent ended incomplete (it fell behind its schedule): a measured outcome.
            if daemon.returncode not in (0, 3) and not stopped:
                tail = (d / "daemon.log").read_text().splitlines()[-5:]
                raise SystemExit(f"daemon exited {daemon.returncode}:\n" + "\n".join(tail))
            srv.wait(30)
            sent_ns = np.load(out)
            info = json.loads(out.with_suffix(".json").read_text())
            events = []
            for line in (d / "daemon.log").read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            filled = set()
            if venue is not None:
                venue.terminate()  # the daemon has logged out
                venue.wait(10)
                er = d / "venue-executions.jsonl"
                for line in er.read_text().splitlines() if er.exists() else []:
                    r = json.loads(line)
                    if r.get("exec_type") == "F":
                        filled.add(r["client_order_id"])
        finally:
            for p in (daemon, srv, venue):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(10)
    written = written_of(events) if broker == "fix" else None
    children = [
        e for e in events if e.get("event") == "order.submitted" and e.get("strategy") == "mpc"
    ]
    lat = [v for e in children if (v := latency_of(e, sent_ns, written)) is not None]
    closed = [e for e in events if e.get("event") == "feed.closed"]
    # Books sent while the daemon was still reading (it leaves once its parents are done): up
    # to the last book its reader accepted (TCP delivers in order, so every book sent before it
    # was received or lost on the way); the frames still in flight when it closed are not
    # drops. Without that field, the books sent before its feed.closed line.
    sent = sum(_sent_while_read(e, sent_ns) for e in closed)
    frames = sum(int(e.get("frames", 0)) for e in closed)
    books = sum(int(e.get("books", 0)) for e in closed)
    conflated = sum(int(e.get("conflated", 0)) for e in closed)
    invalid = sum(sum(e.get("invalid", {}).values()) for e in closed)
    cpu = usage.ru_utime + usage.ru_stime - (cpu0 or 0.0) if usage is not None else math.nan
    a = np.array(lat) if lat else np.array([np.nan])
    sent = max(sent, 1)
    fix = {}
    if written is not None:
        # The adapter's share: order.submitted logged (microseconds) -> NewOrderSingle written.
        adapter = [
            (written[e["client_order_id"]] - _log_ns(e["timestamp"])) / 1e9
            for e in children
            if e["client_order_id"] in written
        ]
        b = np.array(adapter) if adapter else np.array([np.nan])
        fix = {
            "submitted": len(children),
            "unwritten": sum(1 for e in children if e["client_order_id"] not in written),
            "filled": sum(1 for e in children if e["client_order_id"] in filled),
            "adapter_p50": float(np.percentile(b, 50)),
            "adapter_p99": float(np.percentile(b, 99)),
        }
    return fix | {
        "rate": int(info["sent"]) / info["elapsed_s"],
        "children": len(lat),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "p999": float(np.percentile(a, 99.9)),
        "max": float(np.max(a)),
        "sent": sent,
        "processed": (books - conflated) / sent,
        "conflated": conflated / sent,
        "dropped": (sent - frames + invalid) / sent,
        "cpu_us": cpu / max(frames, 1) * 1e6,
        "exit": stopped or str(daemon.returncode),
        "decisions": sum(1 for e in events if e.get("event") == "mpc.step"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="wall seconds of feed per rate")
    ap.add_argument("--decisions-per-s", type=float, default=10.0, help="per parent")
    ap.add_argument("--rates", default="1000,10000,40000", help="aggregate msg/s, comma list")
    ap.add_argument("--repeats", type=int, default=1, help="runs per rate (medians printed)")
    ap.add_argument(
        "--reader",
        choices=("loop", "process"),
        default="loop",
        help='the daemon\'s [feed] reader: "loop" (in its event loop) or "process" (a child)',
    )
    ap.add_argument(
        "--broker",
        choices=("simulated", "fix"),
        default="simulated",
        help='"simulated": to the child handed to the broker; "fix": to the NewOrderSingle '
        "written to the socket of a FIX session with exec-agent serve-venue",
    )
    ap.add_argument(
        "--lead-ms",
        type=float,
        default=0.0,
        help="strategy.decision_lead_ms, in wall ms (the bench's event time runs faster): each "
        "period decided this long before it starts, its child sent at the start; 0: off",
    )
    ap.add_argument(
        "--feed-nice",
        type=int,
        default=0,
        help="niceness of the feed process (the exchange's stand-in, on another machine in "
        "production): >0 lets the daemon and its reader run first when both want a core; 0: "
        "the same priority as the daemon",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=1000.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.rate, args.seconds, args.out))
        return
    if args.broker == "fix":
        print(
            f"4 symbols, 4 parents, FIX broker (exec-agent serve-venue), {args.seconds:g} s of "
            f"feed per rate, {args.decisions_per_s:g} decisions/s per parent, reader = "
            f"{args.reader}; latency = book received (the daemon's trigger_recv_ns) -> "
            "NewOrderSingle written to the FIX socket (broker.order_sent's written_ns)"
        )
    else:
        print(
            f"4 symbols, 4 parents, simulated broker, {args.seconds:g} s of feed per rate, "
            f"{args.decisions_per_s:g} decisions/s per parent, reader = {args.reader}; "
            "latency = book received -> child handed to the broker (the daemon's "
            "order.submitted: submitted_ns - trigger_recv_ns)"
        )
    if args.lead_ms:
        print(
            f"decision lead: {args.lead_ms:g} wall ms before each period (its child at the start)"
        )
    if args.feed_nice:
        print(f"feed process at nice {args.feed_nice} (the daemon and its reader at 0)")
    print(
        f"{'target/s':>8} {'sent/s':>7} {'children':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99.9 ms':>8} {'max ms':>7} {'processed':>9} {'conflated':>9} {'dropped':>7} "
        f"{'CPU us/msg':>10} {'load':>5} {'exit':>7}"
    )
    for rate in (float(r) for r in args.rates.split(",")):
        runs = []
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            r1 = run_rate(
                rate,
                args.seconds,
                args.decisions_per_s,
                args.reader,
                args.broker,
                args.lead_ms,
                args.feed_nice,
            )
            runs.append(r1 | {"load": load})
        r = {k: statistics.median(x[k] for x in runs) for k in runs[0] if k != "exit"}
        r["exit"] = ",".join(str(x["exit"]) for x in runs)
        print(
            f"{rate:>8.0f} {r['rate']:>7.0f} {r['children']:>8.0f} {r['p50'] * 1e3:>7.2f} "
            f"{r['p99'] * 1e3:>7.2f} {r['p999'] * 1e3:>8.2f} {r['max'] * 1e3:>7.2f} "
            f"{r['processed']:>9.1%} {r['conflated']:>9.1%} {r['dropped']:>7.1%} "
            f"{r['cpu_us']:>10.1f} {r['load']:>5.1f} {r['exit']:>7}"
        )
        if args.broker == "fix":
            print(
                f"{'':>8} order.submitted -> NewOrderSingle written: p50 "
                f"{r['adapter_p50'] * 1e3:.2f} ms, p99 {r['adapter_p99'] * 1e3:.2f} ms; "
                f"children without one: {r['unwritten']:.0f}; filled at the venue: "
                f"{r['filled']:.0f} of {r['submitted']:.0f}",
                flush=True,
            )
        if len(runs) > 1:
            p99s = ", ".join(f"{x['p99'] * 1e3:.2f}" for x in runs)
            print(f"{'':>8} runs' p99 ms: {p99s}", flush=True)
    print(
        "processed/conflated/dropped: shares of the books sent while the daemon read. p99.9 and "
        "max of a few hundred children are the largest samples. load: the 1-minute load average "
        "when the run started (2 cores, shared). exit 'stopped': the daemon was still behind "
        f"{GRACE_S:g} s after the feed ended and got SIGTERM; 3: a parent ended incomplete. "
        "With --repeats, every column is the median of the runs."
    )


if __name__ == "__main__":
    main()
