"""The other gateways the overhead section runs beside ours: the floor (bench/floor.py) and LiteLLM.

LiteLLM runs from its own venv under the cache dir (created on first use with
`pip install 'litellm[proxy]'`), without a database, telemetry off, with its bundled cost map
(no network at start-up), one worker.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench._harness import Context, Proc, free_port, wait_ready

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelux-bench"


def start_floor(ctx: Context, upstream_base_url: str, prefix: list[str]) -> tuple[Proc, str, float]:
    port = free_port()
    proc = Proc("floor", [*prefix, sys.executable, "-m", "bench.floor", "--port", str(port),
                          "--upstream", upstream_base_url], ctx.workdir)
    origin = f"http://127.0.0.1:{port}"
    # the floor has no health route: a GET on its POST route answers 405 once it listens
    took = _wait_listening(proc, port, 30)
    return proc, origin, round(took, 2)


def _wait_listening(proc: Proc, port: int, timeout_s: float) -> float:
    import socket

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout_s:.0f}s:\n{proc.tail()}")


def litellm_venv(ctx: Context) -> Path:
    venv = CACHE / "litellm-venv"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        ctx.log(f"overhead: installing litellm[proxy] into {venv} (first use; takes a few minutes) ...")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return venv


def litellm_version(venv: Path) -> str:
    p = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True)
    return p.stdout.strip() or "?"


def start_litellm(ctx: Context, upstream_base_url: str, model: str, prefix: list[str]) -> tuple[Proc, str, float, str]:
    venv = litellm_venv(ctx)
    port = free_port()
    cfg = ctx.workdir / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream_base_url}
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
""")
    # no DATABASE_URL at all: an empty one is refused as an unsupported scheme
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
           "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True",
           # the key the load generator sends; weak on purpose (a local bench), so permitted explicitly
           "LITELLM_MASTER_KEY": "sk-bench", "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "LITELLM_MODE": "PRODUCTION"}
    proc = Proc("litellm", [*prefix, str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", "1"], ctx.workdir, env=env)
    origin = f"http://127.0.0.1:{port}"
    took = wait_ready(proc, origin + "/health/liveliness", 180)
    return proc, origin, took, litellm_version(venv)
