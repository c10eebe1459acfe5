"""Operator control of a running daemon: stop, kill switch, and a local command channel.

``Control`` is the shared state: ``request_stop()`` (SIGTERM, SIGINT, ``stop`` command) makes
the daemon stop deciding, settle what is in flight and exit (0 if every parent
completed, else 3; ``agent.exitcodes``); ``halt()`` (SIGUSR1, ``kill``
command) is the kill switch: no new order from then on, open children cancelled at once, and
the HALTED state written to the journal so that it survives restarts until ``resume()`` is
called on purpose (``exec-agent resume`` or ``exec-agent run --resume``).

``ControlServer`` listens on a Unix socket (mode 0600: only the daemon's user can connect) and
answers one JSON object per line: ``{"cmd": "status" | "submit" | "cancel" | "kill" |
"resume" | "stop", ...}`` -> ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Every command is logged (``control.command``) with its outcome; replies and logged arguments
pass through ``feeds.redact.redact_value`` (no URL credential or secret leaves by this way).

The socket path may only replace a stale *socket*: a regular file, directory or anything else
found there is refused with one line (``agent.paths.check_state_path``), never deleted; its
folder is created with mode 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from agent.errors import JournalUnavailable
from agent.journal import Journal
from agent.paths import check_state_path
from feeds.redact import redact_text, redact_value

__all__ = ["Control", "ControlServer", "Handler", "send_command"]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_LINE = 1 << 20


class Control:
    """Stop and kill-switch state shared by every parent order.

    Args:
        journal: Where HALTED is kept (None: only in memory).
    """

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal
        self.halted = journal.halted() if journal is not None else False
        self.reason = "halted before this start (journal)" if self.halted else ""
        self.stop = False
        self.stop_event = asyncio.Event()
        self.halt_event = asyncio.Event()

    def halt(self, reason: str = "operator") -> bool:
        """Engage the kill switch (durable before it returns); False if already halted.

        Halting never fails: with the journal unavailable it holds in memory (logged
        ``daemon.halt_not_durable``), which is what a journal fault needs.
        """
        if self.halted:
            return False
        self.halted = True
        self.reason = reason
        if self.journal is not None:
            try:
                self.journal.set_halted(True, reason)
            except JournalUnavailable as e:
                structlog.get_logger().error("daemon.halt_not_durable", error=str(e))
        structlog.get_logger().error("daemon.halted", reason=reason)
        self.halt_event.set()
        return True

    def resume(self, reason: str = "operator") -> bool:
        """Release the kill switch (on purpose only); False if it was not engaged.

        Raises:
            JournalUnavailable: the release cannot be recorded (the daemon stays halted: it
                cannot send without a journal either).
        """
        if not self.halted:
            return False
        if self.journal is not None:
            self.journal.set_halted(False, reason)
        self.halted = False
        self.reason = ""
        structlog.get_logger().warning("daemon.resumed", reason=reason)
        return True

    def request_stop(self, reason: str = "") -> None:
        """Stop deciding; the daemon exits once what is in flight is settled."""
        if not self.stop:
            self.stop = True
            structlog.get_logger().info("daemon.stopping", reason=reason or None)
            self.stop_event.set()


class ControlServer:
    """JSON-lines command server on a Unix socket.

    Args:
        path: Socket file (replaced if a stale one is left; created with mode 0600).
        handler: Coroutine answering one command.
    """

    def __init__(self, path: str | Path, handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._log = structlog.get_logger().bind(component="control")

    async def start(self) -> ControlServer:
        """Listen; refuse to take over a socket another live daemon answers on."""
        check_state_path(self.path, "socket", "control.socket")  # only ever replaces a socket
        if self.path.is_socket():
            try:
                _r, w = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                self.path.unlink()  # stale: nobody listens
            else:
                w.close()
                raise OSError(f"{self.path}: another daemon is listening on this control socket")
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=_MAX_LINE
            )
        finally:
            os.umask(old)
        self._log.info("control.listening", socket=str(self.path))
        return self

    async def aclose(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self._answer(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as e:  # ValueError: line over the limit
            self._log.warning("control.client_error", error=str(e))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError('want a JSON object with a "cmd" string')
        except ValueError as e:
            self._log.warning("control.command", cmd=None, ok=False, error=f"bad request: {e}")
            return {"ok": False, "error": f"bad request: {e}"}
        try:
            reply = await self.handler(req)
        except Exception as e:
            reply = {"ok": False, "error": redact_text(f"{type(e).__name__}: {e}")}
        safe: dict[str, Any] = redact_value(reply)  # a mapping comes back a dict
        args = redact_value({k: v for k, v in req.items() if k != "cmd"})
        self._log.log(
            20 if safe.get("ok") else 30,
            "control.command",
            cmd=req["cmd"],
            args=args or None,
            ok=bool(safe.get("ok")),
            error=safe.get("error"),
        )
        return safe


async def send_command(path: str | Path, req: dict[str, Any], timeout_s: float = 10.0) -> Any:
    """Send one command to a daemon's control socket and return its reply."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_LINE)
        try:
            writer.write(json.dumps(req).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    if not line:
        raise ConnectionError(f"{path}: the daemon closed the connection without a reply")
    return json.loads(line)
