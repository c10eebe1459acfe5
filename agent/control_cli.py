"""``exec-agent status | submit | cancel | kill | resume | stop``: talk to a running daemon.

Each command connects to the daemon's control socket (``--socket``, or ``[control].socket``
of ``--config``), sends one JSON command, prints the JSON reply and exits 0 when the daemon
accepted it, 1 when it refused it (the reply says why), 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agent.config import load_config, read_toml
from agent.control import send_command
from agent.errors import ConfigError

__all__ = ["add_parser", "run"]

_HELP = {
    "status": "show the parents of a running daemon and whether it is halted",
    "submit": "add a parent order to a running daemon (an [[orders]] table from --order FILE)",
    "cancel": "stop working a parent order of a running daemon and cancel its open children",
    "kill": "kill switch: no new orders, open children cancelled, HALTED kept until resume",
    "resume": "release the kill switch of a running daemon",
    "stop": "graceful stop: stop deciding, settle open children, then exit (as SIGTERM)",
}


def add_parser(sub: Any) -> None:
    """Add the control subcommands."""
    for cmd, help_ in _HELP.items():
        p = sub.add_parser(cmd, help=help_, description=help_ + ".")
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--config", metavar="FILE", help="the daemon's config ([control].socket)"
        )
        where.add_argument("--socket", metavar="PATH", help="the daemon's control socket")
        if cmd == "submit":
            p.add_argument(
                "--order",
                required=True,
                metavar="FILE",
                help="TOML with one [[orders]] table (or top-level order keys), or JSON",
            )
        if cmd == "cancel":
            p.add_argument("parent_id", help="the parent order's id")
        if cmd in ("cancel", "kill", "resume"):
            p.add_argument("--reason", default=None, help="recorded in the logs (and journal)")
        p.set_defaults(func=run, control_cmd=cmd)


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    cfg, _ = load_config(args.config)
    if cfg.control.socket is None:
        raise ConfigError(f"{args.config}: control.socket: not set (the daemon has no socket)")
    return cfg.control.socket


def _order(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_bytes())
        except OSError as e:
            raise ConfigError(f"{p}: cannot read order file ({e.strerror or e})") from e
        except ValueError as e:
            raise ConfigError(f"{p}: not valid JSON: {e}") from e
    else:
        data, _ = read_toml(p)
    if isinstance(data, dict) and isinstance(data.get("orders"), list):
        if len(data["orders"]) != 1:
            raise ConfigError(f"{p}: orders: want exactly one [[orders]] table")
        data = data["orders"][0]
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: want an order table")
    # TOML datetimes -> ISO strings for the JSON wire
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def run(args: argparse.Namespace) -> int:
    """Send the command; print the reply; return the exit code."""
    cmd = args.control_cmd
    try:
        sock = _socket(args)
        req: dict[str, Any] = {"cmd": cmd}
        if cmd == "submit":
            req["order"] = _order(args.order)
        if cmd == "cancel":
            req["parent_id"] = args.parent_id
        if getattr(args, "reason", None):
            req["reason"] = args.reason
    except ConfigError as e:
        print(f"exec-agent {cmd}: {e}", file=sys.stderr)
        return 2
    try:
        reply = asyncio.run(send_command(sock, req))
    except (OSError, TimeoutError) as e:
        print(f"exec-agent {cmd}: no daemon answers on {sock}: {e}", file=sys.stderr)
        if cmd == "resume":
            print(
                "  (a stopped daemon is resumed with: exec-agent run --config FILE --resume)",
                file=sys.stderr,
            )
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1
