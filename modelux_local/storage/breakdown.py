"""Where a run's money went: cost and tokens by alias and by provider/model, and how much of its
input repeated the previous call's prompt (what prompt caching would save); per tag value and model
for `analytics --by-model`.

The repeat is measured on the request bodies: a call's prompt is its tools, system and messages in
that order (the order providers cache in); the leading items equal to the previous call's prompt
are the repeated part, and its share of the prompt's characters is taken of the call's input tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import apsw
import msgspec

from .analytics_queries import RunFilter, json_path
from .bodies import decode_body

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class SpendLine:
    name: str                  # "@planner", "openai/gpt-4o-mini"
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_nusd: int
    unpriced_calls: int

    def as_dict(self) -> dict:
        return {"name": self.name, "calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
                "cost_usd": None if self.calls and self.unpriced_calls == self.calls else self.cost_nusd / 1e9,
                "unpriced_calls": self.unpriced_calls}


@dataclass(frozen=True, slots=True)
class Repeats:
    input_tokens: int          # of the calls whose prompt is stored
    repeated_tokens: int       # estimated: input that repeated the previous call's prompt
    cached_tokens: int         # input the provider already served from its cache
    saving_nusd: int           # repeated, not yet cached tokens at (input - cached input) price, where known
    saving_max_nusd: int       # the same at the full input price: what caching could save at most

    @property
    def share(self) -> float:
        return self.repeated_tokens / self.input_tokens if self.input_tokens else 0.0


@dataclass(frozen=True, slots=True)
class RunBreakdown:
    by_alias: list[SpendLine] = field(default_factory=list)
    by_model: list[SpendLine] = field(default_factory=list)
    repeats: Repeats | None = None


def _sums(c: str = "") -> str:
    """The SpendLine figures over calls (`c`: the calls table's alias and a dot, in a join)."""
    return (f"count(*), coalesce(sum({c}input_tokens), 0), coalesce(sum({c}output_tokens), 0), "
            f"coalesce(sum({c}cached_tokens), 0), coalesce(sum({c}cost_nusd), 0), "
            f"sum(CASE WHEN {c}cost_nusd IS NULL AND {c}status = 'ok' THEN 1 ELSE 0 END)")


def _lines(rows) -> list[SpendLine]:
    return sorted((SpendLine(*r) for r in rows), key=lambda s: (-s.cost_nusd, -s.calls, s.name))


def run_breakdown(conn: apsw.Connection, run_id: str) -> RunBreakdown:
    by_alias = conn.execute(f"SELECT coalesce(alias, '(direct)'), {_sums()} FROM calls WHERE run_id = ? "
                            "AND provider IS NOT NULL GROUP BY 1", (run_id,)).fetchall()
    by_model = conn.execute(f"SELECT provider || '/' || model, {_sums()} FROM calls WHERE run_id = ? "
                            "AND provider IS NOT NULL GROUP BY 1", (run_id,)).fetchall()
    prompts = conn.execute("SELECT request, input_tokens, cached_tokens, json_extract(decision, '$.prices') "
                           "FROM calls WHERE run_id = ? AND provider IS NOT NULL AND endpoint != 'embeddings' "
                           "ORDER BY started_at, call_id", (run_id,))
    rows = ((decode_body(conn, r), tin, cached, prices) for r, tin, cached, prices in prompts)
    return RunBreakdown(_lines(by_alias), _lines(by_model), repeats(rows))


def json_object(request: bytes | None) -> dict | None:
    """A request body decoded, when it is a JSON object; else None."""
    if not request:
        return None
    try:
        body = _dec.decode(request)
    except msgspec.DecodeError:
        return None
    return body if isinstance(body, dict) else None


def chat_body(request: bytes | None) -> dict | None:
    """A stored request body that carries a `messages` list (chat or Messages API), decoded; else None."""
    body = json_object(request)
    return body if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"] else None


def _prompt_items(request: bytes | None) -> list[bytes] | None:
    body = chat_body(request)
    if body is None:
        return None
    head = [_enc.encode(body[k]) for k in ("tools", "system") if body.get(k)]
    return head + [_enc.encode(m) for m in body["messages"]]


def repeats(rows) -> Repeats | None:
    """(request, input_tokens, cached_tokens, prices JSON) of a run's calls in order -> the repeats."""
    total = repeated = cached = saving = saving_max = 0
    previous: list[bytes] | None = None
    seen = False
    for request, tin, tcached, prices in rows:
        items = _prompt_items(request)
        if items is None or tin is None:
            previous = items
            continue
        seen = True
        total += tin
        cached += tcached or 0
        if previous:
            same = 0
            for a, b in zip(items, previous):
                if a != b:
                    break
                same += len(a)
            size = sum(len(i) for i in items)
            rep = round(tin * same / size) if size else 0
            repeated += rep
            fresh = max(0, rep - (tcached or 0))  # what the provider already cached saves nothing more
            p = _dec.decode(prices) if prices else None
            if isinstance(p, dict) and p.get("input_per_mtok") is not None:
                rate = p["input_per_mtok"]
                saving_max += round(fresh * rate * 1000)  # $/Mtok -> nano-dollars per token: x 1000
                if p.get("cached_input_per_mtok") is not None:
                    saving += round(fresh * (rate - p["cached_input_per_mtok"]) * 1000)
        previous = items
    return Repeats(total, repeated, cached, saving, saving_max) if seen else None


def spend_by_model(conn: apsw.Connection, group_by: str, flt: RunFilter, idle_timeout_s: float) -> dict[str | None, list[SpendLine]]:
    """Per value of a tag (as `analytics` groups runs), the runs' calls by provider/model."""
    where, params = flt.where(idle_timeout_s)
    if group_by == "agent":
        value_sql, value_params = "agent", []
    else:
        value_sql, value_params = "json_extract(tags, ?)", [json_path(group_by)]
    out: dict[str | None, list] = {}
    for v, *sums in conn.execute(
            f"SELECT g.v, c.provider || '/' || c.model, {_sums('c.')} "
            f"FROM (SELECT run_id, {value_sql} AS v FROM runs{where}) AS g JOIN calls AS c ON c.run_id = g.run_id "
            "WHERE c.provider IS NOT NULL GROUP BY 1, 2", (*value_params, *params)):
        out.setdefault(None if v is None else str(v), []).append(tuple(sums))
    return {v: _lines(rows) for v, rows in out.items()}
