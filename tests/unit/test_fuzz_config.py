"""Seeded config fuzz (issue 18 item 8): mutated copies of the shipped configs.

Every mutation is either rejected with one ``ConfigError`` line that names the file and the
mutated key, or accepted; accepted mutations must be of a kind reviewed as legitimate
(``_LEGITIMATE``): dropping a key that has a default, or a value the key's documented range
allows. Wrong types, unknown keys, NaN and infinities must always be rejected.
"""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from tests.conftest import REPO

CONFIGS = ["replay.toml", "live-local.toml"]
FAST, FULL = 60, 600

# Mutation kinds that may be accepted, and why (the review of the accepted cases):
_LEGITIMATE = {
    "drop": "a key with a default may be left out",
    "scale": "the value times 2 or 1/2 stays in the key's range for most keys",
    "zero": "0 is documented as 'off' or 'as fast as possible' for several keys",
    "same_type_string": "a free-form string (ids, paths) accepts any text",
}
# Must always be rejected:
_ALWAYS_BAD = ("unknown_key", "wrong_type", "nan", "inf")


def _leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _leaves(v, (*path, k))
    elif isinstance(doc, list) and doc and all(isinstance(v, dict) for v in doc):
        for i, v in enumerate(doc):
            out += _leaves(v, (*path, i))
    else:
        out.append(path)
    return out


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    if value is _DROP:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


_DROP = object()


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, int | str):
        return repr(v) if isinstance(v, int) else '"' + v.replace("\\", "/").replace('"', "") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return '"' + str(v) + '"'  # datetimes and paths as text (TOML datetimes stay valid below)


def _dump(doc: dict) -> str:
    lines: list[str] = []
    for k, v in doc.items():
        if not isinstance(v, dict | list) or (
            isinstance(v, list) and not all(isinstance(x, dict) for x in v)
        ):
            lines.append(f"{k} = {_toml(v)}")
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [
                    f"{kk} = {_toml(vv) if not hasattr(vv, 'isoformat') else vv.isoformat()}"
                    for kk, vv in item.items()
                ]
    return "\n".join(lines) + "\n"


def _mutate(rng: random.Random, doc: dict) -> tuple[str, tuple, Any]:
    path = rng.choice(_leaves(doc))
    cur: Any = doc
    for p in path:
        cur = cur[p]
    kind = rng.choice(
        ["drop", "unknown_key", "wrong_type", "nan", "inf", "scale", "zero", "negative", "string"]
    )
    if kind == "drop":
        return kind, path, _DROP
    if kind == "unknown_key":
        return kind, (*path[:-1], "bogus_key"), 1
    if isinstance(cur, bool):
        return "wrong_type", path, "maybe"
    if isinstance(cur, int | float):
        if kind == "nan":
            return kind, path, float("nan")
        if kind == "inf":
            return kind, path, float("inf")
        if kind == "scale":
            return kind, path, cur * rng.choice([2, 0.5]) if isinstance(cur, float) else cur * 2
        if kind == "zero":
            return kind, path, 0
        if kind == "negative":
            return kind, path, -abs(cur) - 1
        return "wrong_type", path, "ten"
    if isinstance(cur, str):
        if kind in ("string", "scale"):
            return "same_type_string", path, cur + "x"
        return "wrong_type", path, 12345
    return "wrong_type", path, 7


def _run(tmp_path: Path, n: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for k in range(n):
        name = CONFIGS[k % len(CONFIGS)]
        src = REPO / "config" / name
        doc = tomllib.loads(src.read_text())
        # Make relative paths absolute so the copy in tmp_path finds the data.
        feed = doc.get("feed", {})
        feed["files"] = {
            s: str((src.parent / p).resolve()) for s, p in feed.get("files", {}).items()
        }
        est = doc.get("estimation", {})
        if "history" in est:
            est["history"] = [str((src.parent / p).resolve()) for p in est["history"]]
        kind, path, value = _mutate(rng, doc)
        _set(doc, path, value)
        p = tmp_path / f"c{k}.toml"
        p.write_text(_dump(doc))
        key = ".".join(str(x) for x in path if not isinstance(x, int))
        try:
            load_config(p)
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg.strip(), msg
            assert str(p) in msg, msg
            leaf = str(path[-1])
            assert leaf in msg or kind == "drop", (kind, key, msg)
            outcomes[f"rejected:{kind}"] += 1
            continue
        if kind in _ALWAYS_BAD:
            outcomes[f"BAD:accepted:{kind}:{key}={value!r}"] += 1
        elif kind == "negative":
            outcomes[f"accepted:negative:{key}"] += 1
        else:
            assert kind in _LEGITIMATE, (kind, key, value)
            outcomes[f"accepted:{kind}"] += 1
            if kind in ("zero", "same_type_string"):
                outcomes[f"accepted:{kind}:{key}"] += 1
    print("fuzz.configs", n, dict(sorted(outcomes.items())))
    return outcomes


# Keys where a negative value is accepted, reviewed: none is legitimate so far.
_NEGATIVE_OK: set[str] = set()


# Keys where 0 is accepted, reviewed: each documents 0 as "off" / "as fast as possible" / a
# zero delay, or is a count where 0 is meaningful.
_ZERO_OK = {
    "feed.speed", "broker.latency_ms", "estimation.max_size", "risk.max_child_notional",
    "risk.max_collar_bps", "risk.stale_book_s", "mpc.final_retry_s", "orders.max_child_qty",
    "broker.collar_bps", "estimation.min_snapshots",
}  # fmt: skip
# Free-text keys where any string is fine: ids, symbols are checked against the feed below.
_TEXT_OK = {"orders.id", "logging.format", "orders.symbol"}


def _check(out: Counter[str]) -> None:
    bad = sorted(k for k in out if k.startswith("BAD:"))
    assert not bad, f"illegitimate configs accepted: {bad}"
    zero = {k.split(":", 2)[2] for k in out if k.startswith("accepted:zero:")}
    assert zero <= _ZERO_OK, f"0 accepted for {sorted(zero - _ZERO_OK)}"
    text = {k.split(":", 2)[2] for k in out if k.startswith("accepted:same_type_string:")}
    assert text <= _TEXT_OK, f"any text accepted for {sorted(text - _TEXT_OK)}"
    neg = {k.split(":", 2)[2] for k in out if k.startswith("accepted:negative:")}
    assert neg <= _NEGATIVE_OK, f"negative values accepted for {sorted(neg)}"


def test_config_fuzz_fast_subset(tmp_path: Path) -> None:
    """60 mutated configs: one-line errors naming the key; nothing illegitimate accepted."""
    _check(_run(tmp_path, FAST, 8))


@pytest.mark.slow
def test_config_fuzz_full(tmp_path: Path) -> None:
    """600 mutated configs, same rules."""
    _check(_run(tmp_path, FULL, 9))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("quantity = 150000", "quantity = inf", "quantity"),  # was an OverflowError traceback
        ("speed = 0 ", "speed = nan ", "speed"),
        ("start = 2025-06-02T13:35:00Z", "start = 7", "start"),  # was 1970-01-01T00:00:07
    ],
)
def test_found_by_the_fuzz_are_one_line_errors(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    """Mutations the campaign found accepted or crashing are now one-line ConfigErrors."""
    src = REPO / "config" / "replay.toml"
    text = src.read_text().replace("../replay_data", str(REPO / "replay_data"))
    assert old in text
    p = tmp_path / "c.toml"
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert key in str(e.value) and "\n" not in str(e.value).strip()
