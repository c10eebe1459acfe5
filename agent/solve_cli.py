"""``exec-agent solve --input problem.json``: solve one allocation problem, print JSON.

The format is documented in ``agent/mpc/problem.py`` and the README; examples are in
``examples/solve/``. The result is printed on stdout whatever its status. Exit 0 when the
status is ``optimal``; exit 1 for any other status (``feasible``: a schedule not proven
optimal, ``infeasible``, ``max_iter``, ``numerical``), with one line on stderr naming the
status and why; exit 2 with one line on stderr for input that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.mpc.problem import ProblemError, solve_problem

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``solve`` subcommand."""
    p = sub.add_parser(
        "solve",
        help="solve one allocation problem given as JSON",
        description="Read a problem (quantity, lot, per-period impact models, optional "
        "scenarios, uncertainty and risk aversion) and print one JSON object with x, cost, "
        "status and lambda. See examples/solve/.",
    )
    p.add_argument(
        "--input", required=True, metavar="FILE", help="problem JSON file, or - for stdin"
    )
    p.add_argument("--indent", type=int, default=None, help="pretty-print with this indent")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Solve and print; return the exit code."""
    name = "<stdin>" if args.input == "-" else args.input
    try:
        text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text("utf-8")
    except OSError as e:
        print(f"exec-agent solve: {name}: cannot read ({e.strerror or e})", file=sys.stderr)
        return 2
    try:
        problem = json.loads(text)
    except json.JSONDecodeError as e:
        print(f"exec-agent solve: {name}: not valid JSON: {e}", file=sys.stderr)
        return 2
    try:
        out = solve_problem(problem)
    except ProblemError as e:
        print(f"exec-agent solve: {name}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=args.indent, allow_nan=False))
    if out["status"] != "optimal":
        print(
            f"exec-agent solve: {name}: status {out['status']}: {out['message']}", file=sys.stderr
        )
        return 1
    return 0
