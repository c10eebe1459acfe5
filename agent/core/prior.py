"""The prior intraday profile of a symbol with no earlier day, from other symbols' days (pure).

The committed parameters (``agent/data/prior_profile.json``, rebuilt by
``scripts/build_prior_profile.py``) hold, for every symbol-day they were estimated from, the
time-of-day multipliers of beta, gamma and the total cost (``IntradayProfile.to_dict``, per
side), the share of the day's volume per bucket, and the AR(1) dynamics of the deseasonalised
log levels. The prior for a symbol is the geometric mean of the multipliers (arithmetic mean of
volume shares and dynamics) over the *other* symbols: leave one symbol out, so a result on a
symbol is never in-sample for the prior it used. Buckets are UTC; when the symbol's session
opens at another UTC time than the days the prior came from (daylight saving, another venue),
``open_utc_s`` shifts the buckets by whole buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.core.forecast import ArPrior
from agent.impact.profile import IntradayProfile

__all__ = ["Prior", "prior_from_dict"]


@dataclass(frozen=True, slots=True)
class Prior:
    """What the prior says about a symbol without an earlier day.

    Attributes:
        profile: Multipliers of beta, gamma and the cost by UTC bucket (``source`` names the
            symbols it came from).
        volume_share: Expected share of the session's volume per bucket, shape (B,), sums to 1.
        ar: Prior of the AR(1) dynamics of the forecast.
        symbols: The symbols it was estimated from.
    """

    profile: IntradayProfile
    volume_share: NDArray[np.float64]
    ar: ArPrior
    symbols: tuple[str, ...]


def prior_from_dict(
    d: dict[str, Any], symbol: str, side: str = "buy", open_utc_s: float | None = None
) -> Prior:
    """Build the leave-one-symbol-out prior of ``symbol`` from the committed parameters.

    Args:
        d: The parsed ``prior_profile.json``.
        symbol: The symbol traded; its own entry, if any, is left out.
        side: ``"buy"`` or ``"sell"``.
        open_utc_s: The symbol's session open, seconds after UTC midnight; None keeps the
            buckets as estimated (``d["session_open_utc_s"]``).

    Raises:
        ValueError: If no other symbol is in the file, or the side is unknown.
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    others = sorted(s for s in d["symbols"] if s.upper() != symbol.upper())
    if not others:
        raise ValueError(f"the prior file holds no symbol other than {symbol!r}")
    profs = [IntradayProfile.from_dict(d["symbols"][s][side]) for s in others]
    bucket_ns = profs[0].bucket_ns
    if any(p.bucket_ns != bucket_ns for p in profs):
        raise ValueError("prior profiles of different bucket widths cannot be combined")
    shift = 0
    if open_utc_s is not None:
        shift = round((open_utc_s - float(d["session_open_utc_s"])) * 1e9 / bucket_ns)

    def geo(name: str) -> NDArray[np.float64]:
        logs = np.mean([np.log(getattr(p, name)) for p in profs], axis=0)
        return np.roll(np.exp(logs), shift)

    vol = np.roll(np.mean([d["symbols"][s]["volume_share"] for s in others], axis=0), shift)
    vol = vol / vol.sum() if vol.sum() > 0 else np.full(vol.size, 1.0 / vol.size)
    profile = IntradayProfile(
        bucket_ns,
        geo("beta_mult"),
        geo("gamma_mult"),
        geo("cost_mult"),
        np.roll(np.sum([p.n_snapshots for p in profs], axis=0), shift),
        float("nan"),
        "prior:" + "+".join(others),
    )
    ars = [d["symbols"][s]["ar"] for s in others]
    ar = ArPrior(
        theta_per_s=tuple(np.mean([a["theta_per_s"] for a in ars], axis=0).tolist()),
        stat_var=tuple(np.mean([a["stat_var"] for a in ars], axis=0).tolist()),
        source="prior:" + "+".join(others),
    )
    return Prior(profile, vol, ar, tuple(others))
