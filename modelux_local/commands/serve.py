"""`serve`: the proxy (and, in a terminal, the TUI) in one process."""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import shlex
import sys

import apsw

from ..calls import Addon
from ..config.loader import ConfigSet
from ..errors import ConfigError
from ..pricing import format_usd, nanos_to_usd
from ..settings import announce_server, resolve_paths
from ..storage.db import check_writable

log = logging.getLogger("modelux")


def register(sub, config_sub, common) -> None:
    s = sub.add_parser("serve", help="run the proxy (and the TUI in a terminal)")
    common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--headless", action="store_true", help="no TUI: the proxy alone, with log lines")
    s.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (needs MODELUX_TOKEN)")
    s.add_argument("--quiet", action="store_true", help="no per-call log lines")
    s.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def banner(cs: ConfigSet, host: str, port: int, data_dir: str) -> str:
    lines = [f"modelux-local listening on http://{host}:{port}/v1  (OpenAI base_url)",
             f"  data:   {data_dir}/modelux.db",
             f"  reuse:  export MODELUX_HOME={shlex.quote(data_dir)}   (other commands in this shell use this data;"
             " while this is the only server running they find it anyway)",
             f"  config: {cs.source}  (serving @{cs.default_name}: "
             + ", ".join(f"@{a}" for a in cs.routing[cs.default_name].aliases) + ")"]
    if cs.source == "<embedded default>":
        lines.append("  This is the demo default: every alias routes to the built-in mock provider (no API keys).")
        lines.append("  For real providers: `modelux-local init ./modelux-config` then "
                     "`modelux-local serve --config-dir ./modelux-config`.")
    return "\n".join(lines)


class Unannounce(Addon):
    """Removes this server's discovery file (settings.announce_server) when it stops."""

    def __init__(self, path):
        self.path = path

    async def stop(self) -> None:
        await asyncio.to_thread(self.path.unlink, missing_ok=True)


class CallLog(Addon):
    """One line per call, written from the writer thread so the hot path never formats logs."""

    def after_batch(self, conn, records) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        lines = []
        for r in records:
            u = r.usage
            cost = nanos_to_usd(r.cost_nanos)
            lines.append("%s %s %s -> %s/%s %s %s %dms%s%s" % (
                r.run_id or "-", r.endpoint, r.alias or r.model, r.provider, r.model, r.http_status, r.status,
                r.latency_ms, f" {u.input_tokens}+{u.output_tokens} tok" if u else "",
                f" {format_usd(cost)}" if cost is not None else (" unpriced" if u else "")))
        log_lines(log, logging.INFO, lines)


def log_lines(logger: logging.Logger, level: int, lines: list[str]) -> None:
    """`logger.log(level, line)` for each line: the same text to the same handlers, at a fraction
    of the cost (the writer logged each call at ~35 us of CPU). The lines of a batch share one
    timestamp, and a plain StreamHandler with a plain Formatter (what `serve` configures) formats
    the line's prefix and suffix once and gets all lines in one write and one flush. Other
    handlers (files, test capture, custom formatters) get one LogRecord per line as usual."""
    if not lines or not logger.isEnabledFor(level):
        return
    template = logger.makeRecord(logger.name, level, "(unknown file)", 0, _SENTINEL, None, None)
    if logger.filters and not logger.filter(template):
        return
    per_line: list[logging.LogRecord] | None = None
    c: logging.Logger | None = logger
    found = 0
    while c is not None:
        for h in c.handlers:
            found += 1
            if level < h.level:
                continue
            text = _one_write(h, template, lines)
            if text is not None:
                h.acquire()
                try:
                    h.stream.write(text)
                    h.flush()
                except Exception:
                    h.handleError(template)
                finally:
                    h.release()
                continue
            if per_line is None:
                per_line = [logger.makeRecord(logger.name, level, "(unknown file)", 0, line, None, None) for line in lines]
            for rec in per_line:
                h.handle(rec)
        c = c.parent if c.propagate else None
    if not found and logging.lastResort is not None and level >= logging.lastResort.level:
        for line in lines:
            logging.lastResort.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, line, None, None))


_SENTINEL = "\x00modelux-line\x00"


def _one_write(h: logging.Handler, template: logging.LogRecord, lines: list[str]) -> str | None:
    """The text a plain StreamHandler would write for `lines`, or None for any other handler."""
    if type(h) is not logging.StreamHandler or h.filters:
        return None
    fmt = h.formatter or logging._defaultFormatter
    if type(fmt) is not logging.Formatter:
        return None
    template.msg = _SENTINEL
    head, sep, tail = fmt.format(template).partition(_SENTINEL)
    if not sep or _SENTINEL in tail:
        return None
    tail += h.terminator
    return "".join([head + line + tail for line in lines])


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

    from ..proxy.app import asgi_app
    from ..runtime import Runtime
    from .http_limits import protocol_for

    paths = resolve_paths(args.data_dir, args.config_dir, discover=False)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        rt = Runtime(paths)
    except ConfigError as e:
        print(f"modelux-local: config refused: {e.message}", file=sys.stderr)
        return 1
    try:
        check_writable(paths.db_path)
    except (apsw.Error, OSError) as e:
        print(f"modelux-local: cannot write the database {paths.db_path}: {e} (is the data dir writable by you, "
              "with free space? --data-dir or MODELUX_HOME moves it)", file=sys.stderr)
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
        rt.hooks.add(CallLog())
    app = asgi_app(rt)
    from .cassette_cmd import banner_line, playback_for  # --cassette / --on-miss, and the dev cache

    pb = playback_for(args)
    if isinstance(pb, int):
        return pb
    from ..playback import attach

    attach(app.state.gateway, rt.hooks, pb)
    tui = not args.headless and sys.stdout.isatty()
    print(banner(rt.configs, host, port, str(paths.data_dir.resolve())), file=sys.stderr, flush=True)
    if banner_line(pb):
        print(banner_line(pb), file=sys.stderr, flush=True)
    limits = rt.configs.server.limits
    http = protocol_for(limits.max_header_kb, limits.header_timeout_s)  # header size and read time
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http=http, lifespan="on",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                            proxy_headers=False)  # we bind loopback; no X-Forwarded-* to trust
    freeze_startup_heap()
    announced = announce_server(paths, host, port)
    if announced is not None:  # uvicorn re-raises SIGTERM after its shutdown, so `finally` alone is not enough
        rt.hooks.add(Unannounce(announced))
    try:
        if tui:  # the proxy on its own thread and loop, the TUI in this one (modelux_local/commands/tui_cmd.py)
            from .tui_cmd import serve_with_tui

            return serve_with_tui(rt, config, paths)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else 1
    finally:
        if announced is not None:
            announced.unlink(missing_ok=True)
