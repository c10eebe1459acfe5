"""``exec-agent backtest``: run every strategy on the same replays and the same simulated broker.

The shell around ``agent.backtest``: load and validate the config, build the grid of runs
(dataset x parent size x side x strategy), run it through the executor (local processes, or a
Dask cluster with ``--dask`` / ``DASK_SCHEDULER_ADDRESS``), write the report, print the summary
table on stdout. Logs (``backtest.started``, ``backtest.run_failed``, ``backtest.finished``,
``backtest.report_written``) go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from agent.backtest.config import ALL_STRATEGIES, BacktestConfig, load_backtest_config
from agent.backtest.engine import RunResult, RunSpec, SimParams
from agent.core.queue import QueueConfig
from agent.core.tactic import TacticConfig
from agent.errors import ConfigError

__all__ = ["add_parser", "build_specs", "run", "sim_params"]


def add_parser(subparsers: Any) -> None:
    """Add the ``backtest`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "backtest",
        help="compare TWAP, VWAP, POV, Almgren-Chriss and the MPC variants on replayed days",
        description="Run every strategy of the config on the same replayed books and the same "
        "resilient simulated broker, for each dataset, parent size and side; write "
        "backtest.json, summary.md and PNG figures to the output folder and print the summary.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="backtest TOML file")
    p.add_argument("--out", metavar="DIR", help="output folder (default: [backtest].out)")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="Dask scheduler address (tcp://HOST:8786); default: DASK_SCHEDULER_ADDRESS if set, "
        "else local processes",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="local processes (default min(2, cpus))"
    )
    p.add_argument(
        "--strategies",
        default=None,
        help=f"comma list, a subset of the config's (known: {', '.join(ALL_STRATEGIES)})",
    )
    p.add_argument("--no-figures", action="store_true", help="write the JSON and table only")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    p.set_defaults(func=run)


def sim_params(cfg: BacktestConfig, lot: int | None = None) -> SimParams:
    """Return the simulation parameters of a config (``lot`` overrides the grid's)."""
    b, e, s = cfg.broker, cfg.estimation, cfg.strategy
    hl = math.inf if b.resilience_half_life_s == -1 else b.resilience_half_life_s
    return SimParams(
        start_s=cfg.start_s(),
        end_s=cfg.end_s(),
        period_s=cfg.backtest.period_s,
        lot=lot or cfg.backtest.lot,
        latency_ms=b.latency_ms,
        collar_bps=b.collar_bps,
        half_life_s=hl,
        broker_beyond=b.beyond_depth,
        broker_penalty_bps=b.penalty_bps,
        window_s=e.window_s,
        current_window_s=e.current_window_s,
        max_size=e.max_size,
        n_sizes=e.n_sizes,
        est_beyond=e.beyond_depth,
        est_penalty_bps=e.penalty_bps,
        min_snapshots=e.min_snapshots,
        weighting=e.weighting,
        max_window_rows=e.max_window_rows,
        incremental=e.incremental,
        profile_bucket_s=e.profile_bucket_s,
        pov_rate=s.pov_rate,
        ac_risk_aversion=s.ac_risk_aversion,
        risk_aversion=s.risk_aversion,
        max_child_multiple=s.max_child_multiple,
        decision_lead_ms=s.decision_lead_ms,
        forecast=s.forecast,
        prior_profile=s.prior_profile,
        max_participation=s.max_participation,
        final_retry_s=s.final_retry_s,
        scenario_weights=s.scenario_weights,
        unfilled_penalty_bps=cfg.tca.unfilled_penalty_bps,
        adverse_horizon_s=cfg.tca.adverse_horizon_s,
    )


def tactic_variants(cfg: BacktestConfig) -> list[tuple[str, TacticConfig, QueueConfig]]:
    """Return ``(label, tactic, queue)`` of the grid's tactic axis ("" for the aggressive one,
    whose run ids and strategy names stay as before)."""
    out: list[tuple[str, TacticConfig, QueueConfig]] = []
    for kind in cfg.backtest.tactics:
        tac = cfg.tactic.model_copy(update={"kind": kind})
        if kind == "passive":
            for qm in cfg.backtest.queue_models:
                out.append((f"+passive-{qm}", tac, cfg.queue.model_copy(update={"model": qm})))
        else:
            out.append(("" if kind == "aggressive" else f"+{kind}", tac, cfg.queue))
    return out


def build_specs(cfg: BacktestConfig, strategies: list[str] | None = None) -> list[RunSpec]:
    """Return every run of the grid (dataset x parent size x side x strategy), in that order."""
    names = strategies or cfg.backtest.strategies
    specs = []
    for d in cfg.datasets:
        base = sim_params(cfg, d.lot)
        for pct in cfg.backtest.parent_pct_of_volume:
            for side in cfg.backtest.sides:
                for st, (tag, tac, queue) in itertools.product(names, tactic_variants(cfg)):
                    params = dataclasses.replace(base, tactic=tac, queue=queue)
                    specs.append(
                        RunSpec(
                            run_id=f"{d.label}-{pct:g}pct-{side}-{st}{tag}",
                            dataset=d.label,
                            path=str(d.path),
                            fmt=d.format,
                            symbol=d.symbol,
                            history=tuple(str(h) for h in d.history),
                            side=side,
                            pct_of_volume=pct,
                            strategy=st,
                            params=params,
                            label=f"{st}{tag}",
                            mpc_profile=d.mpc_profile,
                        )
                    )
    return specs


def _command(args: argparse.Namespace) -> str:
    """Return the command line that reproduces this run."""
    parts = ["exec-agent", "backtest", "--config", str(args.config)]
    if args.out:
        parts += ["--out", str(args.out)]
    if args.dask:
        parts += ["--dask", args.dask]
    if args.workers:
        parts += ["--workers", str(args.workers)]
    if args.strategies:
        parts += ["--strategies", args.strategies]
    if args.no_figures:
        parts.append("--no-figures")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run ``backtest``; return the exit code (0 ok, 1 some runs failed, 2 bad input)."""
    from agent.backtest.executor import run_batch, scheduler_address
    from agent.backtest.report import write_report

    log = structlog.get_logger("backtest")
    try:
        cfg, sha = load_backtest_config(args.config)
        names = None
        if args.strategies:
            names = [s.strip() for s in args.strategies.split(",") if s.strip()]
            bad = [s for s in names if s not in ALL_STRATEGIES]
            if bad:
                raise ConfigError(f"--strategies: unknown {', '.join(bad)}")
        if args.workers is not None and args.workers < 1:
            raise ConfigError("--workers: must be >= 1")
    except ConfigError as e:
        print(f"exec-agent: config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else cfg.backtest.out
    specs = build_specs(cfg, names)
    address = scheduler_address(args.dask)
    workers = args.workers or cfg.backtest.workers or None
    log.info(
        "backtest.started",
        config=str(args.config),
        sha256=sha,
        n_runs=len(specs),
        executor="dask" if address else "processes",
        dask_address=address,
        workers=workers,
    )
    t0 = time.perf_counter()

    def on_result(r: RunResult) -> None:
        if r.status == "failed":
            log.error("backtest.run_failed", run_id=r.run_id, message=r.message)

    try:
        results = run_batch(
            specs,
            dask_address=address,
            max_workers=workers,
            progress=args.progress,
            on_result=on_result,
        )
    except ImportError as e:
        print(f"exec-agent: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    meta = {
        "config": str(Path(args.config).resolve()),
        "config_sha256": sha,
        "command": _command(args),
        "effective_config": cfg.model_dump(mode="json"),
        "executor": "dask" if address else "processes",
        "wall_s": wall,
        "n_runs": len(results),
        "resilience": "consumed depth decays with half-life "
        f"{cfg.broker.resilience_half_life_s} s (-1 = never)",
        "broker_beyond_depth": cfg.broker.beyond_depth,
    }
    rep = write_report(out, results, meta, figures=not args.no_figures)
    n_failed = sum(r.status == "failed" for r in results)
    log.info("backtest.finished", n_runs=len(results), n_failed=n_failed, wall_s=round(wall, 2))
    log.info(
        "backtest.report_written",
        json=str(rep["json"]),
        markdown=str(rep["markdown"]),
        figures=[str(p) for p in rep["figures"]],
    )
    sys.stdout.write(rep["markdown"].read_text())
    return 1 if n_failed else 0
