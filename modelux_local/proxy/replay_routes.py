"""Management API routes for configs, replays and promotion.

`config promote` / `config rollback` run in the CLI process and commit the new serving state
to the database; the running server picks it up here: a background task checks the audit
table's last id a few times a second and swaps the router atomically (no restart, no dropped
request: a request reads the snapshot once). `POST /mlx/v1/config/reload-serving` does the
same at once. The server acknowledges in `serving_acks`, which is how the CLI can say "live".
"""
from __future__ import annotations

import asyncio
import logging

import msgspec
from litestar import Response, get, post

from ..calls.hooks import Background
from ..errors import NotFound
from ..replay import promotion
from ..storage import replays as store
from ..storage import serving as serving_db
from .errors import JSON

log = logging.getLogger("modelux.replay")
POLL_S = 0.25


def _json(obj, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type=JSON)


def routes(rt, gateway) -> list:
    lock = asyncio.Lock()

    async def apply_and_ack() -> bool:
        async with lock:
            changed = await rt.apply_serving()
            audit_id = rt.serving_audit_id
            await rt.writer.run(lambda conn: serving_db.ack(conn, audit_id))
            return changed

    async def poll() -> None:
        await apply_and_ack()  # tells the CLI which audit entry this server has applied
        seen = rt.serving_audit_id
        while True:
            await asyncio.sleep(POLL_S)
            try:
                last = await asyncio.to_thread(lambda: serving_db.last_audit_id(rt.reader.conn()))
                if last != seen:
                    await apply_and_ack()
                    seen = rt.serving_audit_id
            except Exception:  # a failed poll must not end the task: try again next tick
                log.exception("checking the serving state failed")

    rt.hooks.add(Background(poll))

    @post("/mlx/v1/config/reload-serving")
    async def reload_serving() -> Response:
        changed = await apply_and_ack()
        return _json({"changed": changed, **_serving_state(rt)})

    @get("/mlx/v1/config/serving")
    async def serving() -> Response:
        return _json(_serving_state(rt))

    @get("/mlx/v1/config/history")
    async def config_history() -> Response:
        return _json({"history": await asyncio.to_thread(lambda: promotion.history(rt.reader.conn()))})

    @get("/mlx/v1/replays")
    async def replays() -> Response:
        return _json({"replays": await asyncio.to_thread(lambda: store.list_replays(rt.reader.conn()))})

    @get("/mlx/v1/replays/{replay_id:str}")
    async def replay(replay_id: str) -> Response:
        def read():
            conn = rt.reader.conn()
            r = store.get_replay(conn, replay_id)
            if r is not None:
                r["runs"] = store.replay_runs(conn, replay_id)
            return r

        r = await asyncio.to_thread(read)
        if r is None:
            raise NotFound(f"no replay {replay_id!r}")
        return _json(r)

    return [reload_serving, serving, config_history, replays, replay]


def _serving_state(rt) -> dict:
    snap = rt.snapshot
    return {"audit_id": rt.serving_audit_id, "default": snap.configs.default_name,
            "configs": {name: {"version": version, "pinned": name in rt.serving}
                        for name, (_, version) in snap.router.configs.items()}}
