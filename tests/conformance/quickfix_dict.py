"""Validate raw FIX messages with QuickFIX's own ``DataDictionary`` and its stock FIX44.xml.

QuickFIX's Python binding does not turn a validation failure into a Python exception (the C++
exception aborts the interpreter), so each message is checked in a child process: exit 0 is
valid, anything else carries QuickFIX's reason on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

FIX44_XML = Path(sysconfig.get_path("data")) / "share" / "quickfix" / "FIX44.xml"

_CHILD = r"""
import sys
import quickfix as fix
dd = fix.DataDictionary(sys.argv[1])
raw = bytes.fromhex(sys.argv[2]).decode("latin-1")
msg = fix.Message(raw, dd, True)   # framing: BodyLength, CheckSum, field order
dd.validate(msg, False)            # header and body: required tags, types, enums
print("ok")
"""


def have_quickfix() -> bool:
    """Return True when the ``quickfix-ssl`` wheel and its FIX44.xml are installed."""
    try:
        import quickfix  # noqa: F401
    except ImportError:
        return False
    return FIX44_XML.is_file()


def validate(raws: list[bytes]) -> list[str | None]:
    """Return, for each message, None when QuickFIX accepts it, else its reason."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(FIX44_XML), raw.hex()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONFAULTHANDLER": ""},
        )
        for raw in raws
    ]
    out: list[str | None] = []
    for p in procs:
        so, se = p.communicate(timeout=60)
        if p.returncode == 0 and so.strip() == "ok":
            out.append(None)
        else:
            lines = [x for x in se.splitlines() if "what()" in x or "Error" in x]
            out.append(" | ".join(lines) or se.strip()[-300:] or f"exit {p.returncode}")
    return out
