"""Management API routes that change runs: outcome, abort."""
from __future__ import annotations

import msgspec
from litestar import Request, post

from ..analytics import guard_of
from ..analytics.budgets import ABORTED
from ..analytics.events import mark_aborted, record_outcome
from ..errors import BadRequest, NotFound
from ..storage import runs
from .limits import read_body


class OutcomeBody(msgspec.Struct, forbid_unknown_fields=True):
    success: bool
    score: float | None = None
    note: str | None = None


class AbortBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


def _decode(raw: bytes, typ: type, what: str):
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadRequest(f"{what}: {e}") from None


def routes(rt, gateway) -> list:
    guard = guard_of(rt)

    async def outcome(run_id: str, request: Request) -> None:
        body = _decode(await read_body(request, rt.configs.server.limits), OutcomeBody, 'body must be {"success": bool, "score"?: number, "note"?: str}')
        out = {"success": body.success, "score": body.score, "note": body.note}
        # queued behind the calls already handed to the writer, so a run's last call lands first
        found = await rt.writer.run(lambda conn: record_outcome(conn, rt.reader, rt.configs.server.webhooks, run_id, out))
        if not found:
            raise NotFound(f"no run {run_id!r}")
        if guard is not None and guard.signals is not None:
            guard.signals.events()
            guard.signals.completed()
        return None

    async def abort(run_id: str, request: Request) -> None:
        body = _decode(await read_body(request, rt.configs.server.limits), AbortBody, 'body must be {"reason"?: str}')
        live = guard is not None and run_id in guard.runs
        if not live:
            exists = await rt.writer.run(
                lambda conn: runs.exists(conn, run_id))
            if not exists:
                raise NotFound(f"no run {run_id!r}")
        message = f"run {run_id!r} was aborted" + (f": {body.reason}" if body.reason else "")
        if guard is not None:
            guard.block(run_id, ABORTED, message)  # refused from now on, before the database knows
        await rt.writer.run(lambda conn: mark_aborted(conn, rt.reader, rt.configs.server.webhooks, run_id,
                                                      body.reason or "aborted via the API", ABORTED, "api"))
        if guard is not None and guard.signals is not None:
            guard.signals.events()
        return None

    actions = {"outcome": outcome, "abort": abort}

    # one route with a path parameter, so a run id may contain `/` (sent as is or as %2F):
    # the action is the last segment, the run id everything before it
    @post("/mlx/v1/runs/{rest:path}", status_code=204)
    async def run_action(rest: str, request: Request) -> None:
        rest = rest.removeprefix("/")
        run_id, _, action = rest.rpartition("/")
        if not run_id or action not in actions:
            raise NotFound(f"no route POST /mlx/v1/runs/{rest}: use /mlx/v1/runs/RUN_ID/outcome or /abort")
        return await actions[action](run_id, request)

    return [run_action]
