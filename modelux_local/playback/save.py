"""Recorded runs from the database as cassette entries (selection as `simulate` makes it)."""
from __future__ import annotations

import apsw
import msgspec

from ..replay.selection import Selection, load_run, select_runs
from .format import Cassette, Entry, new_header
from .normalise import RULES, normalise

_dec = msgspec.json.Decoder()
PLAYED = ("cassette", "cache")  # the providers the gateway records for answers served by playback


def entries_for(conn: apsw.Connection, sel: Selection) -> tuple[list[str], list[Entry], int]:
    """(run ids, entries of their answered calls in order, calls skipped: failed or unanswerable)."""
    run_ids = select_runs(conn, sel)
    entries: list[Entry] = []
    skipped = 0
    for rid in run_ids:
        run = load_run(conn, rid)
        for c in run.calls if run else ():
            if c.status != "ok" or not c.response or not c.request or c.endpoint not in RULES:
                skipped += 1
                continue
            try:
                body = _dec.decode(c.request)
            except msgspec.DecodeError:
                skipped += 1
                continue
            answered_by = f"{c.provider}/{c.model}" if c.provider else None
            cost = None if c.cost_nusd is None else c.cost_nusd / 1e9
            if c.provider in PLAYED:  # answered from a recording itself: keep who answered and what it cost
                answered_by, cost = _played(conn, c.call_id, answered_by, cost)
            entries.append(Entry(endpoint=c.endpoint, alias=c.alias, request=normalise(c.endpoint, body),
                                 response=c.response, stream=c.stream, answered_by=answered_by, cost_usd=cost))
    return run_ids, entries, skipped


def _played(conn: apsw.Connection, call_id: str, answered_by: str | None, cost: float | None):
    row = conn.execute("SELECT json_extract(decision, '$.playback.answered_by'), "
                       "json_extract(decision, '$.playback.saved_usd') FROM calls WHERE call_id = ?",
                       (call_id,)).fetchone()
    return (row[0] or answered_by, row[1]) if row else (answered_by, cost)


def cassette_from(conn: apsw.Connection, sel: Selection, path) -> tuple[Cassette, int]:
    run_ids, entries, skipped = entries_for(conn, sel)
    selection = {k: v for k, v in sel.as_dict().items() if v not in (None, {}, [])}
    selection["runs"] = run_ids
    selection.pop("run_ids", None)
    return Cassette(path, new_header(selection), entries), skipped
