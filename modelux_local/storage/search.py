"""Search over prompts and responses: the FTS5 index (filled as calls land) and its queries,
plus the nearest-neighbour half over sqlite-vec tables filled by storage/embed_job.py (the
vectors are computed by the job in calls/embedder.py).

The index holds, per call (rowid = calls.rowid), `prompt` (the request's messages, system
prompt, tool-call arguments or embeddings input; for a later step of a run only the messages
its run's previous request did not have) and `response` (the assembled answer's
text and tool calls, or the error message). While serving, `PendingIndex` (a writer
`after_batch` hook) writes it 64 calls at a time, when the writer goes quiet, and before a
search, so a call is searchable as soon as a search can see it; calls stored before
this index existed (or whose rows a crash lost) are caught up by `catch_up` (server start, or
the CLI).
"""
from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apsw
import msgspec

from ..core.durations import DurationError, since_timestamp
from ..core.records import CallRecord
from ..errors import BadRequest
from .analytics_queries import json_path, parse_tag_filter
from .bodies import decode_body
from .db import immediate
from .record_rows import encoder_for

_dec = msgspec.json.Decoder()
HIGHLIGHT = ("**", "**")   # around matched terms in snippets; the CLI turns them bold on a terminal
MAX_TEXT = 100_000          # characters per column: enough for any prompt worth finding
CHUNK = 2_000
log = logging.getLogger("modelux.search")


# -- text extraction ------------------------------------------------------------------------

def _texts(content: Any, out: list[str]) -> None:
    """Appends the text of an OpenAI/Anthropic message `content`: a string or a list of parts."""
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif "content" in part:  # anthropic tool_result blocks
                    _texts(part["content"], out)
                elif isinstance(part.get("input"), dict):  # anthropic tool_use blocks
                    out.append(msgspec.json.encode(part["input"]).decode())


def _tool_calls(tool_calls: Any, out: list[str]) -> None:
    for tc in _list(tool_calls):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            out.append(f"{_str(fn.get('name'))} {_str(fn.get('arguments'))}".strip())


def _list(v: Any) -> list:
    """`v` if it is a list: a stored body may hold anything where a list belongs (a client's
    bad request is stored too), and the index must take it without raising."""
    return v if isinstance(v, list) else []


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _decode(body: Any) -> Any:
    if body is None:
        return None
    try:
        return _dec.decode(body)
    except msgspec.DecodeError:
        return None


# The usual shapes, decoded typed: only the fields searched are built (not the model, tools,
# usage, ids...). A body of another shape fails validation and takes the generic path, which
# gives the same text for the bodies both accept.
class _Msg(msgspec.Struct):
    content: Any = None
    tool_calls: Any = None


class _Req(msgspec.Struct):
    system: Any = None
    messages: list[_Msg] | None = None
    input: Any = None


class _Choice(msgspec.Struct):
    message: _Msg | None = None


class _Resp(msgspec.Struct):
    choices: list[_Choice] | None = None
    content: Any = None
    error: Any = None


_dec_req = msgspec.json.Decoder(_Req)
_dec_resp = msgspec.json.Decoder(_Resp)


def _prompt(request: Any, out: list[str]) -> None:
    try:
        req = _dec_req.decode(request)
    except msgspec.DecodeError:  # ValidationError included: another shape, or not JSON
        req = _decode(request)
        if isinstance(req, dict):
            _texts(req.get("system"), out)
            for m in _list(req.get("messages")):
                if isinstance(m, dict):
                    _texts(m.get("content"), out)
                    _tool_calls(m.get("tool_calls"), out)
            _texts(req.get("input"), out)  # embeddings requests
        return
    _texts(req.system, out)
    for m in req.messages or ():
        _texts(m.content, out)
        _tool_calls(m.tool_calls, out)
    _texts(req.input, out)


def _answer(response: Any, out: list[str]) -> None:
    try:
        resp = _dec_resp.decode(response)
    except msgspec.DecodeError:
        resp = _decode(response)
        if isinstance(resp, dict):
            for ch in _list(resp.get("choices")):
                msg = ch.get("message") if isinstance(ch, dict) else None
                if isinstance(msg, dict):
                    _texts(msg.get("content"), out)
                    _tool_calls(msg.get("tool_calls"), out)
            _texts(resp.get("content"), out)  # anthropic messages shape
            err = resp.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                out.append(err["message"])
        return
    for ch in resp.choices or ():
        if ch.message is not None:
            _texts(ch.message.content, out)
            _tool_calls(ch.message.tool_calls, out)
    _texts(resp.content, out)
    err = resp.error
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        out.append(err["message"])


