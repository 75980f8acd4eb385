"""`serve`: the proxy (and, in a terminal, the TUI) in one process."""
from __future__ import annotations

import gc
import ipaddress
import logging
import os
import sys

from ..config.loader import ConfigSet
from ..errors import ConfigError
from ..pricing import nanos_to_usd
from ..settings import resolve_paths

log = logging.getLogger("modelux")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def banner(cs: ConfigSet, host: str, port: int, db: str) -> str:
    lines = [f"modelux-local listening on http://{host}:{port}/v1  (OpenAI base_url)",
             f"  data:   {db}", f"  config: {cs.source}  (serving @{cs.default_name}: "
             + ", ".join(f"@{a}" for a in cs.routing[cs.default_name].aliases) + ")"]
    if cs.source == "<embedded default>":
        lines.append("  This is the demo default: every alias routes to the built-in mock provider (no API keys).")
        lines.append("  For real providers: `modelux-local init ./modelux-config` then "
                     "`modelux-local serve --config-dir ./modelux-config`.")
    return "\n".join(lines)


def _log_calls(conn, records) -> None:
    """One line per call, written from the writer thread so the hot path never formats logs."""
    for r in records:
        u = r.usage
        cost = nanos_to_usd(r.cost_nanos)
        log.info("%s %s %s -> %s/%s %s %s %dms%s%s", r.run_id or "-", r.endpoint, r.alias or r.model, r.provider,
                 r.model, r.http_status, r.status, r.latency_ms, f" {u.input_tokens}+{u.output_tokens} tok" if u else "",
                 f" ${cost:.6f}" if cost is not None else (" unpriced" if u else ""))


def _port_taken(host: str, port: int) -> str | None:
    """Why (host, port) cannot be bound, checked before anything starts; None when it can."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve {host!r} ({e.strerror})"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as e:
            return e.strerror.lower() if e.strerror else str(e)
    return None


def freeze_startup_heap() -> None:
    """Moves everything allocated at startup (price tables, frameworks, config) out of the
    cyclic GC's reach. A full collection over that heap took 50-80 ms here and stalls every
    in-flight call (it holds the GIL); frozen, later collections only scan what is new.

    A call's objects live milliseconds: with a larger first threshold they die before a young
    collection promotes them, so full collections stay rare (under load they came every 1-2 s
    and took 11-70 ms on one pinned core with the default 700, 10, 10; scripts/bench)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


class FreezeWhenWarm:
    """Writer hook: freezes again after the first calls, once their lazy imports (the HTTP client,
    price data, validation models: ~30k objects here) are loaded, so full collections skip them too."""

    def __init__(self, at: tuple[int, ...] = (100, 2_000)):
        self.at, self.calls = list(at), 0

    def __call__(self, conn, records) -> None:
        self.calls += len(records)
        while self.at and self.calls >= self.at[0]:
            self.at.pop(0)
            gc.freeze()  # no collect first: that would be the very stall this avoids


def run(args) -> int:
    import uvicorn

    from ..proxy.app import create_app
    from ..runtime import Runtime

    paths = resolve_paths(args.data_dir, args.config_dir)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        rt = Runtime(paths)
    except ConfigError as e:
        print(f"modelux-local: config refused: {e.message}", file=sys.stderr)
        return 1
    server_cfg = rt.configs.server.server
    host = args.host or server_cfg.host
    port = args.port if args.port is not None else server_cfg.port
    if not _is_loopback(host):
        if not args.allow_remote or not os.environ.get("MODELUX_TOKEN"):
            print(f"modelux-local: refusing to listen on non-loopback host {host!r}: pass --allow-remote and set "
                  "MODELUX_TOKEN (clients then send it as their API key)", file=sys.stderr)
            return 2
    busy = _port_taken(host, port)
    if busy:
        print(f"modelux-local: cannot listen on {host}:{port}: {busy} (another server running? pass --port)",
              file=sys.stderr)
        return 1
    rt.writer.after_batch.append(FreezeWhenWarm())
    if not args.quiet:
        rt.writer.after_batch.append(_log_calls)
    app = create_app(rt)
    tui = not args.headless and sys.stdout.isatty()
    print(banner(rt.configs, host, port, str(paths.db_path)), file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                            proxy_headers=False)  # we bind loopback; no X-Forwarded-* to trust
    freeze_startup_heap()
    if tui:  # the proxy on its own thread and loop, the TUI in this one (modelux_local/commands/tui_cmd.py)
        from .tui_cmd import serve_with_tui

        return serve_with_tui(rt, config, paths)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
