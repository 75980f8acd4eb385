"""Soak: many clients (half streaming) for a bounded time against the mock and a misbehaving fake
upstream, with the server SIGKILLed and restarted in the middle. `scripts/soak --help`.

Every answer carries its call id (x-mlx-call-id); at the end the server is stopped gracefully and
the database is compared with what the clients saw: lost (seen by a client, not stored), split
into "lost to the SIGKILL" (answered by the killed process: queued, not yet committed) and lost
otherwise (must be 0); duplicated (an id seen twice, or stored twice, or a run's rollup that does
not match its calls). Exit status 1 when anything but the SIGKILL's bounded loss went wrong.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import apsw

from modelux_local.storage.writer import BACKLOG, BATCH_MAX
from tests.fakes.openai_upstream import FakeOpenAI
from tests.server import ServerProcess, write_config

ROUTING = '''
[aliases.mock]
targets = [{ provider = "mock", model = "mock-small" }]
[aliases.flaky]
targets = [{ provider = "flaky", model = "gpt-4o-mini", timeout_s = 3 }, { provider = "mock", model = "mock-small" }]
retries = { attempts = 1, backoff_ms = 10, on = ["429", "5xx", "timeout", "connect"] }
'''


def misbehave(up: FakeOpenAI, stop: threading.Event, seed: int = 7) -> None:
    """Keeps the fake's script topped up with a seeded mix of good and bad answers."""
    rnd = random.Random(seed)
    mix = [({}, 70), ({"delay_s": 0.05}, 8), ({"status": 500}, 5), ({"status": 503}, 2),
           ({"status": 429, "headers": {"retry-after": "0"}}, 5), ({"disconnect": True}, 3),
           ({"delay_s": 0.4}, 3), ({"stream_fail_after": 2}, 2), ({"chunk_delay_s": 0.02}, 2)]
    kinds, weights = [m for m, _ in mix], [w for _, w in mix]
    while not stop.is_set():
        if len(up._queue) < 2000:
            for fields in rnd.choices(kinds, weights, k=2000):
                up.enqueue(**fields)
        stop.wait(0.2)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Tally:
    def __init__(self):
        self.seen: list[tuple[str, float]] = []  # (call id, when the answer ended)
        self.status: Counter = Counter()
        self.errors: Counter = Counter()          # unexpected: any of these fails the soak
        self.cut_streams = 0                      # upstream cut mid-stream: relayed as an error event (recorded)
        self.refused = 0                          # connection refused while the server restarted
        self.cut_by_kill = 0                      # in flight when the server was killed
        self.down = False
        self.up_at = -1e9                         # when the restarted server answered its health check

    def restarting(self) -> bool:
        """Down, or just back: a pooled connection to the killed process fails on its first reuse."""
        return self.down or time.monotonic() < self.up_at + 2.0


async def client(i: int, url: str, end: float, t: Tally) -> None:
    stream = i % 2 == 0
    alias = "@flaky" if i % 4 < 2 else "@mock"
    n = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        while time.monotonic() < end:
            n += 1
            body = {"model": alias, "stream": stream, "messages": [{"role": "user", "content": f"soak {i} {n}"}],
                    "mlx:tags": {"run_id": f"soak-{i}", "agent": "soak"}}
            was_down = t.down
            try:
                async with s.post(url + "/chat/completions", json=body) as r:
                    text = await r.text()
                    cid = r.headers.get("x-mlx-call-id")
                    t.status[r.status] += 1
                    if cid:
                        t.seen.append((cid, time.monotonic()))
                    if r.status != 200:
                        t.errors[f"HTTP {r.status} {alias}{' stream' if stream else ''}: {text[:120]}"] += 1
                    elif stream and '"error"' in text:
                        t.cut_streams += 1
                    elif stream and "[DONE]" not in text:
                        t.errors["stream without [DONE]"] += 1
            except (TimeoutError, aiohttp.ClientError) as e:
                if t.restarting() or was_down:
                    if isinstance(e, aiohttp.ClientConnectorError):
                        t.refused += 1
                    else:
                        t.cut_by_kill += 1
                    await asyncio.sleep(0.05)
                else:
                    t.errors[f"{type(e).__name__}: {e}"[:160]] += 1


