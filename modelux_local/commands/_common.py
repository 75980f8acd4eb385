"""What the commands share: errors on stderr, exit codes, and the database they act on.

Exit codes, the same for every command: 0 ok; 1 not found or failed (no database, no such
run / replay / config, nothing to replay); 2 usage (a bad flag value, duration, tag filter or
query; argparse's own errors are 2 too); 4 `config promote` refused by its gate; 130 interrupted.

A command never creates a database it only reads from or acts on: a typo in `--data-dir` (or
MODELUX_HOME) must say so, not answer from a fresh empty file left behind in the wrong place.
"""
from __future__ import annotations

import argparse
import sys

OK, FAILED, USAGE = 0, 1, 2


def fail(message: str, code: int = FAILED) -> int:
    """Prints `error: MESSAGE` on stderr (stdout stays for results, e.g. one JSON document)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def no_database(paths) -> int:
    return fail(f"no database at {paths.db_path} (check --data-dir or MODELUX_HOME; "
                f"`modelux-local serve --data-dir {paths.data_dir}` creates it when it records calls)")


def positive_int(text: str) -> int:
    """argparse `type=` for counts such as --limit, --sample, --concurrency: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return n


def non_negative_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return x
