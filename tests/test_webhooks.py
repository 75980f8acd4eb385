"""Webhooks from the durable outbox: a receiver that is down at first, and a server restart in between,
still get exactly one delivery per event with a valid signature."""
from __future__ import annotations

import json
import time

import apsw
import openai
import pytest

from .conftest import client_for
from .fakes.webhook_receiver import WebhookReceiver
from .server import ServerProcess, free_port, write_config

SECRET = "whsec-test-1234"


def _config(url: str) -> dict[str, str]:
    return {
        "modelux.toml": f"""
[routing]
default = "default"

[providers.mock]
kind = "mock"

[[budgets]]
match = {{ agent = "research-v2" }}
max_calls = 2
warn_at = 0.5

[[webhooks]]
url = "{url}"
events = ["budget.warning", "run.aborted"]
secret_env = "MODELUX_WEBHOOK_SECRET"
""",
        "default.toml": '[aliases.planner]\ntargets = [{ provider = "mock", model = "mock-small" }]\n',
    }


def _attempts(db_path) -> list[tuple]:
    with apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY) as db:
        return list(db.execute("SELECT event_id, attempt, http_status, error FROM webhook_attempts"))


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := pred():
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_receiver_down_then_server_restart_still_one_signed_delivery_per_event(tmp_path):
    port = free_port()
    receiver = WebhookReceiver(port, secret=SECRET)  # not started: connection refused
    cdir = write_config(tmp_path / "config", _config(receiver.url))
    env = {"MODELUX_WEBHOOK_SECRET": SECRET}
    server = ServerProcess(tmp_path / "data", cdir, env=env).start()
    try:
        client = client_for(server)
        tags = {"mlx:tags": {"run_id": "wh-run", "agent": "research-v2"}}
        ask = lambda: client.chat.completions.create(  # noqa: E731
            model="@planner", messages=[{"role": "user", "content": "research step"}], extra_body=tags)
        ask()  # 1 of 2 calls: warn_at 0.5 -> budget.warning
        ask()
        with pytest.raises(openai.APIStatusError) as ei:
            ask()  # the 3rd call exceeds max_calls -> 402 and run.aborted
        assert ei.value.status_code == 402
        _wait(lambda: len({a[0] for a in _attempts(server.db_path)}) == 2, 10, "a failed attempt per event")
        assert all(a[2] is None and a[3] for a in _attempts(server.db_path))  # connection refused, recorded
    finally:
        assert server.stop() is not None  # SIGTERM before any delivery succeeded

    receiver.start()
    server = ServerProcess(tmp_path / "data", cdir, env=env).start()
    try:
        receiver.wait_for(lambda r: len(r.delivered()) >= 2, timeout=15)
        time.sleep(1.5)  # would a duplicate follow?
        hits = receiver.delivered()
        events = sorted(h.json["event"] for h in hits)
        assert events == ["budget.warning", "run.aborted"]
        assert len({h.json["id"] for h in hits}) == 2
        for h in hits:
            assert receiver.signature_ok(h)
            assert h.headers["x-modelux-event"] == h.json["event"]
            assert h.headers["x-modelux-delivery"] == h.json["id"]
            assert h.json["run"]["run_id"] == "wh-run" and h.json["at"].endswith("Z")
        aborted = next(h.json for h in hits if h.json["event"] == "run.aborted")
        assert aborted["run"]["status"] == "aborted" and aborted["detail"]["code"] == "run_budget_exceeded"
        warning = next(h.json for h in hits if h.json["event"] == "budget.warning")
        assert warning["detail"]["used"]["max_calls"] >= 0.5

        # the restarted server remembers the run is over budget (seeded from the database)
        client = client_for(server)
        with pytest.raises(openai.APIStatusError) as ei:
            client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "again"}],
                                           extra_body={"mlx:tags": {"run_id": "wh-run", "agent": "research-v2"}})
        assert ei.value.body["code"] == "run_budget_exceeded"

        doc = json.loads(server.cli("webhooks", "--json").stdout)
        for e in doc["events"]:
            d = e["deliveries"][0]
            assert d["status"] == "delivered" and d["attempts"] >= 2
            assert d["tries"][0]["error"] and d["tries"][-1]["http_status"] == 200
        text = server.cli("webhooks").stdout
        assert "run.aborted" in text and "delivered after" in text
    finally:
        server.stop()
        receiver.stop()


def test_failing_receiver_is_retried_with_backoff(make_server):
    """README: retried after 1, 2, 4 ... seconds. Three failures, then the fourth try is delivered."""
    with WebhookReceiver(fail_first=3, secret=SECRET) as receiver:
        server = make_server(_config(receiver.url), env={"MODELUX_WEBHOOK_SECRET": SECRET})
        client = client_for(server)
        client.chat.completions.create(model="@planner", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mlx:tags": {"run_id": "wh-503", "agent": "no-budget"}})  # no budget.warning
        server.post("/mlx/v1/runs/wh-503/abort", json={"reason": "enough"})
        receiver.wait_for(lambda r: len(r.events("run.aborted")) == 1, timeout=20)
        aborted = [h for h in receiver.hits if h.json["event"] == "run.aborted"]
        assert [h.answered for h in aborted] == [503, 503, 503, 200] and len({h.body for h in aborted}) == 1
        gaps = [b.at - a.at for a, b in zip(aborted, aborted[1:])]
        for gap, want in zip(gaps, (1, 2, 4)):  # not sooner; at most a second late on a busy machine
            assert want - 0.05 <= gap <= want + 1.0, gaps
        assert receiver.events("run.aborted")[0]["detail"] == {"reason": "enough", "code": "run_aborted", "by": "api"}


def test_outbox_retention_and_quiet_completion_of_a_stale_backlog(tmp_path):
    """Straight on a real database file: old settled events are dropped, pending ones kept; runs idle for
    over a day complete without an event each, recently idle ones with one."""
    from modelux_local.analytics.events import complete_idle, emit, prune_outbox
    from modelux_local.config.schema import Webhook
    from modelux_local.storage import Reader, open_db

    db = open_db(tmp_path / "modelux.db")
    reader = Reader(tmp_path / "modelux.db")
    hooks = [Webhook(url="http://127.0.0.1:9/x")]
    now = time.time()
    with db:
        old_done = emit(db, reader, hooks, "run.completed", None, {}, at=now - 40 * 86400)
        old_pending = emit(db, reader, hooks, "run.completed", None, {}, at=now - 40 * 86400)
        fresh = emit(db, reader, hooks, "run.completed", None, {}, at=now)
        db.execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE event_id IN (?, ?)", (old_done, fresh))
        prune_outbox(db, now)
    assert {r[0] for r in db.execute("SELECT event_id FROM events")} == {old_pending, fresh}
    with db:
        for rid, last in (("stale", now - 3 * 86400), ("idle", now - 10)):
            db.execute("INSERT INTO runs (run_id, started_at, last_at) VALUES (?, ?, ?)", (rid, last, last))
        done = complete_idle(db, reader, hooks, idle_timeout_s=5)
    assert done == ["idle"]
    assert dict(db.execute("SELECT run_id, status FROM runs")) == {"stale": "completed", "idle": "completed"}
