"""Config loading: every user error is one line naming the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError

GOOD = """
[feed]
kind = "replay"
files = { SYM = "data.csv" }

[[orders]]
id = "o1"
symbol = "SYM"
side = "buy"
quantity = 1000
start = 2025-06-02T13:30:00Z
end = 2025-06-02T14:30:00Z
period_s = 300
lot = 100
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data.csv").write_text("x\n")
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_good_config_resolves_paths_relative_to_file(tmp_path):
    cfg, sha = load_config(write(tmp_path, GOOD))
    assert cfg.feed.files["SYM"] == (tmp_path / "data.csv").resolve()
    assert cfg.orders[0].start_ns == 1_748_871_000_000_000_000
    assert len(sha) == 64


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("quantity = 1000", "quantity = -5"), "orders[0].quantity"),
        (("quantity = 1000", 'quantity = "many"'), "orders[0].quantity"),
        (("lot = 100", "lot = 100\nlots = 3"), "orders[0].lots"),
        (("end = 2025-06-02T14:30:00Z", "end = 2025-06-02T13:00:00Z"), "end"),
        (('side = "buy"', 'side = "long"'), "orders[0].side"),
        (('files = { SYM = "data.csv" }', 'files = { SYM = "nope.csv" }'), "feed.files.SYM"),
        (('symbol = "SYM"', 'symbol = "OTHER"'), "orders[0].symbol"),
        (("[feed]", "[feed]\nspeeed = 2"), "feed.speeed"),
        (("[feed]", '[broker]\nkind = "fix"\nport = 70000\n[feed]'), "broker.port"),
        (("[feed]", '[broker]\nkind = "fax"\n[feed]'), "broker.kind"),
        (("start = 2025-06-02T13:30:00Z", 'start = "2025-06-02T13:30:00"'), "timezone"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, edit, expected):
    p = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert str(p) in msg and expected in msg and "\n" not in msg


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[feed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
