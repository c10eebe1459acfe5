"""Figures of a calibration (matplotlib object API, Agg; no pyplot global state).

Every function takes the strict-JSON dict that ``exec-agent calibrate`` writes to
``impact.json`` (so figures can be redrawn from the file alone) and returns the paths written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["draw_all", "draw_fit", "draw_profile", "draw_summary"]

_DPI = 90
_MODELS = (
    ("quadratic", "quadratic", "-"),
    ("quadratic_visible", "quadratic (visible book)", "-."),
    ("power", "power law", "--"),
    ("piecewise_power", "piecewise power", ":"),
)


def _arr(v: Any) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def _model_slippage(name: str, m: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Per-share slippage s(x) of a fitted model from its JSON parameters."""
    if m.get("status") != "ok":
        return np.full_like(x, np.nan)
    if name.startswith("quadratic"):
        return np.asarray(m["beta"] + m["gamma"] * x, dtype=np.float64)
    if name == "power":
        return np.asarray(m["a"] * np.power(x, m["b"]), dtype=np.float64)
    bps = np.array(m["breakpoints"], dtype=np.float64)
    k = np.searchsorted(bps, x, side="right")
    return np.asarray(np.array(m["a"])[k] * np.power(x, np.array(m["b"])[k]), dtype=np.float64)


