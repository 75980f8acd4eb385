"""Reads a config directory into a validated ConfigSet, naming file, line and key on errors."""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from ..errors import ConfigError
from .schema import BUILTIN_MOCK_MODELS, RoutingConfig, ServerConfig, mock_model_known

SERVER_FILE = "modelux.toml"
DEFAULT_DIR = Path(__file__).parent / "default"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

T = TypeVar("T")


def content_version(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ConfigSet:
    """Everything one load of a config directory produced. Immutable: reloads build a new one."""

    server: ServerConfig
    routing: dict[str, RoutingConfig]
    texts: dict[str, str]                     # routing config name -> file content
    versions: dict[str, str]                  # routing config name -> content hash
    source: str                               # the directory, or "<embedded default>"
    server_version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # routing config name -> file path

    @property
    def default_name(self) -> str:
        return self.server.routing.default or next(iter(self.routing))


def _line_of(text: str, key: str, after: int = 0) -> int | None:
    """The first line at or after `after` that assigns `key` (or opens a table naming it)."""
    pat = re.compile(r'(^|[\s{,.\[])"?' + re.escape(key) + r'"?\s*=|^\s*\[+[^\]]*\b' + re.escape(key) + r"\b")
    for i, line in enumerate(text.splitlines(), 1):
        if i >= after and pat.search(line.split("#", 1)[0]):
            return i
    return None


def _key_path(obj: object, key: str, prefix: tuple = ()) -> tuple | None:
    """Where `key` sits in the parsed TOML (msgspec hides dict keys as `[...]` in its paths)."""
    if isinstance(obj, dict):
        if key in obj:
            return prefix
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _key_path(v, key, (*prefix, k))
        if found is not None:
            return found
    return None


def _locate(text: str, raw: dict, key: str) -> tuple[int | None, str]:
    """Line of `key` and its dotted table path, searching below the table that holds it."""
    path = _key_path(raw, key) or ()
    tables = [str(p) for p in path if not isinstance(p, int)]
    after = 0
    for depth in range(len(tables), 0, -1):  # the nearest [table] header above the key
        header = re.compile(r"^\s*\[+\s*" + r"\s*\.\s*".join(re.escape(t) for t in tables[:depth]) + r"\s*\]")
        hit = next((i for i, line in enumerate(text.splitlines(), 1) if header.match(line)), None)
        if hit:
            after = hit
            break
    return _line_of(text, key, after) or _line_of(text, key), ".".join(tables)


def _check_finite(obj: object, text: str, path: Path, key: str | None = None) -> None:
    """NaN and infinities are valid TOML but no valid setting: a NaN budget or price compares
    false with everything, so it would silently disable what it configures. Checked for every
    key, so keys added later are covered without a line here."""
    if isinstance(obj, float) and not math.isfinite(obj):
        line, where = _locate(text, tomllib.loads(text), key) if key else (None, "")
        name = f"{where}.{key}" if where and key else key
        raise ConfigError(f"{name} = {obj}: numbers must be finite", file=str(path), line=line, key=key)
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, text, path, str(k))
    elif isinstance(obj, list):
        for v in obj:
            _check_finite(v, text, path, key)


def _decode(text: str, path: Path, typ: type[T]) -> T:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(f"invalid TOML: {e}", file=str(path), line=int(m.group(1)) if m else None) from None
    _check_finite(raw, text, path)
    try:
        return msgspec.convert(raw, typ)
    except msgspec.ValidationError as e:
        msg = str(e)
        unknown = re.search(r"unknown field `([^`]+)`", msg)
        at = re.search(r"at `\$([^`]*)`", msg)
        if unknown:
            key = unknown.group(1)
            line, where = _locate(text, raw, key)
            text_msg = f"unknown key {key!r}" + (f" in [{where}]" if where else "")
            raise ConfigError(text_msg, file=str(path), line=line, key=key) from None
        names = re.findall(r"\.([A-Za-z0-9_\-]+)", at.group(1)) if at else []
        key = names[-1] if names else None
        line, table = _locate(text, raw, key) if key else (None, "")
        where = at.group(1).lstrip(".") if at else ""
        if "[...]" in where and key:  # msgspec hides dict keys; name the real table instead
            where = f"{table}.{key}" if table else key
        raise ConfigError(msg.split(" - at ")[0] + (f" for key {where!r}" if where else ""),
                          file=str(path), line=line, key=key) from None


