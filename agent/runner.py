"""Glue for ``exec-agent run``: config, logging, feeds, daemon; user errors as one line.

The exit code comes from the run summaries (``agent.exitcodes``): 0 completed, 3 a parent
incomplete, 4 halted (kill switch, including a journal that cannot write), 2 a config, data or
path error. Every line printed or logged here passes through ``feeds.redact``.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog

from agent import exitcodes
from agent.config import AgentConfig, load_config, redacted_dump
from agent.control import Control
from agent.daemon import FeedFactory, RunSummary, run
from agent.errors import ConfigError, JournalUnavailable
from agent.impact.book_walk import BeyondDepth, DepthPolicy
from agent.impact.profile import IntradayProfile, learn_profile
from agent.journal import Journal
from agent.logs import configure_logging
from agent.paths import check_state_paths
from feeds.base import BookFeed
from feeds.clock import WallClock
from feeds.errors import FeedDataError
from feeds.live import WebSocketFeed
from feeds.model import BookBatch
from feeds.procfeed import ReaderProcess
from feeds.readers import read_mbp10
from feeds.redact import redact_text
from feeds.replay import ReplayFeed
from feeds.validate import validate_batch

__all__ = [
    "build_history_trades",
    "build_profiles",
    "find_error",
    "make_feed_factory",
    "run_from_config",
]

_E = TypeVar("_E", bound=BaseException)
_SWITCH_S = 0.0005  # the GIL switch interval of a daemon with a journal (see _run)


def make_feed_factory(cfg: AgentConfig) -> FeedFactory:
    """Return a function opening the configured feed of a symbol."""
    f = cfg.feed
    if f.kind == "websocket":
        opts: dict[str, Any] = {
            "stale_after_s": f.stale_after_s,
            "heartbeat_s": f.heartbeat_s,
            "reconnect_max_s": f.reconnect_max_s,
            "max_size": f.max_message_bytes,
            "max_buffered_rows": f.max_buffered_rows,
            "max_hold_ms": f.max_hold_ms,
            "conflate_after_ms": f.conflate_after_ms,
            "fmt": f.format,
            "futures": f.futures,
            # Event times are real time: check them against the wall clock (60 s unless set).
            "max_clock_skew_s": (
                f.max_clock_skew_s if f.max_clock_skew_s is not None or not f.wall_clock else 60.0
            ),
        }
        if f.reader == "process":
            # One child process reads every symbol's websocket (a second core for reading).
            reader = ReaderProcess()
            ca = str(f.ca_file) if f.ca_file is not None else None

            def proc_factory(symbol: str) -> BookFeed:
                return reader.feed(f.urls[symbol], symbol, ca_file=ca, **opts)

            return proc_factory
        tls = ssl.create_default_context(cafile=f.ca_file) if f.ca_file is not None else None

        def ws_factory(symbol: str) -> BookFeed:
            return WebSocketFeed(f.urls[symbol], symbol, ssl_context=tls, **opts)

        return ws_factory
    speed = f.speed if f.speed > 0 else None
    clock = WallClock() if speed is not None else None

    def factory(symbol: str) -> BookFeed:
        return ReplayFeed(
            f.files[symbol], symbol, speed=speed, clock=clock, chunk_rows=f.chunk_rows
        )

    return factory


def build_profiles(cfg: AgentConfig) -> dict[tuple[str, str], IntradayProfile]:
    """Learn the intraday profile of each (symbol, side) traded from ``[estimation].history``.

    History files are read and validated like the replay (bad snapshots skipped). Empty when no
    history is configured, which makes every forecast flat.
    """
    est = cfg.estimation
    if not est.history:
        return {}
    max_size = est.max_size or max(
        max(10 * o.lot, 3 * o.quantity * o.period_s / (o.end_ns - o.start_ns) * 1e9)
        for o in cfg.orders
    )
    sizes = np.linspace(max_size / est.n_sizes, max_size, est.n_sizes)
    policy = DepthPolicy(BeyondDepth(est.beyond_depth), est.penalty_bps)
    wanted = {(o.symbol, o.side.value) for o in cfg.orders}
    out: dict[tuple[str, str], IntradayProfile] = {}
    for symbol in sorted({s for s, _ in wanted}):
        batches = list(_valid_batches(est.history, symbol))
        for side in ("buy", "sell"):
            if (symbol, side) in wanted:
                out[(symbol, side)] = learn_profile(
                    batches, side, sizes, bucket_s=est.profile_bucket_s, policy=policy
                )
    return out


def build_history_trades(cfg: AgentConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return per symbol the trades ``(ts_ns, qty)`` of the ``[estimation].history`` days.

    Only ``strategy.kind = "vwap"`` needs them (its volume profile); empty otherwise.
    """
    if cfg.strategy.kind != "vwap" or not cfg.estimation.history:
        return {}
    from agent.backtest.data import load_history

    paths = tuple(str(p) for p in cfg.estimation.history)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symbol in sorted({o.symbol for o in cfg.orders}):
        tr = load_history(paths, symbol)[1]
        out[symbol] = (tr.ts_ns, tr.qty)
    return out


def _valid_batches(paths: list[Path], symbol: str) -> Iterator[BookBatch]:
    for p in paths:
        prev: int | None = None
        for batch in read_mbp10(p, symbol=symbol):
            res = validate_batch(batch, prev)
            prev = res.last_ts_ns
            if len(res.valid):
                yield res.valid


