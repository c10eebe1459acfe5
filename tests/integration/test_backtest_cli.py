"""``exec-agent backtest`` end to end on the shipped sample, and the Dask path."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.__main__ import main
from agent.backtest.cli import build_specs
from agent.backtest.config import load_backtest_config
from agent.backtest.engine import RunSpec, run_one, simulate
from agent.backtest.executor import run_batch, scheduler_address
from tests.conftest import FROG_DAY, REPO, SHARED_DATA, require

pytestmark = pytest.mark.integration

FAST = "twap,vwap,pov,ac,mpc-quadratic-deterministic,mpc-nonparametric-robust"


def test_cli_on_the_sample_config_writes_json_and_pngs(tmp_path, capsys):
    """The command writes backtest.json (every run, every TCA figure), summary.md and the PNGs,
    and prints the table."""
    out = tmp_path / "bt"
    code = main(
        [
            "backtest",
            "--config",
            str(REPO / "config" / "backtest.toml"),
            "--out",
            str(out),
            "--strategies",
            FAST,
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    doc = json.loads((out / "backtest.json").read_text())
    runs = doc["runs"]
    assert len(runs) == 2 * 1 * 2 * 6  # datasets x sizes x sides x strategies
    assert all(r["status"] == "completed" for r in runs)
    for r in runs:
        t = r["tca"]
        parts = t["spread_bps"] + t["impact_bps"] + t["timing_bps"] + t["unfilled_bps"]
        assert parts == pytest.approx(t["total_bps"], abs=1e-8)
    rows = {(r["dataset"], r["strategy"]) for r in doc["summary"]["rows"]}
    assert ("SYNA", "mpc-quadratic-deterministic") in rows
    assert any("history" in n for n in doc["notes"]["SYNA/vwap"])
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "shortfall.png" in pngs and "predicted_vs_realized.png" in pngs
    assert len([p for p in pngs if p.startswith("schedule_")]) == 4
    assert all((out / p).stat().st_size > 5000 for p in pngs)
    printed = capsys.readouterr().out
    assert "| SYNB | mpc-nonparametric-robust |" in printed


def test_cli_bad_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nlatency_ms = -5\n[[datasets]]\nlabel = "x"\npath = "y.csv"\n')
    assert main(["backtest", "--config", str(bad)]) == 2
    assert "broker.latency_ms" in capsys.readouterr().err


def _few_specs() -> list[RunSpec]:
    cfg, _ = load_backtest_config(REPO / "config" / "backtest.toml")
    specs = [
        s
        for s in build_specs(cfg)
        if s.dataset == "SYNB"
        and s.strategy in ("twap", "pov", "mpc-quadratic-deterministic", "mpc-power-stochastic")
    ]
    # two hours instead of the day: a few small runs
    return [
        dataclasses.replace(s, params=dataclasses.replace(s.params, end_s=15.5 * 3600))
        for s in specs
    ]


def _comparable(r):
    # wall-clock diagnostics (run time, solve time) are the only fields allowed to differ
    d = r.to_dict()
    d.pop("elapsed_s")
    for s in d["slices"]:
        s.pop("solve_ms", None)
    return d


def test_dask_local_cluster_gives_the_local_results():
    """The same runs through a Dask LocalCluster (by its address, as --dask does) and through
    local processes give identical results."""
    distributed = pytest.importorskip("distributed")
    specs = _few_specs()
    local = run_batch(specs, max_workers=1, progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = run_batch(specs, dask_address=cluster.scheduler_address, progress=False)
    assert [r.run_id for r in remote] == [s.run_id for s in specs]
    assert [_comparable(r) for r in remote] == [_comparable(r) for r in local]
    assert all(r.status == "completed" for r in local)


def test_scheduler_address_from_flag_or_environment(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address(None) is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    assert scheduler_address(None) == "tcp://10.0.0.1:8786"
    assert scheduler_address("tcp://h:1") == "tcp://h:1"


def test_a_failing_run_is_a_result_not_a_crash():
    spec = dataclasses.replace(_few_specs()[0], path=str(REPO / "nope.csv.gz"))
    r = run_one(spec)
    assert r.status == "failed" and "nope.csv.gz" in r.message


@pytest.mark.realdata
def test_real_days_run_and_price_every_share():
    """FROG (MBP-10) and AMZN (LOBSTER): the trades are found, the parent is sized from them,
    TWAP and the MPC complete, and the shortfall decomposes."""
    from agent.backtest.data import load_day

    amzn = SHARED_DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
    for path, source in (
        (require(FROG_DAY), "mbp10_trades"),
        (require(amzn), "lobster_executions"),
    ):
        day = load_day(str(path))
        assert day.trades.source == source
        assert day.trades.qty.sum() > 100_000
        base = _few_specs()[0]
        for st in ("twap", "mpc-quadratic-deterministic"):
            spec = dataclasses.replace(
                base, path=str(path), symbol=None, history=(), strategy=st, pct_of_volume=1.0
            )
            r = simulate(day, spec)
            assert r.status == "completed", r.message
            t = r.tca
            assert t["spread_bps"] > 0
            parts = t["spread_bps"] + t["impact_bps"] + t["timing_bps"] + t["unfilled_bps"]
            assert parts == pytest.approx(t["total_bps"], abs=1e-8)
