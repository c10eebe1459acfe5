"""State paths of the daemon (journal, control socket, FIX sequence store): checked at start.

A path that exists with the wrong type (a directory where the journal goes, a regular file
where the control socket goes) is refused with one ``ConfigError`` line naming the key: the
daemon never deletes or overwrites what it did not create. Missing folders are created with
owner-only permissions (0700), each level that did not exist; folders that exist are left as
they are (``/tmp`` keeps its mode).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = ["check_state_path", "check_state_paths", "make_private_dir"]

Kind = Literal["file", "socket"]
_WHAT = {"file": "a regular file", "socket": "a Unix socket"}


def make_private_dir(folder: str | Path) -> None:
    """Create ``folder`` and its missing parents with mode 0700 (existing ones untouched).

    Raises:
        ConfigError: a part of the path exists and is not a directory.
    """
    folder = Path(folder)
    missing: list[Path] = []
    p = folder
    while not p.exists():
        if p.is_symlink():  # a dangling link: do not create through it
            raise ConfigError(f"{p}: is a broken symbolic link, not a folder")
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: exists and is not a folder")
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            if not d.is_dir():
                raise ConfigError(f"{d}: exists and is not a folder") from None
            continue
        except OSError as e:
            raise ConfigError(f"{d}: cannot create folder ({e.strerror or e})") from e
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask


def check_state_path(path: str | Path, kind: Kind, key: str) -> Path:
    """Refuse a state path that exists with the wrong type; create its folder (0700).

    Args:
        path: The journal file, control socket or sequence store.
        kind: What it must be if it exists.
        key: Config key for the message, e.g. ``journal.path``.

    Returns:
        The path.

    Raises:
        ConfigError: it exists as something else (directory, regular file, device, FIFO,
            socket), or its folder cannot be made; the message names ``key`` and the path.
    """
    p = Path(path)
    try:
        # A journal or store may be a link to a file; a socket is only ever ours, never a link.
        st = p.stat() if kind == "file" and p.exists() else p.lstat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"{key}: {p}: cannot inspect ({e.strerror or e})") from e
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"{key}: {p}: is a symbolic link; want {_WHAT[kind]} or no file")
        ok = stat.S_ISREG(st.st_mode) if kind == "file" else stat.S_ISSOCK(st.st_mode)
        if not ok:
            raise ConfigError(
                f"{key}: {p}: exists and is {_describe(st.st_mode)}, not {_WHAT[kind]} "
                "(refused: it is not ours to replace)"
            )
    try:
        make_private_dir(p.parent)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    return p


def _describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_state_paths(cfg: AgentConfig) -> None:
    """Check every state path of a config before anything is opened (one line on a refusal).

    Raises:
        ConfigError: see ``check_state_path``; names ``journal.path``, ``control.socket`` or
            ``broker.store_path``.
    """
    if cfg.journal.path is not None:
        check_state_path(cfg.journal.path, "file", "journal.path")
    if cfg.control.socket is not None:
        check_state_path(cfg.control.socket, "socket", "control.socket")
    if cfg.broker.store_path is not None:
        check_state_path(cfg.broker.store_path, "file", "broker.store_path")
