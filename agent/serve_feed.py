"""``exec-agent serve-feed``: replay a book file or a Binance recording to websocket clients."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import structlog

from feeds.errors import FeedDataError
from feeds.readers import book_format
from feeds.server import FeedServer

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``serve-feed`` subcommand."""
    p = sub.add_parser(
        "serve-feed",
        help="replay an MBP-10 file to websocket clients (for live mode)",
        description="Replay a book file (Databento MBP-10 CSV, .gz, .zst, DBN, or LOBSTER) as "
        "our JSON MBP-10 messages, or a recorded Binance depth session (--format "
        "binance-depth), to every websocket client, paced by event time times --speed. "
        "Prints the URL.",
    )
    p.add_argument("--data", required=True, metavar="PATH", help="book file, or Binance recording")
    p.add_argument("--port", type=int, default=8765, help="port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--speed", type=float, default=1.0, help="event time per wall time (K)")
    p.add_argument("--symbol", default=None, help="replay only this symbol")
    p.add_argument(
        "--format",
        choices=["mbp10-json", "binance-depth"],
        default="mbp10-json",
        help="message format: our MBP-10 JSON, or Binance diff depth (+ trades) from a "
        "recorded session (<recv ns> <raw JSON> lines)",
    )
    p.add_argument(
        "--futures", action="store_true", help="binance-depth: USD-M futures sequencing (pu)"
    )
    p.add_argument(
        "--restamp",
        action="store_true",
        help="send event times of now (wall clock), as a live venue would",
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
        fmt=args.format,
        futures=args.futures,
        restamp=args.restamp,
    )
    async with srv:
        print(srv.url, flush=True)
        await srv.done.wait()
    if srv.error is not None:
        raise _ServeFailed(srv.error)


class _ServeFailed(Exception):
    """The replay stopped on an error (already logged with its traceback)."""


def run(args: argparse.Namespace) -> int:
    """Serve until the file ends (or forever with --loop); return the exit code."""
    if not args.speed > 0:
        print("exec-agent serve-feed: --speed must be > 0", file=sys.stderr)
        return 2
    if args.futures and args.format != "binance-depth":
        print("exec-agent serve-feed: --futures needs --format binance-depth", file=sys.stderr)
        return 2
    try:
        if args.format == "mbp10-json":
            book_format(args.data)  # refuse an unknown file at start, in one line
        elif not Path(args.data).is_file():
            raise FeedDataError(f"{args.data}: no such file")
        asyncio.run(_serve(args))
    except FeedDataError as e:
        print(f"exec-agent serve-feed: {e}", file=sys.stderr)
        return 2
    except _ServeFailed as e:
        err = e.args[0]
        print(f"exec-agent serve-feed: replay failed: {err}", file=sys.stderr)
        return 2 if isinstance(err, FeedDataError) else 1
    except OSError as e:
        print(
            f"exec-agent serve-feed: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr
        )
        return 2
    structlog.get_logger().info("feed_server.stopped")
    return 0
