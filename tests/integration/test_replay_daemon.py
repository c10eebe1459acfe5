"""End to end: the daemon works parent orders on replayed books (shipped sample, real FROG day)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from structlog.testing import capture_logs

from agent.config import load_config
from agent.daemon import run
from agent.runner import make_feed_factory
from tests.conftest import FROG_DAY, REPO, require

pytestmark = pytest.mark.integration


def check_run(logs: list[dict], summaries, cfg) -> None:
    """Filled equals target, every fill inside its collar, one mpc.step per period."""
    by_parent = {s.parent_id: s for s in summaries}
    limits: dict[str, float] = {}
    steps: dict[str, set[int]] = defaultdict(set)
    fills: dict[str, float] = defaultdict(float)
    for e in logs:
        if e["event"] == "order.submitted" and e["strategy"] == "mpc":
            limits[e["client_order_id"]] = e["limit_px"]
        elif e["event"] == "mpc.step":
            assert e["period"] not in steps[e["parent_id"]], "two mpc.step lines for one period"
            steps[e["parent_id"]].add(e["period"])
        elif "fill_px" in e and e.get("strategy") == "mpc":
            lim = limits[e["client_order_id"]]
            side = next(o.side for o in cfg.orders if e["client_order_id"].startswith(o.id))
            assert (e["fill_px"] <= lim + 1e-9) if side == "buy" else (e["fill_px"] >= lim - 1e-9)
            fills[e["parent_id"]] += e["fill_qty"]
    for o in cfg.orders:
        s = by_parent[o.id]
        assert s.filled_qty == o.quantity, s
        assert fills[o.id] == pytest.approx(o.quantity)
        assert steps[o.id] == set(range(s.n_periods)), "one mpc.step line per period"
        assert math.isfinite(s.shortfall_bps) and math.isfinite(s.twap_shortfall_bps)
    summary_lines = [e for e in logs if e["event"] == "run.summary"]
    assert len(summary_lines) == len(cfg.orders)
    for line in summary_lines:
        for key in (
            "symbol",
            "side",
            "target_qty",
            "filled_qty",
            "avg_px",
            "arrival_mid",
            "shortfall_bps",
            "twap_shortfall_bps",
        ):
            assert key in line


async def test_shipped_sample_completes_every_order():
    cfg, _ = load_config(REPO / "config" / "replay.toml")
    with capture_logs() as logs:
        summaries = await run(cfg, make_feed_factory(cfg))
    check_run(logs, summaries, cfg)
    assert len({o.symbol for o in cfg.orders}) >= 2


FROG_CONFIG = """
[feed]
files = {{ FROG = "{path}" }}

[broker]
latency_ms = 20
collar_bps = 100

[estimation]
window_s = 900
max_size = 5000

[[orders]]
id = "frog-buy"
symbol = "FROG"
side = "buy"
quantity = 20000
start = 2025-04-03T13:45:00Z
end = 2025-04-03T19:45:00Z
period_s = 600
lot = 100
"""


@pytest.mark.realdata
async def test_real_frog_day(tmp_path):
    path = require(FROG_DAY)
    p = tmp_path / "frog.toml"
    p.write_text(FROG_CONFIG.format(path=path.as_posix()))
    cfg, _ = load_config(p)
    with capture_logs() as logs:
        summaries = await run(cfg, make_feed_factory(cfg))
    check_run(logs, summaries, cfg)


def test_cli_main_job_exits_zero_with_json_summary():
    """`python -m agent run --config config/replay.toml` ends 0 with one run.summary per order."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--config",
            "config/replay.toml",
            "--log-format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sum(e["event"] == "run.summary" for e in events) >= 2
    assert events[0]["event"] == "daemon.config_loaded"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(("quantity = ", "quantity = -"), "quantity"), (("lot = ", "lott = "), "lott")],
)
def test_cli_bad_config_is_one_line(tmp_path, edit, expected):
    """A user error exits non-zero with one line naming the file and key; no traceback."""
    src = (REPO / "config" / "replay.toml").read_text()
    bad = tmp_path / "bad.toml"
    text = src.replace("../replay_data/", (REPO / "replay_data").as_posix() + "/")
    bad.write_text(text.replace(*edit, 1))
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and expected in err
    assert "Traceback" not in proc.stderr


async def test_bad_snapshots_are_counted_skipped_and_the_order_completes(tmp_path):
    """Corrupted rows (NaN, crossed, negative size, time going back, garbage text) are logged
    with their reason and skipped; the daemon keeps working and completes the order."""
    from feeds.synth import generate_day, write_mbp10_csv

    df = generate_day("SYNA", "2025-06-02", 11, n_rows=20_000)
    rng = np.random.default_rng(3)
    bad = rng.choice(np.arange(100, len(df) - 100), size=40, replace=False)
    df = df.astype({"bid_px_00": object, "ask_sz_03": object})
    df.loc[bad[:10], "bid_px_00"] = np.nan
    df.loc[bad[10:20], "ask_px_00"] = df.loc[bad[10:20], "bid_px_00"].astype(float) - 0.05
    df.loc[bad[20:30], "ask_sz_03"] = -100
    df.loc[bad[30:35], "ask_sz_03"] = "garbage"
    df.loc[bad[35:], "ts_event"] = df.loc[0, "ts_event"]
    path = write_mbp10_csv(df, tmp_path / "SYNA_bad.mbp-10.csv")
    p = tmp_path / "bad.toml"
    p.write_text(BAD_DATA_CONFIG.format(path=path.as_posix()))
    cfg, _ = load_config(p)
    with capture_logs() as logs:
        (s,) = await run(cfg, make_feed_factory(cfg))
    assert s.filled_qty == s.target_qty
    closed = next(e for e in logs if e["event"] == "feed.closed")
    assert closed["rows_invalid"] >= 35
    reasons = {e["reason"] for e in logs if e["event"] == "feed.invalid_snapshot"}
    assert {"crossed", "non_positive_size", "time_backwards"} <= reasons


BAD_DATA_CONFIG = """
[feed]
files = {{ SYNA = "{path}" }}

[[orders]]
id = "A"
symbol = "SYNA"
side = "buy"
quantity = 30000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T19:55:00Z
period_s = 900
lot = 100
"""
