"""Secrets never leave (issue 17 item 4): URLs, secret keys, tracebacks, config dumps."""

from __future__ import annotations

import io

import pytest
import structlog

from agent.config import load_config, redacted_dump
from agent.errors import ConfigError
from agent.logs import configure_logging
from feeds.redact import redact_text, redact_url, redact_value

CANARY = "CANARY-91e2"


@pytest.mark.parametrize(
    ("url", "want"),
    [
        (
            f"wss://user:{CANARY}@feed.example:9443/ws?token={CANARY}",
            "wss://***@feed.example:9443/ws?token=***",
        ),
        (f"wss://{CANARY}@h/p", "wss://***@h/p"),
        (
            f"ws://127.0.0.1:8765/SYNA?a=1&apikey={CANARY}",
            "ws://127.0.0.1:8765/SYNA?a=***&apikey=***",
        ),
        (f"wss://h/p?{CANARY}", "wss://h/p?***"),
        (f"wss://h/p#{CANARY}", "wss://h/p#***"),
        ("ws://127.0.0.1:8765/SYNA", "ws://127.0.0.1:8765/SYNA"),
    ],
)
def test_redact_url_keeps_where_and_masks_credentials(url, want):
    assert redact_url(url) == want


def test_redact_text_and_values():
    msg = f"connect to wss://u:{CANARY}@h/x?t={CANARY}, then retry."
    assert CANARY not in redact_text(msg) and redact_text(msg).endswith(", then retry.")
    v = redact_value(
        {
            "headers": {"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY, "Accept": "a"},
            "password": CANARY,
            "password_env": "VENUE_PW",
            "urls": {"A": f"wss://h/?token={CANARY}"},
            "max_token_len": 5,
        }
    )
    assert CANARY not in repr(v)
    assert v["password_env"] == "VENUE_PW" and v["max_token_len"] == 5
    assert v["headers"]["Accept"] == "a"


def test_the_log_processor_masks_urls_headers_and_tracebacks():
    """Whatever a component logs (a URL, headers, an exception whose message holds the URL),
    the rendered line has no secret, in JSON and console format."""
    for fmt in ("json", "console"):
        out = io.StringIO()
        configure_logging(fmt, "debug", stream=out)
        log = structlog.get_logger()
        log.info("feed.connected", url=f"wss://u:{CANARY}@h/?token={CANARY}")
        log.info("x.request", headers={"Authorization": CANARY, "Cookie": CANARY})
        try:
            raise OSError(f"cannot reach wss://h/?key={CANARY}")
        except OSError:
            log.exception("feed.crashed")
        assert CANARY not in out.getvalue(), fmt
        assert "wss://***@h/?token=***" in out.getvalue()
        structlog.reset_defaults()


def test_config_errors_and_the_logged_config_carry_no_url_secret(tmp_path):
    base = (
        '[feed]\nkind = "websocket"\nurls = {{ S = "{url}" }}\n'
        '[control]\nsocket = "s"\nkeep_running = true\n'
    )
    p = tmp_path / "c.toml"
    for bad in (
        f"http://u:{CANARY}@h/?token={CANARY}",
        f"ws://u:{CANARY}@feed.example/?t={CANARY}",
    ):
        p.write_text(base.format(url=bad))
        with pytest.raises(ConfigError) as ei:
            load_config(p)
        assert CANARY not in str(ei.value) and "feed.urls" in str(ei.value)
    p.write_text(base.format(url=f"wss://u:{CANARY}@feed.example/?token={CANARY}"))
    cfg, _ = load_config(p)
    assert CANARY not in repr(redacted_dump(cfg))
