"""One JSON object per call: the Step of the management API plus request and response bodies."""
from __future__ import annotations

import msgspec

_enc = msgspec.json.Encoder()


def jsonl_line(step: dict) -> bytes:
    out = {k: v for k, v in step.items() if k not in ("started_ts", "ended_ts")}
    return _enc.encode(out) + b"\n"
