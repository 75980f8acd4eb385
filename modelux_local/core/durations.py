"""Durations on the command line and in query strings: `30s`, `30m`, `24h`, `7d`, `2w`.

Every command that takes `--since D` (runs, analytics, logs search, simulate, export)
parses it here so the accepted forms are the same everywhere.
"""
from __future__ import annotations

import re
import time

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


class DurationError(ValueError):
    """A duration that is not a number followed by one of s, m, h, d, w."""


def parse_duration(text: str) -> float:
    """`30m` -> 1800.0 seconds. Raises DurationError with a message naming the input."""
    m = _PATTERN.match(text or "")
    if not m:
        raise DurationError(f"invalid duration {text!r}: use a number and a unit, like 30m, 24h or 7d")
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if seconds <= 0:
        raise DurationError(f"invalid duration {text!r}: must be greater than zero")
    return seconds


def since_timestamp(text: str | None, now: float | None = None) -> float | None:
    """`--since 24h` -> the unix timestamp 24 hours ago; None/empty -> None (no lower bound)."""
    if text is None or text == "":
        return None
    return (time.time() if now is None else now) - parse_duration(text)


def argparse_duration(text: str) -> str:
    """An argparse `type=` that validates the form but keeps the text (parsed at use)."""
    try:
        parse_duration(text)
    except DurationError as e:
        import argparse

        raise argparse.ArgumentTypeError(str(e)) from None
    return text
