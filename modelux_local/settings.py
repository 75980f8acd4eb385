"""Where things live: data dir (database) and config dir, from flags, env, or platform defaults.

A running `serve` announces itself with a small JSON file in a per-user runtime dir (removed
on exit; a file whose process is gone is stale and ignored), so later commands without
`--data-dir` use the data dir of the one server running on this machine.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "modelux-local"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    config_dir: Path | None   # None: the embedded default serves

    @property
    def db_path(self) -> Path:
        return self.data_dir / "modelux.db"


def resolve_paths(data_dir: str | None = None, config_dir: str | None = None, discover: bool = True) -> Paths:
    """Flags, then MODELUX_HOME / MODELUX_CONFIG_DIR, then (with `discover`) the one running server, then defaults."""
    data = data_dir or os.environ.get("MODELUX_HOME")
    conf = config_dir or os.environ.get("MODELUX_CONFIG_DIR") or None
    if data is None and discover:
        servers = running_servers()
        if len(servers) == 1:
            s = servers[0]
            data = s["data_dir"]
            conf = conf or s.get("config_dir")
            print(f"modelux-local: using the data dir of the server running on http://{s['host']}:{s['port']} "
                  f"(pid {s['pid']}): {data}", file=sys.stderr)
        elif len(servers) > 1:
            print(f"modelux-local: {len(servers)} servers are running; using the default data dir "
                  "(pass --data-dir or set MODELUX_HOME to pick one)", file=sys.stderr)
    data = data or platformdirs.user_data_dir(APP_NAME)
    return Paths(Path(data).expanduser(), Path(conf).expanduser() if conf else None)


def runtime_dir() -> Path:
    return Path(os.environ.get("MODELUX_RUNTIME_DIR") or platformdirs.user_runtime_dir(APP_NAME))


def announce_server(paths: Paths, host: str, port: int) -> Path | None:
    """Writes this server's pid/port/data dir; the caller removes the file on exit. None if it cannot."""
    info = {"pid": os.getpid(), "host": host, "port": port, "data_dir": str(paths.data_dir.resolve()),
            "config_dir": str(paths.config_dir.resolve()) if paths.config_dir else None}
    path = runtime_dir() / f"server-{os.getpid()}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)
    except OSError:
        return None  # discovery is a convenience; serving does not depend on it
    return path


def running_servers() -> list[dict]:
    """Announced servers whose process is still alive, by port."""
    out = []
    try:
        files = sorted(runtime_dir().glob("server-*.json"))
    except OSError:
        return []
    for f in files:
        try:
            info = json.loads(f.read_text())
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:  # stale: the server was killed before it could remove its file
            f.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass  # alive, owned by someone else
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.append(info)
    return sorted(out, key=lambda i: i["port"])