def extract_text(request: Any, response: Any) -> tuple[str, str]:
    """(prompt, response) text of one call from its stored bodies; never raises."""
    prompt: list[str] = []
    answer: list[str] = []
    if request is not None:
        _prompt(request, prompt)
    if response is not None:
        _answer(response, answer)
    return "\n".join([p for p in prompt if p])[:MAX_TEXT], "\n".join([a for a in answer if a])[:MAX_TEXT]


# -- indexing -------------------------------------------------------------------------------

def _index_rows(conn: apsw.Connection, rows: Iterable[tuple], stored: bool = True) -> int:
    """rows: (rowid, request, response); `stored`: the bodies as `calls` holds them (to decode)."""
    out = []
    for rowid, request, response in rows:
        try:
            if stored:
                request, response = decode_body(conn, request), decode_body(conn, response)
            prompt, answer = extract_text(request, response)
        except Exception:  # a bug of ours must not fail the batch (the calls with it): index it empty
            log.exception("search index: the text of call row %s could not be extracted", rowid)
            prompt = answer = ""
        out.append((rowid, prompt, answer))
    if out:
        conn.executemany("INSERT OR REPLACE INTO calls_fts(rowid, prompt, response) VALUES (?, ?, ?)", out)
    return len(out)


def _batch_rows(conn: apsw.Connection, recs: list[CallRecord]) -> list[tuple]:
    """(rowid, request part, response) of records just stored: the bodies from the records
    (write_calls left the assembled answer of a stream in `response`), the rowids as write_calls
    kept them (the ones it does not have are looked up)."""
    enc = encoder_for(conn)
    fresh, rowids = enc.fresh, enc.rowids
    by_id = {r.call_id: r for r in recs}
    rows = [(rowids[cid], cid) for cid in by_id if cid in rowids]
    missing = [cid for cid in by_id if cid not in rowids]
    for i in range(0, len(missing), 500):
        part = missing[i:i + 500]
        rows += conn.execute(f"SELECT rowid, call_id FROM calls WHERE call_id IN ({','.join('?' * len(part))})", part)
    return [(rowid, _new_part(by_id[cid].request, fresh.get(cid)), by_id[cid].response) for rowid, cid in rows]


class PendingIndex:
    """The index rows of stored calls, held in memory and inserted FLUSH_ROWS at a time (or
    FLUSH_BYTES, or once the oldest waited FLUSH_S) in the writer's transaction at hand: FTS5
    pays per transaction (a segment written, merges), so 64 rows at once cost ~25 us of writer
    CPU per call less than the 8 or so of a batch under load. The rest is flushed when the
    writer goes quiet (`idle`, its own transaction, also at the writer's stop) and before a
    search (`flush_job`, a writer job). Rows lost to a crash or a failed commit are caught up
    by `catch_up` at the next start.

    Every method runs on the writer thread. `rollback` gives back what a failed transaction
    took: rows it flushed go back to the queue, rows it added are dropped (their calls were
    rolled back too, and are added again when the writer retries them)."""

    FLUSH_ROWS = 64
    FLUSH_BYTES = 4 << 20
    FLUSH_S = 1.0

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.size = 0
        self.oldest = 0.0  # monotonic time the oldest waiting row arrived
        self._added = 0    # rows added in the writer's current transaction
        self._flushed: list[tuple] = []  # rows inserted in it

    def _begin(self) -> None:
        """A new transaction: the previous one committed (a failed one was rolled back first)."""
        self._added, self._flushed = 0, []

    def add(self, conn: apsw.Connection, recs: list[CallRecord]) -> None:
        """The writer's after_batch hook."""
        self._begin()
        rows = _batch_rows(conn, recs)
        if not self.rows:
            self.oldest = time.monotonic()
        self.rows += rows
        self._added = len(rows)
        self.size += _bytes(rows)
        if (len(self.rows) >= self.FLUSH_ROWS or self.size >= self.FLUSH_BYTES
                or time.monotonic() - self.oldest >= self.FLUSH_S):
            self._flush(conn)

    def idle(self, conn: apsw.Connection) -> None:
        """The writer went quiet: index what waits."""
        self._begin()
        self._flush(conn)

    def flush_job(self, conn: apsw.Connection) -> int:
        """As a writer job (`writer.run`): everything stored before it is indexed once it returns."""
        self._begin()
        try:
            return self._flush(conn)
        except BaseException:
            self.rollback()
            raise

    def _flush(self, conn: apsw.Connection) -> int:
        rows, self.rows, self.size = self.rows, [], 0
        self._flushed += rows
        return _index_rows(conn, rows, stored=False)

    def rollback(self, _records: object = None) -> None:
        rows = self._flushed + self.rows
        self.rows = rows[:len(rows) - self._added]
        self.size = _bytes(self.rows)
        self._begin()


