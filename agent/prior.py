"""Load the committed prior intraday profile (``agent/data/prior_profile.json``).

The file is package data read through ``importlib.resources``, or any path given; the
combination (leave one symbol out) is the pure ``agent.core.prior.prior_from_dict``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from agent.core.prior import Prior, prior_from_dict
from agent.impact.profile import IntradayProfile

__all__ = ["load_prior", "load_prior_file", "packaged_prior", "read_prior_dict"]


def read_prior_dict(path: str | Path | None = None) -> dict[str, Any]:
    """Return the parsed prior file (the packaged one when ``path`` is None)."""
    if path is None:
        text = resources.files("agent").joinpath("data", "prior_profile.json").read_text()
    else:
        text = Path(path).read_text()
    data = json.loads(text)
    if not isinstance(data, dict):
        where = "the packaged prior" if path is None else str(path)
        raise ValueError(f"{where}: a prior file holds a JSON object, got {type(data).__name__}")
    return data


def load_prior_file(
    symbol: str,
    side: str = "buy",
    path: str | Path | None = None,
    open_utc_s: float | None = None,
) -> Prior:
    """Return the leave-one-symbol-out prior of ``symbol`` (profile, volume shares, dynamics)."""
    return prior_from_dict(read_prior_dict(path), symbol, side, open_utc_s)


@functools.lru_cache(maxsize=64)
def packaged_prior(symbol: str, side: str = "buy") -> Prior | None:
    """Return the packaged leave-one-symbol-out prior of ``symbol`` (None when unreadable)."""
    try:
        return load_prior_file(symbol, side)
    except (OSError, ValueError, KeyError):
        return None


def load_prior(symbol: str, side: str = "buy", path: str | Path | None = None) -> IntradayProfile:
    """Return only the prior intraday profile of ``symbol`` (others' days, never its own)."""
    return load_prior_file(symbol, side, path).profile
