"""State paths (issue 17 item 5): nothing that is not ours is deleted or overwritten."""

from __future__ import annotations

import os
import socket

import pytest

from agent.config import load_config
from agent.control import ControlServer, send_command
from agent.errors import ConfigError
from agent.paths import check_state_path, check_state_paths


async def _ok(req):
    return {"ok": True}


async def test_the_control_socket_never_deletes_a_regular_file(tmp_path):
    """Before: control.socket pointing at a regular file deleted that file."""
    f = tmp_path / "precious.txt"
    f.write_text("keep me")
    with pytest.raises(ConfigError, match=r"control\.socket: .*is a regular file, not a Unix"):
        await ControlServer(f, _ok).start()
    assert f.read_text() == "keep me"
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        await ControlServer(tmp_path / "adir", _ok).start()


async def test_a_stale_socket_is_replaced_and_a_new_folder_is_private(tmp_path):
    stale = tmp_path / "run" / "ctl.sock"
    stale.parent.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on
    server = await ControlServer(stale, _ok).start()
    assert (await send_command(stale, {"cmd": "status"}))["ok"]
    await server.aclose()
    fresh = tmp_path / "a" / "b" / "ctl.sock"
    server = await ControlServer(fresh, _ok).start()
    assert (fresh.stat().st_mode & 0o777) == 0o600
    assert all((d.stat().st_mode & 0o777) == 0o700 for d in (fresh.parent, fresh.parent.parent))
    await server.aclose()


def test_state_paths_of_the_wrong_type_are_refused_at_start(tmp_path):
    (tmp_path / "data.csv").write_text("x\n")
    (tmp_path / "j").mkdir()
    (tmp_path / "sock").write_text("")
    os.mkfifo(tmp_path / "fifo")
    base = (
        '[feed]\nfiles = { S = "data.csv" }\n[journal]\npath = "%s"\n[control]\nsocket = "%s"\n'
        '[broker]\nstore_path = "%s"\n'
        '[[orders]]\nid = "o"\nsymbol = "S"\nside = "buy"\nquantity = 100\n'
        "start = 2025-06-02T13:30:00Z\nend = 2025-06-02T14:30:00Z\nperiod_s = 300\n"
    )
    cases = [
        (("j", "ok.sock", "seq.json"), "journal.path"),
        (("j.sqlite", "sock", "seq.json"), "control.socket"),
        (("j.sqlite", "ok.sock", "fifo"), "broker.store_path"),
    ]
    for names, key in cases:
        p = tmp_path / "c.toml"
        p.write_text(base % names)
        cfg, _ = load_config(p)
        with pytest.raises(ConfigError) as ei:
            check_state_paths(cfg)
        assert str(ei.value).startswith(key) and "\n" not in str(ei.value)
    assert check_state_path(tmp_path / "new" / "x.sqlite", "file", "k").parent.is_dir()
