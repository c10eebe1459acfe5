"""Command line: ``exec-agent`` (or ``python -m agent``).

Subcommands:
    run        work the parent orders of a config file (replay or live feed)
    solve      solve one allocation problem given as JSON
    calibrate  estimate impact models from MBP-10 files and draw the figures
    serve-feed replay an MBP-10 file to websocket clients (live mode demo and tests)
    serve-venue a simulated FIX 4.4 venue matching against the replayed book

User errors (bad config, missing data, bad input) print one line on stderr and exit 2; there is
no traceback for them. ``run`` exits 0 when every parent completed, 3 when one did not, 4 when
the kill switch was engaged, 1 on an unexpected error (``agent.exitcodes``, also in
``exec-agent run --help``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from agent.exitcodes import EPILOG

__all__ = ["main"]


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="work the parent orders of a config file",
        description="Work every [[orders]] entry of the config to its deadline on the configured "
        "feed and broker, logging every decision, then print one run.summary per order.",
        epilog=EPILOG,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="override [logging].format",
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="override [logging].level",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="release the kill switch (HALTED, kept in the journal) before starting",
    )
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.runner import run_from_config

    return run_from_config(
        args.config, log_format=args.log_format, log_level=args.log_level, resume=args.resume
    )


def _optional_subcommands(sub: Any) -> None:
    # Each of these modules exposes add_parser(subparsers) and run(args).
    for name in (
        "agent.solve_cli",
        "agent.calibrate",
        "agent.serve_feed",
        "agent.serve_venue",
        "agent.backtest.cli",
        "agent.control_cli",
    ):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name not in (name, name.rpartition(".")[0]):
                raise
            continue
        mod.add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="exec-agent",
        description="Real-time optimal execution agent: works a parent order as child orders "
        "sized by model-predictive control on the limit order book.",
        epilog=f"exec-agent run {EPILOG}",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _optional_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.command != "run":
        # Batch commands print their result on stdout; their logs go to stderr.
        from agent.logs import configure_logging

        configure_logging("auto", "info", stream=sys.stderr)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("exec-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
