"""Which recorded runs a replay takes, and what each of them recorded (calls in order)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import apsw
import msgspec

from ..storage import replays
from ..storage.bodies import decode_body
from ..storage.responses_store import chat_body_for_call

_dec = msgspec.json.Decoder()


@dataclass(frozen=True)
class Selection:
    since: float | None = None
    until: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_ids: tuple[str, ...] = ()
    sample: int | None = None
    seed: str = ""

    def as_dict(self) -> dict:
        return {"since": self.since, "until": self.until, "tags": self.tags, "run_ids": list(self.run_ids),
                "sample": self.sample}


@dataclass(slots=True)
class OriginalCall:
    call_id: str
    endpoint: str
    started_at: float
    alias: str | None
    config: str | None
    provider: str | None
    model: str | None
    status: str
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_nusd: int | None
    latency_ms: float | None
    stream: bool
    request: bytes | None
    response: bytes | None
    chat_body: bytes | None = None  # /v1/responses: the chat body it was routed as, earlier turns included

    @property
    def failed(self) -> bool:
        return self.status in ("error", "aborted")


@dataclass(slots=True)
class OriginalRun:
    run_id: str
    tags: dict[str, str]
    status: str
    started_at: float
    last_at: float
    ended_at: float | None
    outcome: dict | None
    calls: list[OriginalCall] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """The recorded run duration: first call's start to last call's end."""
        # last_at, not ended_at: an abort or idle expiry can set ended_at well after the last call
        return max(0.0, self.last_at - self.started_at)

    @property
    def model_time_s(self) -> float:
        return sum((c.latency_ms or 0.0) for c in self.calls) / 1000

    @property
    def cost_nusd(self) -> int:
        return sum(c.cost_nusd or 0 for c in self.calls)

    @property
    def succeeded(self) -> bool:
        """The recorded outcome when the agent reported one, else: completed without error or abort."""
        if self.outcome is not None and isinstance(self.outcome.get("success"), bool):
            return self.outcome["success"]
        return self.status != "aborted" and not any(c.failed for c in self.calls)


def select_runs(conn: apsw.Connection, sel: Selection) -> list[str]:
    """Run ids of recorded (never replayed) runs matching the selection, oldest first."""
    ids = replays.recorded_run_ids(conn, since=sel.since, until=sel.until, tags=sel.tags, run_ids=sel.run_ids)
    if sel.sample is not None and sel.sample < len(ids):
        keep = set(random.Random(sel.seed).sample(ids, sel.sample))
        ids = [i for i in ids if i in keep]
    return ids


def load_run(conn: apsw.Connection, run_id: str) -> OriginalRun | None:
    row = replays.recorded_run(conn, run_id)
    if row is None:
        return None
    run = OriginalRun(row[0], _dec.decode(row[1]) if row[1] else {}, row[2], row[3], row[4], row[5],
                      _outcome(row[6]))
    for r in replays.recorded_calls(conn, run_id):
        oc = OriginalCall(*r[:15], bool(r[15]), _bytes(decode_body(conn, r[16])), _bytes(decode_body(conn, r[17])))
        if oc.endpoint == "responses":
            chat = chat_body_for_call(conn, oc.call_id)
            oc.chat_body = msgspec.json.encode(chat) if chat is not None else None
        run.calls.append(oc)
    return run


def _outcome(raw: Any) -> dict | None:
    if not raw:
        return None
    try:
        d = _dec.decode(raw)
    except msgspec.DecodeError:
        return None
    return d if isinstance(d, dict) else None


def _bytes(b: Any) -> bytes | None:
    if b is None:
        return None
    return bytes(b) if not isinstance(b, str) else b.encode()
