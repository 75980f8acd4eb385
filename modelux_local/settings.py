"""Where things live: data dir (database) and config dir, from flags, env, or platform defaults."""
from __future__ import annotations

import os
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


def resolve_paths(data_dir: str | None = None, config_dir: str | None = None) -> Paths:
    data = data_dir or os.environ.get("MODELUX_HOME") or platformdirs.user_data_dir(APP_NAME)
    conf = config_dir or os.environ.get("MODELUX_CONFIG_DIR") or None
    return Paths(Path(data).expanduser(), Path(conf).expanduser() if conf else None)
