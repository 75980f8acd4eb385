"""The floor: the cheapest gateway one could write on our stack, to measure our features against.

Litestar + uvicorn (uvloop, httptools) + one aiohttp session; it forwards the request body's
bytes to the upstream and relays the answer's bytes (chunk by chunk for streams). No parsing,
no routing, no recording.  python -m bench.floor --port P --upstream http://127.0.0.1:U/v1
"""
from __future__ import annotations

import argparse

import aiohttp
import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

_state: dict = {}


@post("/v1/chat/completions")
async def chat(request: Request) -> Response | Stream:
    body = await request.body()
    resp = await _state["session"].post(_state["url"], data=body, headers={
        "content-type": "application/json", "authorization": request.headers.get("authorization", "")})
    if resp.content_type == "text/event-stream":
        async def relay():
            async with resp:
                async for chunk in resp.content.iter_any():
                    yield chunk
        return Stream(relay(), status_code=resp.status, media_type="text/event-stream")
    async with resp:
        data = await resp.read()
    return Response(data, status_code=resp.status, media_type="application/json")


async def _open() -> None:
    _state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _close() -> None:
    await _state["session"].close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.floor")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL ending in /v1")
    a = ap.parse_args()
    _state["url"] = a.upstream.rstrip("/") + "/chat/completions"
    app = Litestar([chat], on_startup=[_open], on_shutdown=[_close])
    uvicorn.run(app, host="127.0.0.1", port=a.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