async def soak(args) -> int:
    work = Path(args.dir or tempfile.mkdtemp(prefix="modelux-soak-"))
    stop_fake = threading.Event()
    with FakeOpenAI(record=False) as up:
        threading.Thread(target=misbehave, args=(up, stop_fake), daemon=True).start()
        cfg = write_config(work / "config", {
            "modelux.toml": f'[providers.mock]\nkind = "mock"\n[providers.flaky]\nkind = "openai"\n'
                            f'base_url = "{up.base_url}"\napi_key_env = "SOAK_FAKE_KEY"\n',
            "main.toml": ROUTING})
        env = {"SOAK_FAKE_KEY": "sk-soak-fake-key-not-real"}
        srv = ServerProcess(work / "data", cfg, env=env, extra_args=["--quiet"]).start()
        url = srv.base_url
        t = Tally()
        t0 = time.monotonic()
        end = t0 + args.seconds
        rss = {"first": [None, None], "second": [None, None]}
        clients = [asyncio.create_task(client(i, url, end, t)) for i in range(args.clients)]
        await asyncio.sleep(min(1.0, args.seconds / 10))
        rss["first"][0] = rss_mb(srv.proc.pid)
        kill_at = down_for = None
        if args.kill:
            await asyncio.sleep(max(0.0, t0 + args.seconds * args.kill_at - time.monotonic()))
            rss["first"][1] = rss_mb(srv.proc.pid)
            t.down = True
            kill_at = time.monotonic()
            await asyncio.to_thread(srv.stop, signal.SIGKILL)
            again = ServerProcess(work / "data", cfg, env=env, extra_args=["--quiet"])
            again.port = srv.port  # the clients keep their base_url
            await asyncio.to_thread(again.start, 60)
            down_for = time.monotonic() - kill_at
            t.down, t.up_at = False, time.monotonic()
            srv = again
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic()) / 4))
            rss["second"][0] = rss_mb(srv.proc.pid)
        await asyncio.gather(*clients)
        rss["second" if args.kill else "first"][1] = rss_mb(srv.proc.pid)
        health = (await asyncio.to_thread(srv.get, "/healthz")).json()
        await asyncio.to_thread(srv.stop, signal.SIGTERM)
        stop_fake.set()

    db = apsw.Connection(str(srv.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    stored = Counter(r[0] for r in db.execute("SELECT call_id FROM calls"))
    rollup_off = db.execute("SELECT count(*) FROM runs r WHERE r.calls != (SELECT count(*) FROM calls c "
                            "WHERE c.run_id = r.run_id)").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    seen = Counter(cid for cid, _ in t.seen)
    missing = {cid for cid in seen if cid not in stored}
    when = dict(t.seen)
    lost_kill = {c for c in missing if kill_at is not None and when[c] <= kill_at + 0.5}
    lost = missing - lost_kill
    dup = sum(n - 1 for n in seen.values() if n > 1) + sum(n - 1 for n in stored.values() if n > 1) + rollup_off
    calls = sum(t.status.values())
    errors = sum(t.errors.values())
    fmt = lambda a, b: f"{a:.0f} -> {b:.0f} MB" if a and b else "n/a"  # noqa: E731
    print(f"soak: {args.seconds:.0f}s, {args.clients} clients ({(args.clients + 1) // 2} streaming), "
          f"@mock and @flaky (a fake upstream answering 5xx/429/disconnects/slowly, mock as fallback)")
    if kill_at is not None:
        print(f"  SIGKILL at {kill_at - t0:.1f}s, restarted and healthy {down_for:.1f}s later")
    print(f"  calls {calls:,} (HTTP {dict(sorted(t.status.items()))}), errors {errors}")
    print(f"  expected faults: {t.cut_streams} streams cut by the upstream after their first bytes (relayed as an "
          f"error event, recorded), {t.refused} connects refused and {t.cut_by_kill} calls cut while restarting")
    print(f"  records: {len(stored):,} stored, lost {len(lost)}, lost to the SIGKILL {len(lost_kill)} "
          f"(answered, queued, not yet committed; bound {BACKLOG + BATCH_MAX}), duplicated {dup}, integrity {integrity}")
    print(f"  RSS: first server {fmt(*rss['first'])}" + (f", after restart {fmt(*rss['second'])}" if args.kill else ""))
    print(f"  healthz at the end: {health['status']}, storage {health.get('storage')}")
    for what, n in t.errors.most_common(5):
        print(f"  error x{n}: {what}")
    ok = errors == 0 and not lost and dup == 0 and len(lost_kill) <= BACKLOG + BATCH_MAX and integrity == "ok"
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the clients run (default 20)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients, half of them streaming")
    ap.add_argument("--kill-at", type=float, default=0.5, help="when to SIGKILL, as a share of the time (0.5)")
    ap.add_argument("--no-kill", dest="kill", action="store_false", help="no SIGKILL/restart")
    ap.add_argument("--dir", help="working directory (default: a new temp dir)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the fake's own tracebacks for the disconnects it was told to make
    if args.seconds <= 0 or args.clients <= 0 or not 0 < args.kill_at < 1:
        ap.error("--seconds and --clients must be > 0, --kill-at between 0 and 1")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
