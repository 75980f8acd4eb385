"""Replay rows (replays, replay_runs, replayed calls): written through the Writer (in order with the
replayed calls), read directly. replay/ decides what to replay; the SQL is here."""
from __future__ import annotations

import os
import time
from typing import Any

import apsw
import msgspec

from ..pricing import nanos_to_usd
from ..storage.bodies import decode_body

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode


def who() -> str:
    """$USER, else the account name; what the audit trail records as "who"."""
    name = os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        try:
            import getpass
            name = getpass.getuser()
        except Exception:  # no passwd entry (some containers)
            name = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return name


def insert_replay(replay_id: str, *, mode: str, candidate: str, candidate_version: str, baseline: str,
                  evaluator: str, selection: dict, runs_total: int):
    row = (replay_id, time.time(), mode, candidate, candidate_version, baseline, evaluator, _enc(selection).decode(),
           runs_total, os.getpid(), who())

    def write(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO replays (replay_id, created_at, mode, candidate, candidate_version, baseline, "
                     "evaluator, selection, runs_total, pid, who) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
    return write


def insert_replay_run(replay_id: str, original_run_id: str, replay_run_id: str | None, status: str,
                      original_success: bool, candidate_success: bool | None, verdict: Any, detail: dict):
    row = (replay_id, original_run_id, replay_run_id, status, int(original_success),
           None if candidate_success is None else int(candidate_success),
           int(bool(verdict and verdict.judged)),
           None if verdict is None or verdict.accepted is None else int(verdict.accepted),
           verdict.score if verdict else None, verdict.reason if verdict else None, _enc(detail).decode())

    def write(conn: apsw.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO replay_runs (replay_id, original_run_id, replay_run_id, status, "
                     "original_success, candidate_success, judged, accepted, score, verdict, detail) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
    return write


def finish_replay(replay_id: str, status: str, report: dict, runs_done: int, requests: int, cost_nusd: int,
                  note: str | None):
    row = (time.time(), status, runs_done, requests, cost_nusd, note, _enc(report).decode(), replay_id)

    def write(conn: apsw.Connection) -> None:
        conn.execute("UPDATE replays SET finished_at = ?, status = ?, runs_done = ?, requests = ?, cost_nusd = ?, "
                     "note = ?, report = ? WHERE replay_id = ?", row)
    return write


# -- reading ---------------------------------------------------------------------------------

_LIST_COLUMNS = ("replay_id, created_at, finished_at, status, mode, candidate, candidate_version, baseline, evaluator, "
                 "runs_total, runs_done, requests, cost_nusd, pid, who, note")


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row(r: tuple) -> dict:
    keys = [k.strip() for k in _LIST_COLUMNS.split(",")]
    d = dict(zip(keys, r))
    if d["status"] == "running" and not _pid_alive(d["pid"]):
        d["status"] = "interrupted"  # the simulate process died without writing its report
    d["cost_usd"] = nanos_to_usd(d.pop("cost_nusd"))
    return d


def list_replays(conn: apsw.Connection, limit: int = 50) -> list[dict]:
    return [_row(r) for r in conn.execute(
        f"SELECT {_LIST_COLUMNS} FROM replays ORDER BY created_at DESC LIMIT ?", (limit,))]


def get_replay(conn: apsw.Connection, replay_id: str) -> dict | None:
    r = conn.execute(f"SELECT {_LIST_COLUMNS}, report FROM replays WHERE replay_id = ?", (replay_id,)).fetchone()
    if r is None:
        return None
    d = _row(r[:-1])
    d["report"] = _dec(r[-1]) if r[-1] else None
    return d


def latest_replay(conn: apsw.Connection, candidate: str) -> str | None:
    r = conn.execute("SELECT replay_id FROM replays WHERE candidate = ? AND report IS NOT NULL "
                     "ORDER BY created_at DESC LIMIT 1", (candidate,)).fetchone()
    return r[0] if r else None


def replay_runs(conn: apsw.Connection, replay_id: str) -> list[dict]:
    cols = ("original_run_id, replay_run_id, status, original_success, candidate_success, judged, accepted, "
            "score, verdict, detail")
    keys = [k.strip() for k in cols.split(",")]
    out = []
    for r in conn.execute(f"SELECT {cols} FROM replay_runs WHERE replay_id = ? ORDER BY original_run_id", (replay_id,)):
        d = dict(zip(keys, r))
        d["detail"] = _dec(d["detail"]) if d["detail"] else {}
        for k in ("original_success", "candidate_success", "judged", "accepted"):
            d[k] = None if d[k] is None else bool(d[k])
        out.append(d)
    return out


def step_pairs(conn: apsw.Connection, replay_id: str, run_id: str) -> list[tuple[dict, dict | None]]:
    """(original call, its replayed call or None) for each call of the original run, in order."""
    cols = ("call_id, alias, provider, model, status, http_status, input_tokens, output_tokens, cost_nusd, "
            "latency_ms, response, error")
    keys = [k.strip() for k in cols.split(",")]
    originals = [dict(zip(keys, r)) for r in conn.execute(
        f"SELECT {cols} FROM calls WHERE run_id = ? ORDER BY started_at, call_id", (run_id,))]
    replayed = {r[-1]: dict(zip(keys, r[:-1])) for r in conn.execute(
        f"SELECT {cols}, original_call_id FROM calls WHERE replay_id = ? AND original_call_id IN "
        f"(SELECT call_id FROM calls WHERE run_id = ?)", (replay_id, run_id))}
    for step in [*originals, *replayed.values()]:
        step["response"] = decode_body(conn, step["response"])
    return [(o, replayed.get(o["call_id"])) for o in originals]


# -- what a replay reads of the recorded runs ---------------------------------------------------

RECORDED_CALL_COLUMNS = ("call_id, endpoint, started_at, alias, config, provider, model, status, input_tokens, "
                         "output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_nusd, latency_ms, "
                         "stream, request, response")


def recorded_run_ids(conn: apsw.Connection, *, since: float | None = None, until: float | None = None,
                     tags: dict[str, str] | None = None, run_ids: tuple[str, ...] = ()) -> list[str]:
    """Ids of recorded (never replayed) runs matching every given criterion, oldest first."""
    where, params = ["replay_id IS NULL"], []
    if since is not None:
        where.append("started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("started_at <= ?")
        params.append(until)
    for k, v in (tags or {}).items():
        where.append("json_extract(tags, ?) = ?")
        params += [f'$."{k}"', v]
    if run_ids:
        where.append(f"run_id IN ({','.join('?' * len(run_ids))})")
        params += list(run_ids)
    return [r[0] for r in conn.execute(
        f"SELECT run_id FROM runs WHERE {' AND '.join(where)} ORDER BY started_at, run_id", params)]


def recorded_run(conn: apsw.Connection, run_id: str) -> tuple | None:
    """(run_id, tags, status, started_at, last_at, ended_at, outcome) of a run, or None."""
    return conn.execute("SELECT run_id, tags, status, started_at, last_at, ended_at, outcome FROM runs "
                        "WHERE run_id = ?", (run_id,)).fetchone()


def recorded_calls(conn: apsw.Connection, run_id: str) -> list[tuple]:
    """RECORDED_CALL_COLUMNS of the run's calls in order, request and response bodies as stored."""
    return conn.execute(f"SELECT {RECORDED_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY started_at, call_id",
                        (run_id,)).fetchall()


# -- the embedding evaluator's cache of the original answers' vectors ---------------------------

def answer_vector(conn: apsw.Connection, call_id: str, model: str) -> bytes | None:
    row = conn.execute("SELECT vec FROM answer_embeddings WHERE call_id = ? AND model = ?", (call_id, model)).fetchone()
    return bytes(row[0]) if row is not None else None


def save_answer_vector(conn: apsw.Connection, call_id: str, model: str, blob: bytes) -> None:
    conn.execute("INSERT OR REPLACE INTO answer_embeddings (call_id, model, vec) VALUES (?, ?, ?)",
                 (call_id, model, blob))


def cosine_distance(conn: apsw.Connection, a: bytes, b: bytes) -> float:
    """sqlite-vec's distance of two float32 vectors; raises when the extension is not loaded."""
    return float(conn.execute("SELECT vec_distance_cosine(?, ?)", (a, b)).fetchone()[0])
