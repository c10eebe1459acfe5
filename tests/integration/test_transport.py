"""Transport and secrets on a real websocket (issue 17 items 4 and 6).

``wss://`` against a TLS server on loopback with a throw-away certificate (made by the
``openssl`` command): refused by default (the certificate is checked), accepted with its CA
given; clear-text ``ws://`` to a non-loopback host needs ``allow_insecure``; and a whole run on a
URL carrying a token in its query string and user-info leaves it in no log line, no journal and
no status reply (the password canary of tests/integration/test_fix.py, for URLs and headers).
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import ssl
import subprocess

import pytest
import structlog
from structlog.testing import capture_logs
from websockets.asyncio.server import serve

from agent.config import load_config
from agent.daemon import Daemon
from agent.errors import ConfigError
from agent.journal import Journal
from agent.logs import configure_logging
from agent.runner import make_feed_factory
from feeds.live import WebSocketFeed
from feeds.server import FeedServer
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLE = REPO / "replay_data" / "SYNA_2025-06-02.mbp-10.csv.gz"
FRAME = (
    '{"type":"mbp10","symbol":"SYNA","ts_event":1,'
    '"bid_px":[10.0],"bid_sz":[1],"ask_px":[10.1],"ask_sz":[1]}'
)
CANARY = "CANARY-5c0d3e"


@pytest.fixture
def cert(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return crt, key


async def _tls_server(crt, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)

    async def handler(ws):
        while True:
            await ws.send(FRAME)
            await asyncio.sleep(0.02)

    return await serve(handler, "127.0.0.1", 0, ssl=ctx)


async def _first_event(feed: WebSocketFeed, logs, names: set[str], bound: int = 200):
    """Read the feed until a log line named in ``names`` (at most ``bound`` heartbeats)."""
    got = 0
    async for b in feed.updates():
        got += len(b)
        if any(e["event"] in names for e in logs) or bound == 0:
            break
        bound -= 1
    return got


async def test_wss_checks_the_certificate_by_default(cert):
    crt, key = cert
    server = await _tls_server(crt, key)
    port = next(iter(server.sockets)).getsockname()[1]
    url = f"wss://127.0.0.1:{port}/SYNA"
    try:
        with capture_logs() as logs:
            feed = WebSocketFeed(url, "SYNA", heartbeat_s=0.02, reconnect_max_s=0.05)
            got = await _first_event(feed, logs, {"feed.connect_failed"})
            await feed.aclose()
        failed = [e for e in logs if e["event"] == "feed.connect_failed"]
        assert got == 0 and failed and "CERTIFICATE_VERIFY_FAILED" in failed[0]["error"]
        with capture_logs() as logs:
            trust = ssl.create_default_context(cafile=str(crt))
            feed = WebSocketFeed(url, "SYNA", heartbeat_s=0.02, ssl_context=trust)
            async for b in feed.updates():
                if len(b):
                    break
            await feed.aclose()
        assert feed.stats.books >= 1 and feed.stats.connects == 1
    finally:
        server.close()
        await server.wait_closed()


def test_clear_text_to_a_remote_host_needs_allow_insecure(tmp_path, cert):
    base = (
        '[feed]\nkind = "websocket"\nurls = {{ S = "{url}" }}\n{extra}'
        '[control]\nsocket = "s"\nkeep_running = true\n'
    )
    p = tmp_path / "c.toml"

    def load(url, extra=""):
        p.write_text(base.format(url=url, extra=extra))
        return load_config(p)[0]

    with pytest.raises(ConfigError, match=r"feed\.urls\.S: clear-text ws:// .*allow_insecure"):
        load("ws://feed.example.com:9000/s")
    for ok in ("ws://127.0.0.1:1/s", "ws://127.8.0.1:1/s", "ws://localhost/s", "ws://[::1]:1/"):
        load(ok)
    load("wss://feed.example.com/s")
    assert load("ws://feed.example.com/s", "allow_insecure = true\n").feed.allow_insecure
    crt, _ = cert
    cfg = load("wss://127.0.0.1:1/s", f'ca_file = "{crt.name}"\n')
    assert cfg.feed.ca_file == crt
    with pytest.raises(ConfigError, match=r"feed\.ca_file: file not found"):
        load("wss://127.0.0.1:1/s", 'ca_file = "missing.pem"\n')


async def test_url_token_and_user_info_canary_is_in_no_log_journal_or_reply(tmp_path):
    """A whole live run whose URL holds the canary twice (user-info, query token): not in any
    rendered log line (the processor) nor in any captured one (the feed logs it redacted), not
    in the journal, not in the status reply."""
    async with FeedServer(SAMPLE, speed=3600, start_delay_s=0.3) as srv:
        url = f"ws://feeduser:{CANARY}@127.0.0.1:{srv.port}/SYNA?token={CANARY}"
        (tmp_path / "c.toml").write_text(
            f'[feed]\nkind = "websocket"\nwall_clock = false\nurls = {{ SYNA = "{url}" }}\n'
            "heartbeat_s = 0.05\n"
            '[broker]\ncollar_bps = 100\n[journal]\npath = "j.sqlite"\n'
            '[[orders]]\nid = "L"\nsymbol = "SYNA"\nside = "buy"\nquantity = 2000\n'
            "start = 2025-06-02T13:35:00Z\nend = 2025-06-02T13:55:00Z\nperiod_s = 300\n"
            "lot = 100\n"
        )
        cfg, _ = load_config(tmp_path / "c.toml")
        out = io.StringIO()
        configure_logging("json", "debug", stream=out)
        journal = Journal(cfg.journal.path)
        d = Daemon(cfg, make_feed_factory(cfg), None, None, journal, None)
        structlog.get_logger().info("daemon.config_loaded", config=cfg.model_dump(mode="json"))
        (s,) = await asyncio.wait_for(d.run(), 60)
        reply = await d.command({"cmd": "status"})
        journal.close()
        structlog.reset_defaults()
        with capture_logs() as logs:
            feed = WebSocketFeed(url, "SYNA", heartbeat_s=0.05)
            await _first_event(feed, logs, {"feed.connected"})
            await feed.aclose()
    assert s.filled_qty > 0
    assert "feed.connected" in out.getvalue() and "127.0.0.1" in out.getvalue()
    assert CANARY not in out.getvalue()
    assert any(e["event"] == "feed.connected" for e in logs) and CANARY not in repr(logs)
    assert CANARY not in json.dumps(reply)
    for f in tmp_path.iterdir():
        if f.is_file() and f.name != "c.toml":
            assert CANARY.encode() not in f.read_bytes(), f.name
