"""Named queries for /v1/responses conversation state (table `responses`, schema_responses.py).

Writes run on the writer thread (`save_job` / `Writer.run`), reads on a reader
connection in a worker thread: none of these is called on the event loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import apsw
import msgspec

from .writer import _Job

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


@dataclass(slots=True)
class StoredResponse:
    response_id: str
    call_id: str | None
    stored: bool
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]
    chat_body: dict[str, Any] | None = None


def save_response(conn: apsw.Connection, r: StoredResponse) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO responses (response_id, call_id, created_at, stored, previous_response_id, response,"
        " input_items, history, chat_body) VALUES (?,?,?,?,?,?,?,?,?)",
        (r.response_id, r.call_id, time.time(), int(r.stored), r.response.get("previous_response_id"),
         _enc.encode(r.response), _enc.encode(r.input_items), _enc.encode(r.history),
         _enc.encode(r.chat_body) if r.chat_body is not None else None))


def save_job(r: StoredResponse) -> Any:
    """`save_response` as an item for `Writer.submit_nowait`: queued in order, never blocking, never dropped."""
    return _Job(lambda conn: save_response(conn, r))


def load_response(conn: apsw.Connection, response_id: str) -> StoredResponse | None:
    """A stored, not deleted response; None otherwise (store: false rows are never served)."""
    row = conn.execute(
        "SELECT call_id, response, input_items, history FROM responses"
        " WHERE response_id = ? AND stored = 1 AND deleted_at IS NULL", (response_id,)).fetchone()
    if row is None:
        return None
    return StoredResponse(response_id, row[0], True, _dec.decode(row[1]), _dec.decode(row[2]), _dec.decode(row[3]))


def delete_response(conn: apsw.Connection, response_id: str) -> bool:
    """Marks a response deleted (GET and previous_response_id then 404); False if there was none."""
    conn.execute("UPDATE responses SET deleted_at = ? WHERE response_id = ? AND stored = 1 AND deleted_at IS NULL",
                 (time.time(), response_id))
    return conn.changes() > 0


def chat_body_for_call(conn: apsw.Connection, call_id: str) -> dict[str, Any] | None:
    """The OpenAI chat body a /v1/responses call was translated to, earlier turns included (for replay)."""
    row = conn.execute("SELECT chat_body FROM responses WHERE call_id = ? AND chat_body IS NOT NULL",
                       (call_id,)).fetchone()
    return _dec.decode(row[0]) if row else None
