"""A process that writes the journal as a busy daemon does, for a kill -9 in the middle of a
group commit: waves of parents each record a decision, await their child's intent (printing its
client order id once it returned) and record its fill, without end.

    python -m tests.chaos.journal_writer PATH [--wave 20]

``expected(n)`` is the order those records are issued in: what survives a kill must be a
prefix of it (no hole), holding every intent that was printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent.journal import Journal
from agent.model import ChildOrder, OrderFilled, Side

WAVE = 20


def coid(i: int) -> str:
    return f"P-k9-{i:06d}"


def expected(n: int, wave: int = WAVE) -> list[str]:
    """The first waves' records as ``kind:key``, in issue order (``n`` records at least)."""
    out: list[str] = []
    base = 0
    while len(out) < n:
        ids = range(base, base + wave)
        out += [x for i in ids for x in (f"decision:{i}", f"intent:{coid(i)}")]
        out += [f"event:{coid(i)}" for i in ids]
        base += wave
    return out


async def _main(path: str, wave: int) -> None:
    j = Journal(path)

    async def parent(i: int) -> None:
        j.decision("P", i, 10.0)
        await j.intent("mpc", ChildOrder(coid(i), "P", "S", Side.BUY, 100.0, 10.0, i))
        sys.stdout.write(coid(i) + "\n")
        sys.stdout.flush()  # said only once durable: the test holds the journal to it
        j.event("P", "mpc", OrderFilled(coid(i), f"e{i}", 100.0, 10.0, i))

    base = 0
    while True:
        await asyncio.gather(*(parent(i) for i in range(base, base + wave)))
        base += wave


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--wave", type=int, default=WAVE)
    args = ap.parse_args(argv)
    asyncio.run(_main(args.path, args.wave))


if __name__ == "__main__":
    main()
