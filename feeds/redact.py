"""Credential redaction for anything that may reach a log, a journal, a reply or an error (pure).

A URL keeps its scheme, host, port and path; its user-info and the values of its query
parameters and fragment are replaced by ``***`` (``wss://***@h:9/p?token=***``), since venues
put API keys in either place. ``redact_text`` does the same to every URL inside free text (an
exception message, a traceback). ``redact_value`` walks a nested config/JSON value: values under
a key that names a secret (password, token, key, secret, authorization, cookie, ...) become
``***``, and every string is passed through ``redact_text``.

Deliberately kept in ``feeds`` (which may not import ``agent``): both packages use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "is_secret_key", "redact_text", "redact_url", "redact_value"]

MASK = "***"

# Key names whose values are secrets, wherever they appear (config keys, headers, log keys).
# Names ending in _env / _file hold where a secret is, not the secret, and are kept.
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth(orization)?|cookie|"
    r"credential|signature|private[_-]?key|session[_-]?key|^key$|^sig$)",
    re.IGNORECASE,
)
_POINTER_SUFFIX = ("_env", "_file", "_path")
# scheme://rest-of-url, stopping at whitespace and at quotes or brackets around a URL.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Return True when a key name (config key, header, query parameter) names a secret."""
    k = key.lower()
    if k.endswith(_POINTER_SUFFIX):
        return False
    return bool(_SECRET_KEY.search(k))


def redact_url(url: str) -> str:
    """Return ``url`` with its user-info, query values and fragment replaced by ``***``.

    Scheme, host, port and path are kept so the line still says where it went. A string that
    does not parse as a URL is returned with any ``user:pass@`` masked anyway.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{MASK}@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        # name=value keeps the name; a bare segment (no "=") may itself be the token.
        query = "&".join(
            f"{seg.split('=', 1)[0]}={MASK}" if "=" in seg else MASK
            for seg in query.replace(";", "&").split("&")
        )
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """Return ``text`` with every URL in it passed through ``redact_url``."""
    if "://" not in text:
        return text
    return _URL.sub(_sub, text)


def _sub(m: re.Match[str]) -> str:
    url = m.group(0)
    core = url.rstrip(".,;:!?")  # sentence punctuation after a URL is not part of it
    return redact_url(core) + url[len(core) :]


def redact_value(value: Any, key: str = "") -> Any:
    """Return a copy of a nested value with secrets masked (see the module docstring).

    Args:
        value: A str, number, list/tuple or mapping (a config dump, headers, a log event).
        key: The key this value sits under (its name decides whether it is a secret).
    """
    if key and isinstance(value, str | bytes) and value and is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value