def _legend(ax: Any, loc: str = "best") -> None:
    """Draw the legend only when something is labelled (an empty legend warns)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=loc)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI)
    return path


def draw_summary(result: dict[str, Any], out: Path) -> Path:
    """Draw the specification's panels plus the depth diagnostic into ``summary.png``.

    Panels: (a) mean per-share slippage with +-1 std error bars per ticker and side; (b) the
    optimal schedule of the parent order per ticker (buy side; solid: forecast profile, dashed:
    in-sample profile); (c) fitted quadratic beta and gamma per ticker and side (log scale);
    (d) share of snapshots whose visible depth is below the size.
    """
    tickers = result["tickers"]
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    ax = fig.subplots(2, 2)
    a_imp, a_sched, a_par, a_depth = ax[0, 0], ax[0, 1], ax[1, 0], ax[1, 1]
    colors = {t: f"C{i}" for i, t in enumerate(tickers)}
    for t, data in tickers.items():
        for side, ls in (("buy", "-"), ("sell", "--")):
            if side not in data:
                continue
            c = data[side]["curve"]
            x = _arr(c["sizes"])
            s = _arr(c["mean_cost"]) / x
            e = _arr(c["std_cost"]) / x
            step = max(1, x.size // 20)
            a_imp.errorbar(
                x[::step],
                s[::step],
                yerr=e[::step],
                fmt="o",
                ms=3,
                capsize=2,
                color=colors[t],
                alpha=0.7,
            )
            a_imp.plot(x, s, ls, color=colors[t], label=f"{t} {side}")
            a_depth.plot(x, _arr(c["frac_beyond_depth"]), ls, color=colors[t], label=f"{t} {side}")
        sched = data.get("buy", data.get("sell", {})).get("schedule", {})
        if sched.get("status") == "ok":
            a_sched.plot(
                np.arange(len(sched["x"])),
                sched["x"],
                "o-",
                color=colors[t],
                label=f"{t} (forecast profile)",
            )
        sched2 = data.get("buy", data.get("sell", {})).get("schedule_in_sample_profile", {})
        if sched2.get("status") == "ok":
            a_sched.plot(
                np.arange(len(sched2["x"])),
                sched2["x"],
                "x--",
                color=colors[t],
                alpha=0.6,
                label=f"{t} (in-sample profile)",
            )
    a_imp.set(
        title="(a) Temporary impact: mean slippage per share, +-1 std",
        xlabel="order size x (shares)",
        ylabel="g(x)/x (currency per share)",
    )
    a_imp.set_yscale("log")
    a_sched.set(
        title="(b) Optimal schedule of the parent order (quadratic g, buy)",
        xlabel="period",
        ylabel="shares",
    )
    a_depth.set(
        title="(d) Snapshots whose 10 visible levels hold fewer than x shares",
        xlabel="order size x (shares)",
        ylabel="share of snapshots",
        ylim=(-0.02, 1.02),
    )
    names, betas, gammas = [], [], []
    for t, data in tickers.items():
        for side in ("buy", "sell"):
            if side in data:
                q = data[side]["models"]["quadratic"]
                names.append(f"{t}\n{side}")
                betas.append(q["beta"] if q["beta"] is not None else np.nan)
                gammas.append(q["gamma"] if q["gamma"] is not None else np.nan)
    pos = np.arange(len(names))
    a_par.bar(pos - 0.2, betas, width=0.4, label="beta (currency/share)")
    a_par.bar(pos + 0.2, gammas, width=0.4, label="gamma (currency/share^2)")
    a_par.set_xticks(pos, names)
    a_par.set_yscale("log")
    a_par.set(title="(c) Quadratic model g(x) = beta x + gamma x^2")
    for a in (a_imp, a_sched, a_par, a_depth):
        a.grid(True, alpha=0.3)
        _legend(a)
    return _save(fig, out / "summary.png")


def draw_fit(ticker: str, data: dict[str, Any], out: Path) -> Path:
    """Draw fitted models against the empirical curve, per side, into ``fit_<ticker>.png``."""
    sides = [s for s in ("buy", "sell") if s in data]
    fig = Figure(figsize=(6 * len(sides), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sides)))
    for a, side in zip(axes, sides, strict=True):
        c = data[side]["curve"]
        x = _arr(c["sizes"])
        s = _arr(c["mean_cost"]) / x
        e = _arr(c["std_cost"]) / x
        frac = _arr(c["frac_beyond_depth"])
        a.fill_between(x, s - e, s + e, color="0.85", label="+-1 std across snapshots")
        a.plot(x, s, "k.", ms=4, label="empirical mean")
        for name, label, ls in _MODELS:
            m = data[side]["models"].get(name)
            if m is None:
                continue
            r2 = m.get("r2")
            a.plot(
                x,
                _model_slippage(name, m, x),
                ls,
                lw=1.6,
                label=f"{label} (R2={r2:.4f})" if r2 is not None else label,
            )
        beyond = np.flatnonzero(frac > 0.05)
        if beyond.size:
            a.axvspan(
                x[beyond[0]],
                x[-1],
                color="tab:red",
                alpha=0.06,
                label="> 5% of snapshots past visible depth",
            )
        a2 = a.twinx()
        a2.plot(x, frac, color="tab:red", lw=1, alpha=0.7)
        a2.set_ylabel("share past visible depth", color="tab:red")
        a2.set_ylim(0, 1.02)
        pol = data[side]["beyond_depth"]["policy"]
        a.set(
            title=f"{ticker} {side}: per-share slippage (beyond depth: {pol})",
            xlabel="order size x (shares)",
            ylabel="g(x)/x (currency per share)",
        )
        a.grid(True, alpha=0.3)
        _legend(a, loc="upper left")
    return _save(fig, out / f"fit_{ticker}.png")


def draw_profile(ticker: str, data: dict[str, Any], out: Path) -> Path:
    """Draw the intraday multipliers (in-sample and forecast) into ``profile_<ticker>.png``."""
    sides = [s for s in ("buy", "sell") if s in data]
    fig = Figure(figsize=(6 * len(sides), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sides)))
    for a, side in zip(axes, sides, strict=True):
        p = data[side]["intraday_in_sample"]
        n = np.array(p["n_snapshots"])
        has = np.flatnonzero(n > 0)
        if has.size:
            idx = np.arange(has[0], has[-1] + 1)
            hours = idx * p["bucket_s"] / 3600
            for key, label, mk in (
                ("beta_mult", "beta (spread part)", "o-"),
                ("gamma_mult", "gamma (depth part)", "s-"),
                ("cost_mult", f"g({p['ref_size']:.0f} sh)", "^-"),
            ):
                a.plot(hours, np.array(p[key])[idx], mk, ms=4, label=f"{label}, in-sample")
            f = data[side]["forecast_profile"]
            if f["source"] != "flat":
                fi = np.arange(len(f["cost_mult"]))
                fh = fi * f["bucket_s"] / 3600
                keep = (fh >= hours[0]) & (fh <= hours[-1])
                a.plot(
                    fh[keep],
                    np.array(f["cost_mult"])[keep],
                    "k--",
                    label="g multiplier, forecast (history)",
                )
        a.axhline(1.0, color="0.5", lw=0.8)
        a.set(
            title=f"{ticker} {side}: intraday liquidity multipliers",
            xlabel="bucket start (hours, UTC)",
            ylabel="multiplier vs whole sample",
        )
        a.set_yscale("log")
        a.grid(True, alpha=0.3)
        _legend(a)
    return _save(fig, out / f"profile_{ticker}.png")


def draw_all(result: dict[str, Any], out: Path) -> list[Path]:
    """Draw every figure of a calibration into ``out``; return the paths."""
    out = Path(out)
    paths = [draw_summary(result, out)]
    for t, data in result["tickers"].items():
        paths.append(draw_fit(t, data, out))
        paths.append(draw_profile(t, data, out))
    return paths
