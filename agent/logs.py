"""Logging set-up: structlog processors only.

JSON lines (orjson) when the output is not a terminal, a readable console otherwise. Event names
are ``component.event`` (``mpc.step``, ``order.filled``, ``run.summary``); data goes in keys.

Every line passes ``redact_event`` last before rendering: credentials in any URL (user-info,
query values) and values under secret-named keys (password, token, authorization, ...) are
masked, tracebacks included, whoever logged them (see ``feeds.redact``).
"""

from __future__ import annotations

import io
import logging
import sys
from typing import IO, Any, TextIO

import orjson
import structlog

from feeds.redact import is_secret_key, redact_text, redact_value

__all__ = ["configure_logging", "redact_event"]

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


_PLAIN = frozenset({int, float, bool})


def redact_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Structlog processor: mask secrets and URL credentials in every value of a log line."""
    for k, v in event_dict.items():
        # Fast path for the common values (numbers, plain strings): most lines change nothing.
        if v is None or type(v) in _PLAIN or k == "exc_info":
            continue
        if type(v) is str:
            if "://" in v or is_secret_key(k):
                event_dict[k] = redact_value(v, k)
        else:
            event_dict[k] = redact_value(v, k)
    return event_dict


def _redacting_traceback(sio: IO[str], exc_info: Any) -> None:
    # Console tracebacks are drawn by the renderer from exc_info: redact the drawn text.
    buf = io.StringIO()
    structlog.dev.plain_traceback(buf, exc_info)
    sio.write(redact_text(buf.getvalue()))


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
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
        processors = [
            *shared,
            structlog.dev.set_exc_info,
            redact_event,
            structlog.dev.ConsoleRenderer(exception_formatter=_redacting_traceback),
        ]
        factory = structlog.PrintLoggerFactory(out)
    else:
        processors = [
            *shared,
            structlog.processors.dict_tracebacks,
            redact_event,
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
