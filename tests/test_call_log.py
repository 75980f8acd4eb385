"""The per-call log line of `serve` (CallLog, on the writer thread): batched into one write, the same
text to the same handlers as one `log.info` per call."""
from __future__ import annotations

import io
import logging

from modelux_local.commands.serve import CallLog, log_lines
from modelux_local.core.records import CallRecord
from modelux_local.core.usage import Usage


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    lg = logging.getLogger(name)
    lg.handlers[:] = [handler]
    lg.setLevel(logging.INFO)
    lg.propagate = False
    return lg


def _stream(fmt: str) -> tuple[io.StringIO, logging.StreamHandler]:
    out = io.StringIO()
    h = logging.StreamHandler(out)
    h.setFormatter(logging.Formatter(fmt))
    return out, h


def test_log_lines_writes_what_one_log_call_per_line_writes():
    lines = ["run-1 chat @fast -> up/gpt 200 ok 9ms 3+4 tok $0.01", "100% done {braces} %s %d", "x\u00e9 \U0001f600"]
    fmt = "%(levelname)s %(name)s: %(message)s | %(threadName)s"
    batched, h1 = _stream(fmt)
    log_lines(_logger("modelux.t-batched", h1), logging.INFO, lines)
    classic, h2 = _stream(fmt)
    lg = _logger("modelux.t-classic", h2)
    for line in lines:
        lg.info("%s", line)
    assert batched.getvalue() == classic.getvalue().replace("t-classic", "t-batched")
    assert batched.getvalue().count("\n") == 3

    timed, h3 = _stream("%(asctime)s %(levelname)s %(name)s: %(message)s")  # what `serve` configures
    log_lines(_logger("modelux.t-timed", h3), logging.INFO, lines)
    got = timed.getvalue().splitlines()
    assert [g.split(" ", 2)[2] for g in got] == [f"INFO modelux.t-timed: {line}" for line in lines]


def test_other_handlers_get_one_record_per_line_and_levels_apply():
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    lg = _logger("modelux.t-keep", Keep())
    log_lines(lg, logging.INFO, ["a", "b %s"])
    assert [r.getMessage() for r in seen] == ["a", "b %s"] and all(r.levelno == logging.INFO for r in seen)
    lg.setLevel(logging.WARNING)
    log_lines(lg, logging.INFO, ["c"])
    assert len(seen) == 2
    lg.setLevel(logging.INFO)
    lg.handlers[0].setLevel(logging.ERROR)
    log_lines(lg, logging.INFO, ["d"])
    assert len(seen) == 2


def test_call_log_line_text(monkeypatch):
    out, h = _stream("%(name)s: %(message)s")
    lg = logging.getLogger("modelux")
    monkeypatch.setattr(lg, "handlers", [h])
    monkeypatch.setattr(lg, "propagate", False)
    monkeypatch.setattr(lg, "level", logging.INFO)

    def rec(**kw):
        base = dict(call_id="c", run_id="run-7", tags={}, endpoint="chat", started_at=0.0, alias="@fast", config="t",
                    config_version="v", provider="up", model="gpt-4o-mini", status="ok", http_status=200,
                    usage=Usage(23, 18), latency_ms=9.8, ttft_ms=None, stream=False, attempts=[], decision={},
                    error=None, request=b"", cost_nanos=14250)
        return CallRecord(**{**base, **kw})

    CallLog().after_batch(None, [rec(), rec(run_id=None, alias=None, cost_nanos=None),
                                 rec(usage=None, cost_nanos=None, status="error", http_status=502)])
    assert out.getvalue().splitlines() == [
        "modelux: run-7 chat @fast -> up/gpt-4o-mini 200 ok 9ms 23+18 tok $0.000014",
        "modelux: - chat gpt-4o-mini -> up/gpt-4o-mini 200 ok 9ms 23+18 tok unpriced",
        "modelux: run-7 chat @fast -> up/gpt-4o-mini 502 error 9ms",
    ]
