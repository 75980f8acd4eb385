"""`tui`: the terminal UI against a database (a server running elsewhere, or a stopped one);
and `serve_with_tui`, which `serve` calls in a terminal: the proxy on its own thread and event
loop, the TUI in the main thread, so drawing the screen never delays a proxied call."""
from __future__ import annotations

import logging
import signal
import sys
import threading

from ..settings import resolve_paths


def register(sub, config_sub, common) -> None:
    p = sub.add_parser("tui", help="the terminal UI against the database (live while a server writes to it)")
    common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..tui.app import ModeluxApp
    from ..tui.data import DataSource

    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        print(f"modelux-local: no database at {paths.db_path} yet: the TUI will show runs once a server "
              "writes there", file=sys.stderr)
    data = DataSource(paths.db_path, paths.config_dir)
    ModeluxApp(data, subtitle=f"{paths.db_path} (read-only)").run()
    return 0


def serve_with_tui(rt, config, paths) -> int:
    """Runs uvicorn on a thread with its own loop and the TUI here; `q` stops the proxy gracefully
    (uvicorn's shutdown runs the lifespan, which drains the writer)."""
    import uvicorn

    from ..storage.db import private_file
    from ..tui.app import ModeluxApp
    from ..tui.data import DataSource

    # log lines would tear the screen: they go to a file next to the database
    log_path = paths.data_dir / "serve.log"
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    private_file(log_path)  # call lines name runs and models: owner-only, like the database
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)

    # The TUI thread shares the GIL with the proxy's: a shorter switch interval (default 5 ms) bounds
    # how long a redraw can hold a proxied call waiting (measured: scripts/bench --only tui).
    sys.setswitchinterval(0.001)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="modelux-proxy", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.02)
    if not server.started:
        print(f"modelux-local: the proxy did not start (see {log_path})", file=sys.stderr)
        return 1

    host, port = config.host, config.port
    app = ModeluxApp(DataSource(paths.db_path, paths.config_dir, runtime=rt),
                     subtitle=f"serving http://{host}:{port}/v1 · log {log_path}")
    # SIGTERM stops like `q` (the default handler would skip draining the writer)
    signal.signal(signal.SIGTERM, lambda *_: app.exit())
    signal.signal(signal.SIGHUP, lambda *_: app.exit())  # terminal closed: drain, don't die mid-write
    try:
        app.run()
    finally:
        server.should_exit = True
        thread.join(60)
    print(f"modelux-local: stopped (log: {log_path})", file=sys.stderr)
    return 0