async def _run(
    cfg: AgentConfig,
    profiles: dict[tuple[str, str], IntradayProfile],
    resume: bool = False,
    history_trades: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[list[RunSummary], bool, str]:
    """Run the daemon; return the summaries, whether the kill switch was engaged at the end,
    and why."""
    broker = None
    if cfg.broker.kind == "fix":
        from agent.brokers.fix import FixBroker

        broker = FixBroker.from_config(cfg.broker)
        await broker.start()
    try:
        journal = Journal(cfg.journal.path) if cfg.journal.path is not None else None
    except JournalUnavailable as e:  # not a journal (or unreadable): nothing started yet
        raise ConfigError(f"journal.path: {e}") from e
    control = Control(journal)
    if journal is not None:
        # A journal that cannot write engages the kill switch: nothing more is sent.
        journal.on_fault = lambda e: control.halt(f"journal unavailable: {e}")
        # The journal's writer thread hands the GIL back and forth with the loop at every
        # commit; a busy loop keeps it for up to the switch interval (5 ms by default) each
        # time, which an intent waits for. 0.5 ms: that wait is 10x shorter, for a few more
        # switches when both threads run Python (bench/bench_journal.py --switch-ms).
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_S))
    if resume and not control.resume("exec-agent run --resume"):
        structlog.get_logger().info("daemon.resume_not_needed")
    loop = asyncio.get_running_loop()
    # SIGTERM / SIGINT: graceful stop; SIGUSR1: the kill switch.
    loop.add_signal_handler(signal.SIGTERM, control.request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, control.request_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGUSR1, control.halt, "SIGUSR1")
    metrics = None
    if cfg.control.metrics_port is not None:
        from agent.metrics import Metrics

        metrics = Metrics.serve(cfg.control.metrics_addr, cfg.control.metrics_port)
        # The port actually bound (metrics_port = 0 picks a free one): say which.
        structlog.get_logger().info(
            "daemon.metrics_serving", addr=cfg.control.metrics_addr, port=metrics.port
        )
    try:
        summaries = await run(
            cfg,
            make_feed_factory(cfg),
            broker=broker,
            profiles=profiles,
            journal=journal,
            control=control,
            metrics=metrics,
            history_trades=history_trades,
            freeze_gc=True,
        )
        return summaries, control.halted, control.reason
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        if metrics is not None:
            metrics.close()
        if journal is not None:
            journal.close()


def run_from_config(
    path: str | Path,
    *,
    log_format: str | None = None,
    log_level: str | None = None,
    resume: bool = False,
) -> int:
    """Load the config, run the daemon, return the process exit code."""
    try:
        cfg, sha = load_config(path)
        check_state_paths(cfg)
    except ConfigError as e:
        print(f"exec-agent: config error: {redact_text(str(e))}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    configure_logging(log_format or cfg.logging.format, log_level or cfg.logging.level)
    log = structlog.get_logger()
    log.info("daemon.config_loaded", path=str(path), sha256=sha, config=redacted_dump(cfg))
    try:
        profiles = build_profiles(cfg)
        trades = build_history_trades(cfg)
        summaries, halted, halt_reason = asyncio.run(_run(cfg, profiles, resume, trades))
    except ConfigError as e:  # a state path refused when opened (e.g. replaced since the check)
        print(f"exec-agent: config error: {redact_text(str(e))}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    except FeedDataError as e:
        log.error("daemon.data_error", error=str(e))
        print(f"exec-agent: data error: {e}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    except TimeoutError:
        b = cfg.broker
        log.error("daemon.broker_unavailable", host=b.host, port=b.port)
        print(
            f"exec-agent: broker at {b.host}:{b.port} did not accept a FIX logon", file=sys.stderr
        )
        return exitcodes.CONFIG_ERROR
    except OSError as e:  # e.g. the control socket is taken by another daemon
        log.error("daemon.os_error", error=str(e))
        print(f"exec-agent: {redact_text(str(e))}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    except Exception as e:
        ju = find_error(e, JournalUnavailable)
        if ju is not None:
            log.error("daemon.journal_unavailable", error=str(ju))
            print(f"exec-agent: halted: {redact_text(str(ju))}", file=sys.stderr)
            return exitcodes.HALTED
        # A bug: the traceback goes to the log (redacted there), one redacted line to stderr,
        # so no URL credential in an exception message reaches the terminal raw.
        log.exception("daemon.crashed")
        print(
            f"exec-agent: unexpected error: {redact_text(f'{type(e).__name__}: {e}')} "
            "(traceback in the log: daemon.crashed)",
            file=sys.stderr,
        )
        return exitcodes.FAILED
    code = exitcodes.exit_code([s.status for s in summaries], halted=halted)
    if halted:  # one line a scheduler (or a person) can read: why it stopped trading
        print(f"exec-agent: halted: {redact_text(halt_reason or 'kill switch')}", file=sys.stderr)
    log.log(
        20 if code == exitcodes.COMPLETED else 40,
        "daemon.stopped",
        n_orders=len(summaries),
        completed=sum(s.status == "completed" for s in summaries),
        halted=halted,
        exit_code=code,
    )
    sys.stdout.flush()
    return code


def find_error(exc: BaseException, cls: type[_E]) -> _E | None:
    """Return the first ``cls`` in ``exc``, its exception groups or its causes (None if none)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, cls):
            return e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    return None
