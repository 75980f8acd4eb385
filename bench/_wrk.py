"""wrk as the load generator: a Lua script POSTs a body with the request number spliced in and
prints one JSON line with the latency percentiles and counts when done."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local head = [==[%HEAD%]==]
local tail = [==[%TAIL%]==]
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. n .. tail)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect, e.read, e.write, e.timeout))
end
"""


def available() -> str | None:
    return shutil.which("wrk")


def script(path: Path, head: bytes, tail: bytes) -> Path:
    """Writes the Lua script for a body `head + <n> + tail` (the bodies must not contain `]==]`)."""
    path.write_text(_LUA.replace("%HEAD%", head.decode()).replace("%TAIL%", tail.decode()))
    return path


def run(url: str, lua: Path, concurrency: int, seconds: float, timeout_s: float = 30) -> dict:
    """One wrk run with one thread (it shares a core with the upstream); figures in ms and req/s."""
    cmd = [available() or "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
           f"--timeout={int(timeout_s)}s", "-s", str(lua), url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr.strip()[:300]} {p.stdout[-300:]}")
    r = json.loads(line)
    errors = r["non2xx"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    ok = r["requests"] - r["non2xx"]
    answered = ok and r["requests"] > r["err_read"] + r["err_timeout"]  # no latency figure from nothing answered
    out = {"n": r["requests"], "concurrency": concurrency, "errors": errors,
           "p50_ms": round(r["p50_us"] / 1000, 3) if answered else None,
           "p99_ms": round(r["p99_us"] / 1000, 3) if answered else None,
           "rps": round(ok / (r["duration_us"] / 1e6), 1)}
    if errors:
        out["first_error"] = (f"wrk: {r['non2xx']} non-2xx, connect {r['err_connect']}, read {r['err_read']}, "
                              f"write {r['err_write']}, timeout {r['err_timeout']}")
    return out
