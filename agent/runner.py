"""Glue for ``exec-agent run``: config, logging, feeds, daemon; user errors as one line."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import structlog

from agent.config import AgentConfig, load_config
from agent.control import Control
from agent.daemon import FeedFactory, RunSummary, run
from agent.errors import ConfigError
from agent.impact.book_walk import BeyondDepth, DepthPolicy
from agent.impact.profile import IntradayProfile, learn_profile
from agent.journal import Journal
from agent.logs import configure_logging
from feeds.base import BookFeed
from feeds.clock import WallClock
from feeds.errors import FeedDataError
from feeds.live import WebSocketFeed
from feeds.model import BookBatch
from feeds.readers import read_mbp10
from feeds.replay import ReplayFeed
from feeds.validate import validate_batch

__all__ = ["build_profiles", "make_feed_factory", "run_from_config"]


def make_feed_factory(cfg: AgentConfig) -> FeedFactory:
    """Return a function opening the configured feed of a symbol."""
    f = cfg.feed
    if f.kind == "websocket":

        def ws_factory(symbol: str) -> BookFeed:
            return WebSocketFeed(
                f.urls[symbol],
                symbol,
                stale_after_s=f.stale_after_s,
                heartbeat_s=f.heartbeat_s,
                reconnect_max_s=f.reconnect_max_s,
                max_size=f.max_message_bytes,
                fmt=f.format,
                futures=f.futures,
            )

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


def _valid_batches(paths: list[Path], symbol: str) -> Iterator[BookBatch]:
    for p in paths:
        prev: int | None = None
        for batch in read_mbp10(p, symbol=symbol):
            res = validate_batch(batch, prev)
            prev = res.last_ts_ns
            if len(res.valid):
                yield res.valid


async def _run(
    cfg: AgentConfig, profiles: dict[tuple[str, str], IntradayProfile], resume: bool = False
) -> list[RunSummary]:
    broker = None
    if cfg.broker.kind == "fix":
        from agent.brokers.fix import FixBroker

        broker = FixBroker.from_config(cfg.broker)
        await broker.start()
    journal = Journal(cfg.journal.path) if cfg.journal.path is not None else None
    control = Control(journal)
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
    try:
        return await run(
            cfg,
            make_feed_factory(cfg),
            broker=broker,
            profiles=profiles,
            journal=journal,
            control=control,
            metrics=metrics,
        )
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
    except ConfigError as e:
        print(f"exec-agent: config error: {e}", file=sys.stderr)
        return 2
    configure_logging(log_format or cfg.logging.format, log_level or cfg.logging.level)
    log = structlog.get_logger()
    log.info("daemon.config_loaded", path=str(path), sha256=sha, config=cfg.model_dump(mode="json"))
    try:
        profiles = build_profiles(cfg)
        summaries: list[RunSummary] = asyncio.run(_run(cfg, profiles, resume))
    except FeedDataError as e:
        log.error("daemon.data_error", error=str(e))
        print(f"exec-agent: data error: {e}", file=sys.stderr)
        return 2
    except TimeoutError:
        b = cfg.broker
        log.error("daemon.broker_unavailable", host=b.host, port=b.port)
        print(
            f"exec-agent: broker at {b.host}:{b.port} did not accept a FIX logon", file=sys.stderr
        )
        return 2
    except OSError as e:  # e.g. the control socket is taken by another daemon
        log.error("daemon.os_error", error=str(e))
        print(f"exec-agent: {e}", file=sys.stderr)
        return 2
    log.info(
        "daemon.stopped",
        n_orders=len(summaries),
        completed=sum(s.status == "completed" for s in summaries),
    )
    sys.stdout.flush()
    return 0
