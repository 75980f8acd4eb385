"""Promotion and rollback of routing configs, with a gate and an audit trail in the database.

A promotion makes a candidate's content the serving content of a config name (the one the
replayed runs were routed through, else the default). Every content that serves this way is
kept in `serving_versions` under a number (1, 2, 3...), so a rollback restores exactly what
served before, even if the file has changed or is gone since. A running server polls the
audit table and swaps its router atomically (see `read_serving` and proxy/replay_routes.py).
"""
from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import apsw
import msgspec

from ..config.loader import ConfigSet, content_version, parse_routing_text
from ..config.schema import PromotionSection
from ..errors import BadRequest, ConfigError, ModeluxError, NotFound
from ..storage import replays as store
from ..storage import serving as db

_enc = msgspec.json.Encoder().encode
_dec = msgspec.json.Decoder().decode


class GateRefused(ModeluxError):
    status = 409
    type = "invalid_request_error"
    code = "promotion_gate_failed"

    def __init__(self, failures: list[str]):
        super().__init__("promotion refused: " + "; ".join(failures))
        self.failures = failures


@dataclass(frozen=True)
class Serving:
    name: str
    number: int | None          # None: the file serves (never promoted)
    content: str
    content_version: str
    source: str


def current_serving(conn: apsw.Connection, cs: ConfigSet, name: str) -> Serving:
    row = db.pinned(conn, name)
    if row is not None:
        return Serving(name, row[0], row[1], row[2], row[3])
    if name not in cs.texts:
        raise NotFound(f"no config @{name}")
    return Serving(name, None, cs.texts[name], cs.versions[name], f"file {cs.files.get(name, cs.source)}")


def _new_version(conn: apsw.Connection, name: str, content: str, source: str) -> int:
    return db.new_version(conn, name, content, content_version(content), source)


def gate(report: dict | None, settings: PromotionSection) -> list[str]:
    """Which thresholds a replay's figures fail (empty: it passes)."""
    if report is None:
        return ["no replay of this candidate: run `modelux simulate --config=@NAME` first, or pass --force"]
    fails = []
    if report.get("partial"):
        fails.append(f"replay {report['replay_id']} is partial ({report.get('stopped_reason') or 'stopped early'})")
    if report.get("runs_replayed", 0) == 0:
        fails.append(f"replay {report['replay_id']} replayed no run")
    d = report.get("delta") or {}
    label = {"agent_success": "agent success", "p95_latency_s": "p95 latency", "error_rate": "error rate"}
    checks = [
        ("agent_success", lambda v: -v * 100 > settings.max_success_drop_pp,
         lambda v: f"agent success drops {-v * 100:.1f}pp (max_success_drop_pp = {settings.max_success_drop_pp:g})"),
        ("p95_latency_s", lambda v: v * 100 > settings.max_p95_latency_increase_pct,
         lambda v: f"p95 latency rises {v * 100:.1f}% (max_p95_latency_increase_pct = "
                   f"{settings.max_p95_latency_increase_pct:g})"),
        ("error_rate", lambda v: v * 100 > settings.max_error_rate_increase_pp,
         lambda v: f"error rate rises {v * 100:.2f}pp (max_error_rate_increase_pp = "
                   f"{settings.max_error_rate_increase_pp:g})"),
    ]
    for metric, failing, say in checks:
        v = d.get(metric)
        if v is None:
            fails.append(f"{label[metric]} not measured by replay {report['replay_id']} "
                         f"({report.get('mode')} mode)")
        elif failing(v):
            fails.append(say(v))
    return fails


def _figures(report: dict | None) -> dict | None:
    if report is None:
        return None
    keys = ("replay_id", "mode", "runs_replayed", "requests", "window", "current", "candidate", "delta", "ci",
            "quality", "replay_cost_usd", "partial")
    return {k: report.get(k) for k in keys}


