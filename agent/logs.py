"""Logging set-up: structlog processors only.

JSON lines (orjson) when the output is not a terminal, a readable console otherwise. Event names
are ``component.event`` (``mpc.step``, ``order.filled``, ``run.summary``); data goes in keys.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _default(obj: Any) -> Any:
    # numpy scalars and paths reach the logs; render them instead of failing.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def configure_logging(
    fmt: str = "auto", level: str = "info", stream: IO[str] | None = None
) -> None:
    """Configure structlog for the process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
        level: Minimum level name.
        stream: Text stream to write to; stdout by default.
    """
    out = stream if stream is not None else sys.stdout
    pretty = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any
    if pretty:
        processors = [*shared, structlog.dev.set_exc_info, structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(out)  # type: ignore[arg-type]
    else:
        processors = [
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        buf = getattr(out, "buffer", None)
        factory = structlog.BytesLoggerFactory(buf) if buf is not None else _TextBytesFactory(out)
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=False,
    )


class _TextBytesFactory:
    """Bytes logger over a text stream without ``.buffer`` (e.g. io.StringIO in tests)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _TextBytesLogger:
        return _TextBytesLogger(self._stream)


class _TextBytesLogger:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def msg(self, message: bytes) -> None:
        self._stream.write(message.decode() + "\n")
        self._stream.flush()

    debug = info = warning = error = critical = exception = log = msg
