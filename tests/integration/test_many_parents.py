"""Sixteen parents on one symbol decide and fill as each would alone.

The parents share the symbol's books, its window curve (one walk of each book per side,
``SharedCurves``), the simulated venues and the session's cuts. With the default venue
(``half_life_s = 0``: no depth memory, every IOC child meets the displayed book) and the default
aggressive tactic nothing they do reaches another parent, so each must send the same children
(time, quantity, limit), take the same decisions (status and child quantity of every period; the
float carried between periods to 1e-9) and get the same fills as in a run of its own.
With depth memory (``half_life_s > 0``) they interact by design: the venue remembers per symbol
and side the depth our fills took, whoever sent them, so a parent's fills then depend on the
others' and "as alone" is not the right reference; the test runs without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.core.estimator import CurveView
from agent.daemon import Daemon
from agent.runner import make_feed_factory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAY = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"

HEADER = """
[feed]
files = {{ SYNA = "{day}" }}
chunk_rows = 997
[broker]
latency_ms = 40
half_life_s = {half_life}
[estimation]
window_s = 300
n_sizes = 20
"""

ORDER = """
[[orders]]
id = "P{i:02d}"
symbol = "SYNA"
side = "{side}"
quantity = {qty}
start = 2025-06-02T{start}Z
end = 2025-06-02T{end}Z
period_s = {period}
lot = 100
"""

N = 16
PERIODS = (300, 600, 900, 1200)


def _order(i: int) -> str:
    h, m = divmod(35 + 11 * i, 60)
    return ORDER.format(
        i=i,
        side="sell" if i % 2 else "buy",
        qty=5_000 + 1_500 * i,
        start=f"{13 + h:02d}:{m:02d}:00",
        end=f"{19 - i % 4:02d}:{40 - 10 * (i % 3):02d}:00",
        period=PERIODS[i % len(PERIODS)],
    )


async def _run(tmp_path: Path, ids: list[int], half_life: float) -> Daemon:
    p = tmp_path / f"many-{'-'.join(map(str, ids))}.toml"
    p.write_text(HEADER.format(day=DAY.as_posix(), half_life=half_life) + "".join(map(_order, ids)))
    cfg = load_config(p)[0]
    d = Daemon(cfg, make_feed_factory(cfg), None, None, None, None)
    await d.run()
    return d


def _outcome(d: Daemon, parent_id: str) -> dict[str, list[Any]]:
    """What one parent did, with the run's id tag taken out of the client order ids."""
    (r,) = [x for x in d.runners if x.order.id == parent_id]
    tag = f"{d.id_tag}-"
    out: dict[str, list[Any]] = {}
    for leg in r.core.legs:
        out[f"{leg.name}.children"] = [
            (c.order.client_order_id.replace(tag, ""), c.order.ts_created_ns, c.order.qty,
             c.order.limit_px, c.order.tif)
            for c in leg.tracker.children.values()
        ]  # fmt: skip
        coids = set(leg.tracker.children)
        venue = d.main.venue if leg.name == "mpc" else d.shadow.venue  # type: ignore[union-attr]
        out[f"{leg.name}.fills"] = [
            (f.client_order_id.replace(tag, ""), f.due_ns, f.book_ts_ns,
             tuple(f.execution.qty.tolist()), tuple(f.execution.px.tolist()))
            for f in venue.fills
            if f.client_order_id in coids
        ]  # fmt: skip
    out["decisions"] = [(k, s.decision.status, s.decision.child_qty) for k, s in r.core.steps]
    out["carry"] = [s.decision.carry for _, s in r.core.steps]
    return out


async def test_sixteen_parents_decide_and_fill_as_each_alone(tmp_path):
    together = await _run(tmp_path, list(range(N)), 0.0)
    views = [r.core.estimator for r in together.runners]
    assert all(isinstance(v, CurveView) for v in views)
    sources = {id(v.source) for v in views if isinstance(v, CurveView)}
    assert len(sources) == 2, "one shared curve per side"
    n_children = 0
    for i in range(N):
        alone = await _run(tmp_path, [i], 0.0)
        pid = f"P{i:02d}"
        got, want = _outcome(together, pid), _outcome(alone, pid)
        # The lot-rounding residual carried between periods is a float the solver computed
        # from the curve: the shared curve sums the same rows in another order (cut at every
        # parent's reads, binned on the union grid), about 1e-12 relative after the solve.
        carry_got, carry_want = got.pop("carry"), want.pop("carry")
        assert carry_got == pytest.approx(carry_want, rel=1e-9, abs=1e-9), pid
        assert got == want, pid
        n_children += len(want["mpc.children"])
        assert together.runners[i].summary().status == "completed"
    assert n_children > 16 * 5, "too few children to compare"
