"""``exec-agent serve-venue --config FILE``: a simulated FIX 4.4 venue on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.errors import ConfigError
from agent.logs import configure_logging
from agent.venue import FixVenue
from feeds.errors import FeedDataError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``serve-venue`` subcommand."""
    p = sub.add_parser(
        "serve-venue",
        help="run a simulated FIX 4.4 venue matching against the replayed book",
        description="Listen on [broker].host:port as a FIX 4.4 acceptor and execute orders as "
        "IOC limits against the [feed.files] books at TransactTime + [broker].latency_ms. "
        "Every ExecutionReport is also appended to --er-log.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the daemon's TOML config")
    p.add_argument(
        "--er-log",
        default="venue-executions.jsonl",
        metavar="FILE",
        help="JSON lines of every ExecutionReport sent",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="N",
        help="listen on this port instead of [broker].port (0: any free port, printed)",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="keep the venue's sequence numbers and orders here, across restarts (default: "
        "a 'venue' folder next to [broker].store_path; in memory when that is unset)",
    )
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="serve TLS: certificate")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="serve TLS: private key")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> None:
    cfg, _ = load_config(args.config)
    b = cfg.broker
    ctx = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    password = None
    if b.password_file is not None:
        password = b.password_file.read_text().strip()
    elif b.password_env:
        password = os.environ.get(b.password_env)
    venue = FixVenue(
        dict(cfg.feed.files),
        latency_ms=b.latency_ms,
        er_log=args.er_log,
        sender=b.target_comp_id,
        target=b.sender_comp_id,
        host=b.host,
        port=b.port if args.port is None else args.port,
        heartbeat_s=b.heartbeat_s,
        state_dir=_state_dir(args.state_dir, b.store_path),
        password=password,
        ssl_context=ctx,
    )
    async with venue:
        print(f"fix://{b.host}:{venue.port}", flush=True)
        await asyncio.Event().wait()


def _state_dir(arg: str | None, store_path: Path | None) -> Path | None:
    if arg:
        return Path(arg)
    return store_path.parent / "venue" if store_path is not None else None


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; return the exit code."""
    configure_logging("auto", "info", stream=sys.stderr)
    try:
        asyncio.run(_serve(args))
    except ConfigError as e:
        print(f"exec-agent serve-venue: config error: {e}", file=sys.stderr)
        return 2
    except FeedDataError as e:
        print(f"exec-agent serve-venue: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"exec-agent serve-venue: cannot listen: {e}", file=sys.stderr)
        return 2
    return 0
