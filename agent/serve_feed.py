"""``exec-agent serve-feed``: replay an MBP-10 file to websocket clients on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import structlog

from feeds.errors import FeedDataError
from feeds.server import FeedServer

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``serve-feed`` subcommand."""
    p = sub.add_parser(
        "serve-feed",
        help="replay an MBP-10 file to websocket clients (for live mode)",
        description="Replay an MBP-10 file (CSV, .gz, .zst, DBN) as our JSON MBP-10 messages, "
        "or a recorded Binance depth session, to every websocket client, paced by event time "
        "times --speed. Prints the URL.",
    )
    p.add_argument("--data", required=True, metavar="PATH", help="MBP-10 file")
    p.add_argument("--port", type=int, default=8765, help="port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--speed", type=float, default=1.0, help="event time per wall time (K)")
    p.add_argument("--symbol", default=None, help="replay only this symbol")
    p.add_argument(
        "--format",
        choices=["mbp10-json"],
        default="mbp10-json",
        help="message format (binance-depth: not built yet)",
    )
    p.add_argument("--loop", action="store_true", help="start again at the end of the file")
    p.add_argument(
        "--start-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="wait S seconds before the first message",
    )
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> None:
    srv = FeedServer(
        args.data,
        symbol=args.symbol,
        speed=args.speed,
        host=args.host,
        port=args.port,
        loop=args.loop,
        start_delay_s=args.start_delay,
    )
    async with srv:
        print(srv.url, flush=True)
        await srv.done.wait()


def run(args: argparse.Namespace) -> int:
    """Serve until the file ends (or forever with --loop); return the exit code."""
    if not args.speed > 0:
        print("exec-agent serve-feed: --speed must be > 0", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except FeedDataError as e:
        print(f"exec-agent serve-feed: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"exec-agent serve-feed: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr
        )
        return 2
    structlog.get_logger().info("feed_server.stopped")
    return 0