def promote(conn: apsw.Connection, cs: ConfigSet, candidate: str, *, replay_id: str | None = None,
            reason: str | None = None, force: bool = False) -> dict:
    candidate = candidate.lstrip("@")
    if candidate not in cs.routing:
        raise NotFound(f"no config @{candidate} in {cs.source}; configs: " + ", ".join("@" + n for n in cs.routing))
    replay_id = replay_id or store.latest_replay(conn, candidate)
    report = None
    if replay_id is not None:
        rp = store.get_replay(conn, replay_id)
        if rp is None:
            raise NotFound(f"no replay {replay_id!r}")
        if rp["candidate"] != candidate:
            raise BadRequest(f"replay {replay_id} replayed @{rp['candidate']}, not @{candidate}")
        report = rp["report"]
        if report is None:
            raise BadRequest(f"replay {replay_id} has no report ({rp['status']})")
    failures = gate(report, cs.server.promotion)
    if report is not None and report.get("candidate_version") != cs.versions[candidate]:
        failures.append(f"@{candidate} changed since replay {replay_id} (replayed version "
                        f"{report.get('candidate_version')}, file now {cs.versions[candidate]})")
    if failures and not force:
        raise GateRefused(failures)
    target = (report or {}).get("baseline_config", "").lstrip("@") or cs.default_name
    if target not in cs.routing:
        target = cs.default_name
    text = cs.texts[candidate]
    with db.immediate(conn):
        cur = current_serving(conn, cs, target)
        if cur.content_version == content_version(text):
            raise BadRequest(f"@{target} already serves this content of @{candidate} (version {cur.content_version})")
        from_number = cur.number if cur.number is not None else _new_version(conn, target, cur.content, cur.source)
        to_number = _new_version(conn, target, text, f"@{candidate} ({cs.files.get(candidate, cs.source)})")
        db.set_serving(conn, target, to_number)
        audit_id = _audit(conn, "promote", target, from_number, to_number, cur.content_version,
                          content_version(text), f"@{candidate}", replay_id, _figures(report), reason, force and bool(failures))
    return {"audit_id": audit_id, "name": target, "candidate": f"@{candidate}", "from_number": from_number,
            "to_number": to_number, "from_version": cur.content_version, "to_version": content_version(text),
            "replay_id": replay_id, "forced_past": failures if force else [], "who": store.who()}


def rollback(conn: apsw.Connection, cs: ConfigSet, *, to: int | None = None, reason: str | None = None) -> dict:
    """Restores a numbered serving content (default: what served before the last change)."""
    if to is None:
        last = db.last_change(conn)
        if last is None:
            raise BadRequest("nothing to roll back: no promotion in the audit trail (`modelux config history`)")
        name, to, _ = last
    row = db.version(conn, to)
    if row is None:
        raise NotFound(f"no serving version {to}; see `modelux config history`")
    name, content, version = row["name"], row["content"], row["content_version"]
    try:
        parse_routing_text(name, content, cs.server)  # still valid against today's providers?
    except ConfigError as e:
        raise BadRequest(f"version {to} of @{name} cannot serve with the current providers: {e.message}") from None
    with db.immediate(conn):
        cur = current_serving(conn, cs, name) if name in cs.texts else None
        if cur is not None and cur.number == to:
            raise BadRequest(f"@{name} already serves version {to}")
        if cs.texts.get(name) == content:
            # the file holds exactly this content again: let the file serve, so later edits of it take effect
            db.unpin(conn, name)
        else:
            db.set_serving(conn, name, to)
        audit_id = _audit(conn, "rollback", name, cur.number if cur else None, to,
                          cur.content_version if cur else None, version, None, None, None, reason, False)
    return {"audit_id": audit_id, "name": name, "from_number": cur.number if cur else None, "to_number": to,
            "from_version": cur.content_version if cur else None, "to_version": version, "who": store.who()}


def _audit(conn, action, name, from_number, to_number, from_version, to_version, candidate, replay_id, figures,
           reason, forced) -> int:
    return db.add_audit(conn, who=store.who(), action=action, name=name, from_number=from_number,
                        to_number=to_number, from_version=from_version, to_version=to_version, candidate=candidate,
                        replay_id=replay_id, figures=_enc(figures).decode() if figures else None, reason=reason,
                        forced=forced)


def history(conn: apsw.Connection) -> list[dict]:
    out = []
    for d in db.audit_trail(conn):
        d["figures"] = _dec(d["figures"]) if d["figures"] else None
        d["forced"] = bool(d["forced"])
        out.append(d)
    return out


def version_info(conn: apsw.Connection, number: int) -> dict | None:
    d = db.version(conn, number)
    if d is None:
        return None
    try:
        aliases = tomllib.loads(d["content"]).get("aliases") or {}
    except tomllib.TOMLDecodeError:
        aliases = {}
    d["routes"] = {f"@{a}": [f"{t.get('provider')}/{t.get('model')}" for t in (v.get("targets") or [])]
                   for a, v in aliases.items()}
    return d


# -- the running server's side ------------------------------------------------------------------

def wait_live(db_path: Path, audit_id: int, timeout_s: float = 3.0) -> tuple[list[int], list[int]]:
    """Waits for running servers on this database to apply `audit_id`: (pids that did, pids that did not)."""
    from ..storage import connect

    conn = connect(db_path)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rows = [(pid, aid) for pid, aid in db.acks(conn)
                    if store._pid_alive(pid) and pid != os.getpid()]
            done = [p for p, a in rows if a >= audit_id]
            waiting = [p for p, a in rows if a < audit_id]
            if not waiting or time.monotonic() > deadline:
                return done, waiting
            time.sleep(0.05)
    finally:
        conn.close()
