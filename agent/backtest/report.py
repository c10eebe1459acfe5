"""Backtest report: summary tables, ``backtest.json`` and PNG figures (matplotlib, Agg).

``summarize`` is pure (numbers in, numbers out); ``write_report`` writes

- ``backtest.json``: the config, every run (TCA, per-period schedule, fills, MPC slices),
  the summary per (dataset, strategy), the paired differences against TWAP, the predicted
  against realized slice cost of every MPC variant, and the notes (look-ahead, fallbacks);
- ``summary.md``: the summary as a markdown table;
- ``schedule_<dataset>_<side>_<pct>.png``: shares per period and cumulative fills per strategy;
- ``shortfall.png``: shortfall per strategy with its spread across runs, one panel per dataset;
- ``predicted_vs_realized.png``: the MPC's predicted slice cost ``g_t(x)`` against the realized
  one, per dataset.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.backtest.engine import RunResult
from agent.core.calibration import calibrate_costs

__all__ = ["markdown_table", "summarize", "write_report"]

_PARTS = ("total_bps", "spread_bps", "impact_bps", "timing_bps", "unfilled_bps")


def _f(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else math.nan


def _stats(x: Sequence[float]) -> dict[str, Any]:
    a = np.asarray([v for v in x if math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
    }


def slice_accuracy(results: Sequence[RunResult]) -> dict[str, Any]:
    """Return predicted vs realized slice cost over the slices that filled.

    ``ratio`` is sum(realized) / sum(predicted at the filled size); ``corr`` the correlation of
    the per-slice costs; ``mae_bps`` the mean absolute error per slice in bps of its notional;
    ``median_ratio``, ``share_within_20pct``, ``pearson``, ``spearman`` from
    ``agent.core.calibration.calibrate_costs`` (the same figures the daemon's logs allow).
    """
    pred, real, bps_err = [], [], []
    for r in results:
        for s in r.slices:
            g = s.get("predicted_cost_filled")
            q = s.get("filled_qty") or 0.0
            if g is None or not q > 0 or s.get("realized_cost") is None:
                continue
            pred.append(float(g))
            real.append(float(s["realized_cost"]))
            bps_err.append(abs(real[-1] - pred[-1]) / (q * float(s["mid"])) * 1e4)
    if not pred:
        return {"n_slices": 0}
    p = np.asarray(pred)
    r_ = np.asarray(real)
    corr = float(np.corrcoef(p, r_)[0, 1]) if p.size > 2 and p.std() > 0 and r_.std() > 0 else None
    cal = calibrate_costs(p, r_, tol=0.2)
    return {
        "n_slices": int(p.size),
        "sum_predicted": float(p.sum()),
        "sum_realized": float(r_.sum()),
        "ratio": float(r_.sum() / p.sum()) if p.sum() > 0 else None,
        "corr": corr,
        "mae_bps": float(np.mean(bps_err)),
        # issue 13 item 6: the calibration figures of agent.core.calibration
        "median_ratio": cal.median_ratio,
        "share_within_20pct": cal.share_within,
        "pearson": cal.pearson,
        "spearman": cal.spearman,
    }


def summarize(results: Sequence[RunResult]) -> dict[str, Any]:
    """Return per (dataset, strategy) statistics, paired differences vs TWAP and slice accuracy.

    Paired difference: for every (dataset, side, size) with a TWAP run, the strategy's total
    shortfall minus TWAP's on the same books (bps); negative = cheaper than TWAP.
    """
    by: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    twap: dict[tuple[str, str, float], float] = {}
    twap_ex: dict[tuple[str, str, float], float] = {}
    plain: dict[tuple[str, str, float, str], RunResult] = {}  # the aggressive run of a strategy
    for r in results:
        if "+" not in r.strategy and r.status != "failed":
            plain[(r.dataset, r.side, r.pct_of_volume, r.strategy)] = r
    for r in results:
        by[(r.dataset, r.strategy)].append(r)
        if r.strategy == "twap" and r.status != "failed":
            twap[(r.dataset, r.side, r.pct_of_volume)] = _f(r.tca.get("total_bps"))
            twap_ex[(r.dataset, r.side, r.pct_of_volume)] = _execution_bps(r)
    rows = []
    for (ds, st), rs in by.items():
        ok = [r for r in rs if r.status != "failed"]
        row: dict[str, Any] = {
            "dataset": ds,
            "strategy": st,
            "n_runs": len(rs),
            "n_failed": len(rs) - len(ok),
            "n_incomplete": sum(r.status == "incomplete" for r in ok),
        }
        for part in _PARTS:
            row[part] = _stats([_f(r.tca.get(part)) for r in ok])
        diffs = [
            _f(r.tca.get("total_bps")) - twap[(r.dataset, r.side, r.pct_of_volume)]
            for r in ok
            if (r.dataset, r.side, r.pct_of_volume) in twap
        ]
        row["vs_twap_bps"] = _stats(diffs)
        row["execution_bps"] = _stats([_execution_bps(r) for r in ok])
        ex_diffs = [
            _execution_bps(r) - twap_ex[(r.dataset, r.side, r.pct_of_volume)]
            for r in ok
            if (r.dataset, r.side, r.pct_of_volume) in twap_ex
        ]
        row["execution_vs_twap_bps"] = _stats(ex_diffs)
        row["n_execution_cheaper_than_twap"] = sum(d < -1e-9 for d in ex_diffs if math.isfinite(d))
        row["n_cheaper_than_twap"] = sum(d < -1e-9 for d in diffs if math.isfinite(d))
        # the tactic's figures (agent.backtest.tca.tactic_tca), and spread + impact net of the
        # adverse selection after passive fills, paired against the aggressive TWAP
        for part in ("passive_share", "spread_captured_bps", "adverse_bps"):
            row[part] = _stats([_f(r.tca.get(part)) for r in ok])
        net = [_execution_bps(r) + (_f(r.tca.get("adverse_bps")) or 0.0) for r in ok]
        row["execution_net_bps"] = _stats(net)
        if "+" in st:
            # The tactic's own gain: against the same schedule sent aggressively, same books
            # (for "+timing", the timing's gain apart from the schedule's).
            base = st.partition("+")[0]
            pairs = [
                (r, plain[k])
                for r in ok
                if (k := (r.dataset, r.side, r.pct_of_volume, base)) in plain
            ]
            d_ex = [_execution_bps(r) - _execution_bps(b) for r, b in pairs]
            d_net = [
                _execution_bps(r) + (_f(r.tca.get("adverse_bps")) or 0.0) - _execution_bps(b)
                for r, b in pairs
            ]
            row["vs_aggressive_execution_bps"] = _stats(d_ex)
            row["vs_aggressive_net_bps"] = _stats(d_net)
            row["n_cheaper_than_aggressive_net"] = sum(d < -1e-9 for d in d_net)
        fill = [_f(r.tca.get("filled_qty")) / r.parent_qty for r in ok if r.parent_qty > 0]
        row["fill_rate"] = float(np.mean(fill)) if fill else None
        if st.startswith("mpc-"):
            row["slice_cost"] = slice_accuracy(ok)
        rows.append(row)
    order = {s: i for i, s in enumerate(_strategy_order(results))}
    rows.sort(key=lambda x: (x["dataset"], order.get(x["strategy"], 99)))
    return {"rows": rows}


def _execution_bps(r: RunResult) -> float:
    """Return spread + impact in bps: the part of the shortfall a schedule controls (timing is
    the day's drift, luck on one day; it cancels between a buy and a sell of the same day)."""
    return _f(r.tca.get("spread_bps")) + _f(r.tca.get("impact_bps"))


def _strategy_order(results: Sequence[RunResult]) -> list[str]:
    from agent.backtest.config import ALL_STRATEGIES

    seen = {r.strategy for r in results}
    out = []
    for s in ALL_STRATEGIES:  # each strategy, then its tactic variants ("twap+passive-...")
        out += [s] if s in seen else []
        out += sorted(x for x in seen if x.startswith(f"{s}+"))
    return out


def _fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """Return the summary as one markdown table (all figures in bps of the arrival notional)."""
    head = (
        "| dataset | strategy | runs | shortfall mean ± std | spread | impact | timing | "
        "unfilled | vs TWAP (paired) mean ± std | cheaper than TWAP | "
        "spread+impact vs TWAP (paired) | filled | realized / predicted slice cost |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in summary["rows"]:
        t = r["total_bps"]
        vs = r["vs_twap_bps"]
        ex = r["execution_vs_twap_bps"]
        sc = r.get("slice_cost") or {}
        ratio = sc.get("ratio")
        lines.append(
            f"| {r['dataset']} | {r['strategy']} | {r['n_runs'] - r['n_failed']} | "
            f"{_fmt(t['mean'])} ± {_fmt(t['std'])} | {_fmt(r['spread_bps']['mean'])} | "
            f"{_fmt(r['impact_bps']['mean'])} | {_fmt(r['timing_bps']['mean'])} | "
            f"{_fmt(r['unfilled_bps']['mean'])} | "
            + (
                "(benchmark)"
                if r["strategy"] == "twap"
                else f"{_fmt(vs['mean'])} ± {_fmt(vs['std'])}"
            )
            + (
                " | - | "
                if r["strategy"] == "twap"
                else f" | {r['n_cheaper_than_twap']}/{vs['n']} | "
            )
            + (
                "-"
                if r["strategy"] == "twap"
                else f"{_fmt(ex['mean'])} ± {_fmt(ex['std'])} "
                f"({r['n_execution_cheaper_than_twap']}/{ex['n']} cheaper)"
            )
            + " | "
            f"{_fmt(100 * r['fill_rate'] if r['fill_rate'] is not None else None, 1)}% | "
            + (f"{_fmt(ratio)} (corr {_fmt(sc.get('corr'))})" if sc.get("n_slices") else "-")
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def write_report(
    out: Path,
    results: Sequence[RunResult],
    meta: dict[str, Any],
    *,
    figures: bool = True,
) -> dict[str, Any]:
    """Write ``backtest.json``, ``summary.md`` and the figures into ``out``.

    Returns:
        ``{"json": path, "markdown": path, "figures": [paths], "summary": summary}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    notes: dict[str, list[str]] = defaultdict(list)
    for r in results:
        for n in r.notes:
            key = f"{r.dataset}/{r.strategy}"
            if n not in notes[key]:
                notes[key].append(n)
    doc = {
        "meta": meta,
        "summary": summary,
        "notes": dict(notes),
        "runs": [r.to_dict() for r in results],
    }
    jp = out / "backtest.json"
    jp.write_text(json.dumps(_json_safe(doc), indent=1, allow_nan=False))
    mp = out / "summary.md"
    mp.write_text(markdown_table(summary))
    figs = _figures(out, results, summary) if figures else []
    return {"json": jp, "markdown": mp, "figures": figs, "summary": summary}


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    if isinstance(v, Path):
        return str(v)
    return v


def _figures(out: Path, results: Sequence[RunResult], summary: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    order = _strategy_order(results)
    cmap = plt.get_cmap("tab20")
    color = {s: cmap(i % 20) for i, s in enumerate(order)}
    groups: dict[tuple[str, str, float], list[RunResult]] = defaultdict(list)
    for r in results:
        if r.status != "failed":
            groups[(r.dataset, r.side, r.pct_of_volume)].append(r)
    for (ds, side, pct), rs in sorted(groups.items()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
        for r in sorted(rs, key=lambda x: order.index(x.strategy)):
            t = (np.asarray(r.period_starts_ns) % 86_400_000_000_000) / 3.6e12
            a1.plot(
                t,
                np.asarray(r.period_filled) / r.parent_qty * 100,
                lw=1,
                color=color[r.strategy],
                label=r.strategy,
            )
            ft = (np.asarray(r.fills.get("t_ns", [])) % 86_400_000_000_000) / 3.6e12
            cum = np.cumsum(r.fills.get("qty", [])) / r.parent_qty
            a2.step(np.r_[t[0], ft], np.r_[0.0, cum], where="post", lw=1, color=color[r.strategy])
        a1.set(
            xlabel="period start (hour UTC)",
            ylabel="% of parent filled in the period",
            title=f"{ds} {side} {pct:g}% of volume: schedules",
        )
        a2.set(
            xlabel="time (hour UTC)", ylabel="cumulative fraction filled", title="cumulative fills"
        )
        a1.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        p = out / f"schedule_{ds}_{side}_{pct:g}pct.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    datasets = sorted({r.dataset for r in results})
    twap_ex = {
        (r.dataset, r.side, r.pct_of_volume): _execution_bps(r)
        for r in results
        if r.strategy == "twap" and r.status != "failed"
    }
    fig, axes = plt.subplots(len(datasets), 2, figsize=(16, 4.2 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets, strict=True):
        names = [s for s in order if any(r.dataset == ds and r.strategy == s for r in results)]
        for i, s in enumerate(names):
            rs = [
                r for r in results if r.dataset == ds and r.strategy == s and r.status != "failed"
            ]
            tot = [x for x in (_f(r.tca.get("total_bps")) for r in rs) if math.isfinite(x)]
            exd = [
                _execution_bps(r) - twap_ex[(r.dataset, r.side, r.pct_of_volume)]
                for r in rs
                if (r.dataset, r.side, r.pct_of_volume) in twap_ex
            ]
            exd = [x for x in exd if math.isfinite(x)]
            for ax, v in ((row[0], tot), (row[1], exd)):
                if not v:
                    continue
                jitter = np.linspace(-0.15, 0.15, len(v))
                ax.scatter(i + jitter, v, s=10, color=color[s], alpha=0.7)
                sd = np.std(v, ddof=1) if len(v) > 1 else 0.0
                ax.errorbar(i, np.mean(v), yerr=sd, fmt="_k", ms=14, capsize=4)
        for ax in row:
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        row[0].set(
            ylabel="shortfall vs arrival mid (bps)",
            title=f"{ds}: total shortfall per run (dots), mean ± std (bars)",
        )
        row[1].set(
            ylabel="spread + impact minus TWAP's (bps)",
            title=f"{ds}: spread + impact vs TWAP on the same books (< 0: cheaper)",
        )
    fig.tight_layout()
    p = out / "shortfall.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        lim = 0.0
        for s in order:
            if not s.startswith("mpc-"):
                continue
            pr, re_ = [], []
            for r in results:
                if r.dataset != ds or r.strategy != s:
                    continue
                for sl in r.slices:
                    q = sl.get("filled_qty") or 0.0
                    g = sl.get("predicted_cost_filled")
                    if g is None or not q > 0:
                        continue
                    scale = 1e4 / (q * float(sl["mid"]))
                    pr.append(float(g) * scale)
                    re_.append(float(sl["realized_cost"]) * scale)
            if pr:
                ax.scatter(pr, re_, s=6, alpha=0.5, color=color[s], label=s)
                lim = max(lim, max(pr), max(re_))
        if lim > 0:
            ax.plot([0, lim], [0, lim], color="k", lw=0.7)
        ax.set(
            xlabel="predicted g_t(x)/(x mid) (bps)",
            ylabel="realized slice cost (bps)",
            title=f"{ds}: MPC predicted vs realized, per slice",
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    p = out / "predicted_vs_realized.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths
