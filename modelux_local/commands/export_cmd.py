"""`export --otlp URL | --jsonl FILE [--since D]`: ship recorded calls to other tools (once; the
live exporter of `serve` is export/live.py, with the same encoder)."""
from __future__ import annotations

import os
import sys
import time

from ..core.durations import DurationError, since_timestamp
from ..settings import resolve_paths
from ._common import USAGE, fail, no_database, positive_int


def register(sub, config_sub, common) -> None:
    p = sub.add_parser("export", help="ship traces: OTLP/HTTP (OpenTelemetry GenAI conventions) or JSONL")
    common(p)
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--otlp", metavar="URL", help="OTLP/HTTP base URL; /v1/traces is appended "
                                                     "(as OTEL_EXPORTER_OTLP_ENDPOINT does)")
    dest.add_argument("--jsonl", metavar="FILE", help="one JSON object per call ('-' for stdout)")
    p.add_argument("--since", metavar="D", help="only calls started in the last D (30m, 24h, 7d)")
    p.add_argument("--include-replays", action="store_true", help="also export calls made by replays")
    p.add_argument("--header", action="append", default=[], metavar="K=V",
                   help="extra HTTP header for --otlp (repeatable; OTEL_EXPORTER_OTLP_HEADERS is read too)")
    p.add_argument("--batch", type=positive_int, default=500, help="calls per OTLP request (default 500)")
    p.add_argument("--protocol", choices=("http/protobuf", "http/json"),
                   help="OTLP encoding (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)")
    p.add_argument("--content", action="store_true",
                   help="include message content (gen_ai.input.messages / gen_ai.output.messages)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config.loader import load_dir
    from ..errors import ConfigError
    from ..storage import connect

    try:
        since = since_timestamp(args.since)
    except DurationError as e:
        return fail(str(e), USAGE)
    if args.jsonl and args.header:
        return fail("--header applies to --otlp only", USAGE)
    if args.otlp and not args.otlp.startswith(("http://", "https://")):
        return fail(f"--otlp {args.otlp!r} is not an http(s) URL (e.g. http://127.0.0.1:4318)", USAGE)
    if args.jsonl and (args.protocol or args.content):
        return fail("--protocol and --content apply to --otlp only", USAGE)
    paths = resolve_paths(args.data_dir, args.config_dir)
    if not paths.db_path.exists():
        return no_database(paths)
    try:
        kinds = {n: p.kind for n, p in load_dir(paths.config_dir).server.providers.items()}
    except ConfigError:
        kinds = {}  # provider names still export; only gen_ai.provider.name falls back to them
    conn = connect(paths.db_path, readonly=True)
    try:
        if args.jsonl:
            return _jsonl(conn, args, since)
        target = _target(args)
        if target is None:
            return USAGE
        return _otlp(conn, args, since, kinds, target)
    finally:
        conn.close()


class _Meter:
    """A progress line on stderr when it is a terminal; a summary line either way."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done, self.t0, self.last = total, what, 0, time.monotonic(), 0.0
        self.tty = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            frac = self.done / self.total if self.total else 1
            bar = "#" * int(frac * 30)
            rate = self.done / max(now - self.t0, 1e-6)
            sys.stderr.write(f"\r  [{bar:<30}] {self.done:,}/{self.total:,} {self.what}  {rate:,.0f}/s ")
            sys.stderr.flush()

    def finish(self, message: str) -> None:
        if self.tty:
            sys.stderr.write("\n")
        print(message, file=sys.stderr)


def _jsonl(conn, args, since) -> int:
    from ..export import count_calls, iter_calls, jsonl_line
    from ..storage.db import open_private

    meter = _Meter(count_calls(conn, since, args.include_replays), "calls")
    try:
        out = sys.stdout.buffer if args.jsonl == "-" else open_private(args.jsonl)  # 0600: stored prompts
    except OSError as e:
        return fail(f"cannot write {args.jsonl}: {e.strerror}")
    n = 0
    try:
        for step in iter_calls(conn, since, args.include_replays):
            out.write(jsonl_line(step))
            n += 1
            if n % 200 == 0:
                meter.add(200)
        meter.add(n % 200)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    meter.finish(f"exported {n:,} calls to {args.jsonl if args.jsonl != '-' else 'stdout'}")
    return 0


def _target(args):
    """The OtlpTarget of the flags (and OTEL_EXPORTER_OTLP_HEADERS / _PROTOCOL), or None after an error."""
    from ..export.otlp_http import OtlpSettingError, OtlpTarget, check_protocol, env_headers, parse_headers, traces_url

    try:
        headers = {**env_headers(), **parse_headers(",".join(args.header), "--header")}
        protocol = check_protocol(args.protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf",
                                  "--protocol" if args.protocol else "OTEL_EXPORTER_OTLP_PROTOCOL")
        return OtlpTarget(traces_url(args.otlp), headers, protocol, args.content, args.include_replays)
    except OtlpSettingError as e:
        fail(str(e), USAGE)
        return None


def _otlp(conn, args, since, kinds: dict[str, str], target) -> int:
    import httpx

    from ..export import count_calls, encode, iter_calls, runs_by_id, spans_for
    from ..export.otlp_http import SendError, post

    meter = _Meter(count_calls(conn, since, args.include_replays), "calls")
    seen_runs: set[str] = set()
    sent_calls = sent_spans = 0
    batch: list[dict] = []

    def flush(client: httpx.Client) -> bool:
        nonlocal sent_calls, sent_spans, batch
        new_runs = sorted({s["run_id"] for s in batch if s["run_id"]} - seen_runs)
        seen_runs.update(new_runs)
        spans = spans_for(batch, runs_by_id(conn, new_runs), kinds, target.content)
        body, ctype = encode(spans, target.protocol)
        for attempt in range(4):
            try:
                post(client, target, body, ctype)
                break
            except SendError as e:
                if not e.retryable or attempt == 3:
                    meter.finish(f"error: {target.url} refused the export ({e.message}); "
                                 f"{sent_calls:,} calls / {sent_spans:,} spans were sent before it")
                    return False
            time.sleep(0.5 * 2 ** attempt)
        sent_calls += len(batch)
        sent_spans += len(spans)
        meter.add(len(batch))
        batch = []
        return True

    with httpx.Client(timeout=30) as client:
        for step in iter_calls(conn, since, args.include_replays):
            batch.append(step)
            if len(batch) >= max(1, args.batch) and not flush(client):
                return 1
        if batch and not flush(client):
            return 1
    meter.finish(f"exported {sent_calls:,} calls as {sent_spans:,} spans ({len(seen_runs):,} runs) to {target.url}")
    return 0