def _alias_line(text: str, alias_name: str, key: str, value: str | None = None) -> int | None:
    """The line of `key` (holding `value`, when given) inside the [aliases.NAME] table."""
    header = re.compile(r"^\s*\[\s*aliases\s*\.\s*\"?" + re.escape(alias_name) + r"\"?\s*\]")
    start = next((i for i, line in enumerate(text.splitlines(), 1) if header.match(line)), 0)
    if value is not None:
        pat = re.compile(re.escape(key) + r'\s*=\s*"' + re.escape(value) + '"')
        for i, line in enumerate(text.splitlines(), 1):
            if i >= start and pat.search(line.split("#", 1)[0]):
                return i
    return _line_of(text, key, start) or start or None


def _check_routing(name: str, rc: RoutingConfig, server: ServerConfig, text: str, path: Path) -> None:
    def fail(msg: str, alias_name: str, key: str, value: str | None = None) -> ConfigError:
        return ConfigError(f"alias @{alias_name}: {msg}", file=str(path), line=_alias_line(text, alias_name, key, value),
                           key=key)

    for alias_name, alias in rc.aliases.items():
        if not alias.targets:
            raise fail("has no targets", alias_name, "targets")
        for t in alias.targets:
            if t.provider not in server.providers:
                known = ", ".join(sorted(server.providers)) or "none"
                raise fail(f"unknown provider {t.provider!r} (providers in {SERVER_FILE}: {known})", alias_name,
                           "provider", t.provider)
            pc = server.providers[t.provider]
            if pc.kind == "mock" and not mock_model_known(pc, t.model):
                # a typo (mock/mock-smal) would otherwise answer 200 and stay unpriced
                raise fail(f"unknown mock model {t.model!r} (models of provider {t.provider!r}: "
                           f"{', '.join(sorted({*pc.models, *BUILTIN_MOCK_MODELS}))})", alias_name, "model", t.model)


def load_dir(directory: Path | None) -> ConfigSet:
    """Loads `directory` (None: the embedded default). Raises ConfigError on the first problem."""
    d = directory or DEFAULT_DIR
    source = str(d) if directory else "<embedded default>"
    if not d.is_dir():
        raise ConfigError(f"config directory {d} does not exist")
    server_path = d / SERVER_FILE
    server_text = server_path.read_text() if server_path.exists() else ""
    server = _decode(server_text, server_path, ServerConfig)
    for pname, p in server.providers.items():
        if not _NAME_RE.match(pname) or "/" in pname:
            raise ConfigError(f"provider name {pname!r} must be letters, digits, '-', '_' or '.'", file=str(server_path), line=_line_of(server_text, pname))
        if p.responses == "native" and p.kind != "openai":
            raise ConfigError(f"provider {pname!r}: responses = \"native\" needs kind = \"openai\" (an upstream "
                              "serving /v1/responses)", file=str(server_path), line=_line_of(server_text, pname))
    routing: dict[str, RoutingConfig] = {}
    texts: dict[str, str] = {}
    files: dict[str, str] = {}
    for path in sorted(d.glob("*.toml")):
        if path.name == SERVER_FILE:
            continue
        name = path.stem
        if not _NAME_RE.match(name):
            raise ConfigError(f"config name {name!r} must be letters, digits, '-', '_' or '.'", file=str(path))
        text = path.read_text()
        rc = _decode(text, path, RoutingConfig)
        _check_routing(name, rc, server, text, path)
        routing[name], texts[name], files[name] = rc, text, str(path)
    if not routing:
        raise ConfigError(f"no routing config (*.toml besides {SERVER_FILE}) in {d}", file=str(d))
    names = ", ".join(sorted(routing))
    if server.routing.default and server.routing.default not in routing:
        raise ConfigError(f"[routing] default = {server.routing.default!r} names no config (configs: {names})",
                          file=str(server_path), line=_line_of(server_text, "default"), key="default")
    if not server.routing.default and len(routing) > 1:
        raise ConfigError(f"several routing configs ({names}): set [routing] default in {SERVER_FILE}",
                          file=str(server_path), key="default")
    for b in server.routing.bind:
        if b.config not in routing:
            raise ConfigError(f"[[routing.bind]] config = {b.config!r} names no config (configs: {names})",
                              file=str(server_path), line=_line_of(server_text, "config"), key="config")
    return ConfigSet(
        server=server, routing=routing, texts=texts,
        versions={n: content_version(t) for n, t in texts.items()},
        source=source, server_version=content_version(server_text), files=files,
    )


def parse_routing_text(name: str, text: str, server: ServerConfig) -> RoutingConfig:
    """Validates a routing config held in the database (promotion / rollback)."""
    path = Path(f"<stored {name}>")
    rc = _decode(text, path, RoutingConfig)
    _check_routing(name, rc, server, text, path)
    return rc
