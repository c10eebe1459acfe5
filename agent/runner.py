"""Glue for ``exec-agent run``: config -> logging -> feeds -> daemon, with user errors as one line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

from agent.config import AgentConfig, load_config
from agent.daemon import RunSummary, run
from agent.errors import ConfigError
from agent.logs import configure_logging
from agent.profile import LiquidityProfile
from feeds.base import BookFeed
from feeds.clock import WallClock
from feeds.errors import FeedDataError
from feeds.replay import ReplayFeed

__all__ = ["build_profiles", "make_feed_factory", "run_from_config"]


def make_feed_factory(cfg: AgentConfig):  # noqa: ANN201 - returns FeedFactory
    """Return a function opening the configured feed of a symbol."""
    speed = cfg.feed.speed if cfg.feed.speed > 0 else None
    clock = WallClock() if speed is not None else None

    def factory(symbol: str) -> BookFeed:
        return ReplayFeed(cfg.feed.files[symbol], symbol, speed=speed, clock=clock,
                          chunk_rows=cfg.feed.chunk_rows)

    return factory


def build_profiles(cfg: AgentConfig) -> dict[str, LiquidityProfile]:
    """Learn one intraday profile per symbol from ``[estimation].history`` (flat when empty)."""
    if not cfg.estimation.history:
        return {}
    from agent.profile import learn_profiles

    return learn_profiles(cfg.estimation.history, {o.symbol for o in cfg.orders},
                          bucket_s=cfg.estimation.profile_bucket_s)


def run_from_config(
    path: str | Path, *, log_format: str | None = None, log_level: str | None = None
) -> int:
    """Load the config, run the daemon, return the process exit code."""
    try:
        cfg, sha = load_config(path)
    except ConfigError as e:
        print(f"exec-agent: config error: {e}", file=sys.stderr)
        return 2
    configure_logging(log_format or cfg.logging.format, log_level or cfg.logging.level)
    log = structlog.get_logger()
    log.info("daemon.config_loaded", path=str(path), sha256=sha,
             config=cfg.model_dump(mode="json"))
    try:
        profiles = build_profiles(cfg)
        summaries: list[RunSummary] = asyncio.run(run(cfg, make_feed_factory(cfg),
                                                      profiles=profiles))
    except FeedDataError as e:
        log.error("daemon.data_error", error=str(e))
        print(f"exec-agent: data error: {e}", file=sys.stderr)
        return 2
    log.info("daemon.stopped", n_orders=len(summaries),
             completed=sum(s.status == "completed" for s in summaries))
    return 0