def _bytes(rows: list[tuple]) -> int:
    return sum(len(r[1] or b"") + len(r[2] or b"") for r in rows)


def _new_part(request: bytes | None, spans: list[tuple[int, int]] | None) -> bytes | None:
    """A later step of a run resends the run's history: only the messages it adds are indexed,
    so each message is indexed once per run and the index grows with the run, not its square."""
    if spans is None or request is None:
        return request
    return b'{"messages":[' + b",".join(request[s:e] for s, e in spans) + b"]}"


def catch_up(conn: apsw.Connection, max_rows: int | None = None) -> int:
    """Indexes calls stored before the index (or by a server without it); returns how many.

    `search_state.fts_complete_below` marks the rowid below which every call is indexed, so
    this is one short range check once caught up.
    """
    done = 0
    while True:
        (low,) = conn.execute("SELECT coalesce((SELECT value FROM search_state WHERE key = 'fts_complete_below'), 0)").fetchone()
        (top,) = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM calls").fetchone()
        if low >= top:
            return done
        high = min(top, low + CHUNK)
        with immediate(conn):  # the CLI catches up while a server writes
            done += _index_rows(conn, conn.execute(
                "SELECT rowid, request, response FROM calls WHERE rowid >= ? AND rowid < ? "
                "AND rowid NOT IN (SELECT rowid FROM calls_fts WHERE rowid >= ? AND rowid < ?)",
                (low, high, low, high)))
            conn.execute("INSERT OR REPLACE INTO search_state(key, value) VALUES ('fts_complete_below', ?)", (high,))
        if max_rows is not None and done >= max_rows:
            return done


# -- queries --------------------------------------------------------------------------------

@dataclass
class SearchFilter:
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    since: float | None = None

    def where(self, alias: str = "c") -> tuple[str, list]:
        conds, params = [], []
        if self.run_id:
            conds.append(f"{alias}.run_id = ?")
            params.append(self.run_id)
        if self.since is not None:
            conds.append(f"{alias}.started_at >= ?")
            params.append(self.since)
        for k, v in self.tags.items():
            conds.append(f"json_extract({alias}.tags, ?) = ?")
            params += [json_path(k), v]
        return "".join(" AND " + c for c in conds), params


def search_filter(run_id: str | None, tags: list[str], since: str | None, tag_sep: str = "=") -> SearchFilter:
    """Validates user input (CLI flags, query parameters); BadRequest on a bad duration or tag."""
    try:
        since_ts = since_timestamp(since)
    except DurationError as e:
        raise BadRequest(str(e), param="since") from None
    return SearchFilter(run_id or None, dict(parse_tag_filter(t, tag_sep) for t in tags), since_ts)


def _seq(conn: apsw.Connection, run_id: str | None, started: float, call_id: str) -> int | None:
    if not run_id:
        return None
    return conn.execute("SELECT count(*) FROM calls WHERE run_id = ? AND (started_at < ? OR (started_at = ? AND call_id <= ?))",
                        (run_id, started, started, call_id)).fetchone()[0]


