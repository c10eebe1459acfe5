"""Safety by default for ``broker.kind = "fix"``: a journal and a sequence store are required,
clear text to anything but loopback needs ``allow_insecure``, and the shipped config has both."""

from __future__ import annotations

import pytest

from agent.brokers.fix import FixBroker
from agent.config import load_config
from agent.errors import ConfigError
from tests.conftest import REPO

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"


def write(tmp_path, broker: str, journal: bool = True):
    text = f"""
[feed]
files = {{ SYNA = "{SAMPLE.as_posix()}" }}
[broker]
kind = "fix"
{broker}
[[orders]]
id = "F"
symbol = "SYNA"
side = "buy"
quantity = 1000
start = 2025-06-02T13:35:00Z
end = 2025-06-02T16:35:00Z
period_s = 600
"""
    if journal:
        text += '[journal]\npath = "state/j.sqlite"\n'
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_fix_without_a_journal_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"journal\.path: .*needs a journal"):
        load_config(write(tmp_path, 'store_path = "state/seq.json"', journal=False))


def test_fix_without_a_sequence_store_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"broker\.store_path: .*sequence store"):
        load_config(write(tmp_path, ""))


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ('host = "10.1.2.3"', False),
        ('host = "venue.example.com"', False),
        ('host = "10.1.2.3"\nallow_insecure = true', True),
        ('host = "venue.example.com"\ntls = true', True),
        ('host = "127.0.0.1"', True),
        ('host = "::1"', True),
        ('host = "localhost"', True),
    ],
)
def test_clear_text_fix_off_loopback_needs_allow_insecure(tmp_path, extra, ok):
    p = write(tmp_path, f'store_path = "state/seq.json"\n{extra}')
    if ok:
        cfg, _ = load_config(p)
        assert cfg.broker.store_path == tmp_path / "state" / "seq.json"
    else:
        with pytest.raises(ConfigError, match=r"broker\.host: clear-text FIX .*allow_insecure"):
            load_config(p)


def test_the_adapter_refuses_clear_text_off_loopback_too():
    with pytest.raises(ConfigError, match="allow_insecure"):
        FixBroker("10.1.2.3", 9878, "AGENT", "VENUE")


def test_the_shipped_fix_config_has_a_journal_and_a_store():
    cfg, _ = load_config(REPO / "config" / "fix-local.toml")
    assert cfg.broker.kind == "fix" and cfg.journal.path and cfg.broker.store_path
