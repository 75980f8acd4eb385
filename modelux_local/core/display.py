"""Text from clients (run ids, tags, notes, error messages) made safe to show in a terminal.

A run id is whatever an agent sent: printed raw, an ESC sequence in it could clear the screen,
retitle the window or fake output. `printable` shows control characters as escapes instead.
"""
from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi overrides that reorder what a line appears to say
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` as a string with every control character shown as `\\xNN` (newlines kept if asked)."""
    s = text if isinstance(text, str) else str(text)
    return (_UNSAFE_KEEP_NEWLINES if keep_newlines else _UNSAFE).sub(_escape, s)