def full_text(conn: apsw.Connection, query: str, flt: SearchFilter, limit: int = 20) -> list[dict]:
    """FTS5 query syntax: words (all must occur), "a phrase", OR, NOT, prefix*, prompt: / response:."""
    if not query.strip():
        raise BadRequest("the search query is empty", param="q")
    where, params = flt.where()
    sql = (f"SELECT c.call_id, c.run_id, c.started_at, c.model, c.provider, "
           f"snippet(calls_fts, -1, ?, ?, '…', 16), bm25(calls_fts) AS rank "
           f"FROM calls_fts JOIN calls AS c ON c.rowid = calls_fts.rowid "
           f"WHERE calls_fts MATCH ?{where} ORDER BY rank LIMIT ?")
    try:
        rows = conn.execute(sql, (*HIGHLIGHT, query, *params, limit)).fetchall()
    except apsw.SQLError as e:
        msg = str(e).removeprefix("SQLError: ")
        raise BadRequest(f"cannot parse search query {query!r} ({msg}); put phrases in double quotes, "
                         f'e.g. "rate limit", and avoid stray punctuation', param="q", code="bad_search_query") from None
    return [{"call_id": cid, "run_id": rid, "seq": _seq(conn, rid, st, cid), "model": model, "provider": provider,
             "snippet": snip, "score": round(-rank, 4)} for cid, rid, st, model, provider, snip, rank in rows]


def vector_table(dim: int) -> str:
    return f"call_vectors_{int(dim)}"


def ensure_vector_table(conn: apsw.Connection, dim: int) -> str:
    name = vector_table(dim)
    conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0(embedding float[{int(dim)}] "
                 f"distance_metric=cosine, model text, run_id text, started_at float)")
    return name


def pack(vec: list[float]) -> bytes:
    return struct.pack(f"{len(vec)}f", *vec)


def semantic(conn: apsw.Connection, vec: list[float], model: str, flt: SearchFilter, query: str = "",
             limit: int = 20) -> list[dict]:
    """Nearest calls to `vec` among those embedded by the same `model` (provider/model)."""
    table = vector_table(len(vec))
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
        raise BadRequest(f"no call has been embedded with {model} yet: the server embeds calls in the background "
                         "(start `modelux-local serve` and retry in a moment)", code="no_embeddings")
    conds, params = ["embedding MATCH ?", "k = ?", "model = ?"], [pack(vec), 0, model]
    if flt.run_id:
        conds.append("run_id = ?")
        params.append(flt.run_id)
    if flt.since is not None:
        conds.append("started_at >= ?")
        params.append(flt.since)
    # tag filters apply after the KNN, so ask for more neighbours when they are set
    params[1] = min(4096, limit * (20 if flt.tags else 1))
    try:
        hits = conn.execute(f"SELECT rowid, distance FROM {table} WHERE {' AND '.join(conds)} ORDER BY distance",
                            params).fetchall()
    except apsw.SQLError as e:
        raise BadRequest(f"semantic search failed: {e}") from None
    where, tparams = SearchFilter(tags=flt.tags).where()
    terms = [w.lower() for w in query.split() if len(w) > 2]
    out = []
    for rowid, distance in hits:
        row = conn.execute(
            f"SELECT c.call_id, c.run_id, c.started_at, c.model, c.provider, f.prompt, f.response "
            f"FROM calls AS c LEFT JOIN calls_fts AS f ON f.rowid = c.rowid WHERE c.rowid = ?{where}",
            (rowid, *tparams)).fetchone()
        if row is None:
            continue
        cid, rid, st, m, prov, prompt, answer = row
        out.append({"call_id": cid, "run_id": rid, "seq": _seq(conn, rid, st, cid), "model": m, "provider": prov,
                    "snippet": _highlight(answer or prompt or "", terms), "score": round(1 - distance, 4)})
        if len(out) >= limit:
            break
    return out


def _highlight(text: str, terms: list[str], width: int = 160) -> str:
    """A window of `text` around the first query word found, with query words marked."""
    low = text.lower()
    first = min((i for i in (low.find(t) for t in terms) if i >= 0), default=0)
    start = max(0, first - width // 3)
    window = text[start:start + width]
    words = []
    for w in window.split(" "):
        bare = w.strip(".,;:!?\"'()").lower()
        words.append(f"{HIGHLIGHT[0]}{w}{HIGHLIGHT[1]}" if bare and any(bare.startswith(t[:5]) for t in terms) else w)
    return ("…" if start else "") + " ".join(words) + ("…" if start + width < len(text) else "")


def unembedded(conn: apsw.Connection) -> int:
    """Calls indexed for full-text search but not embedded yet."""
    row = conn.execute("SELECT count(*) FROM calls_fts WHERE rowid > coalesce("
                       "(SELECT value FROM search_state WHERE key = 'embedded_upto'), 0)").fetchone()
    return row[0]
