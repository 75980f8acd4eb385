"""The playback source the gateway asks before routing: a cassette, and the development cache.

`Playback.lookup(ctx, raw, cache)` runs on the event loop for every call once attached (a few dict
lookups when neither a cassette nor a cache applies). It returns a `Hit` to answer the call, None
to route it normally, or raises `CassetteMiss` (`--on-miss error`). `after(ctx, rec)`, its
calls.Addon hook, keeps the answers of calls it let through that should be remembered: misses in
`--on-miss record` (appended to the cassette by a worker thread, written atomically) and
cacheable calls. A served call's record is free (`FREE_PRICES`) and says what it saved.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from ..calls import Addon
from ..core.durations import parse_duration
from ..core.usage import Usage, usage_of_body
from ..pricing.book import NANOS_PER_USD, Rates
from ..routing.executor import Attempt
from .answers import as_result, as_stream
from .format import Cassette, Entry
from .matcher import DevCache, Matcher
from .normalise import RULES, key_of, normalise

log = logging.getLogger("modelux.playback")
_dec = msgspec.json.Decoder()
ON_MISS = ("error", "live", "record")
DEFAULT_CACHE_TTL = "1h"


class _FreePrices:
    """The price book of a served call: recorded answers cost nothing."""

    rates_ = Rates("playback: a recorded answer, no provider called", Decimal(0), Decimal(0), None, None)

    def rates(self, provider: str, model: str) -> Rates:
        return self.rates_

    def cost_nanos(self, provider: str, model: str, usage: Usage) -> int:
        return 0


FREE_PRICES = _FreePrices()


@dataclass(frozen=True, slots=True)
class ServedBy:
    """Stands where a routing TargetPlan stands in the records: provider `cassette` or `cache`."""

    provider: str
    model: str

    @property
    def label(self) -> str:
        return self.provider


class Hit:
    """A recorded answer for one call; `execute` takes the place of routing's `execute` at the seam."""

    def __init__(self, entry: Entry, served_by: str, stream: bool):
        self.entry = entry
        self.stream = stream
        model = (entry.answered_by or "").partition("/")[2] or entry.answered_by or "recorded"
        self.target = ServedBy(served_by, model)

    async def execute(self, plan: Any, send: Any, attempts: list[Attempt]):
        attempts.append(Attempt(self.target.provider, self.target.model, "ok", 200, 0.0))
        return (as_stream(self.entry) if self.stream else as_result(self.entry)), self.target


class Playback(Addon):
    def __init__(self, cassette: Cassette | None = None, on_miss: str = "error"):
        if on_miss not in ON_MISS:
            raise ValueError(f"on_miss must be one of {', '.join(ON_MISS)}, not {on_miss!r}")
        self.cassette = cassette
        self.on_miss = on_miss
        self.matcher = Matcher(cassette.entries, str(cassette.path)) if cassette else None
        self.cache = DevCache()
        self._ttls: dict[tuple[str, str, str | None], float | None] = {}
        self._pending: dict[str, tuple[str, Entry, bytes]] = {}  # call_id -> (what for, entry, key)
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="modelux-cassette") if on_miss == "record" else None

    # -- the seam's question -------------------------------------------------------------------

    def lookup(self, ctx: Any, raw: bytes, cache: str | None = None) -> Hit | None:
        ttl = self._cache_ttl(ctx, cache)
        if (self.matcher is None and ttl is None) or ctx.endpoint not in RULES:
            return None
        body = _dec.decode(raw)
        request = normalise(ctx.endpoint, body)
        key = key_of(ctx.endpoint, request)
        if self.matcher is not None:
            entry = self.matcher.take(key, ctx.run_id)
            if entry is not None:
                return self._hit(ctx, entry, "cassette")
            if self.on_miss == "error":
                raise self.matcher.miss(ctx.endpoint, request, key, ctx.run_id)
            if self.on_miss == "record":
                self._pending[ctx.call_id] = ("record", Entry(ctx.endpoint, ctx.plan.alias, request), key)
        if ttl is not None:
            entry = self.cache.get(key, ttl)
            if entry is not None:
                return self._hit(ctx, entry, "cache")
            self._pending.setdefault(ctx.call_id, ("cache", Entry(ctx.endpoint, ctx.plan.alias, request), key))
        return None

    def _hit(self, ctx: Any, entry: Entry, served_by: str) -> Hit:
        saved = entry.cost_usd
        if saved is None:
            saved = _estimate_usd(entry, ctx.snapshot.prices)
        trace = {"source": served_by, "answered_by": entry.answered_by, "recorded_stream": entry.stream,
                 "saved_usd": saved, "saved_nusd": None if saved is None else round(saved * NANOS_PER_USD)}
        if served_by == "cassette":
            trace["cassette"] = self.matcher.name
        ctx.state["playback"] = trace
        ctx.state["price_book"] = FREE_PRICES
        return Hit(entry, served_by, ctx.stream)

    def _cache_ttl(self, ctx: Any, asked: str | None) -> float | None:
        """Seconds an answer may be reused for this call, or None: `x-mlx-cache` 1/0, else the alias's `cache`."""
        if asked is not None:
            asked = asked.strip().lower()
            if asked in ("0", "false", "off", "no"):
                return None
        plan = ctx.plan
        slot = (plan.config, plan.config_version, plan.alias)
        if slot not in self._ttls:
            alias = None
            if plan.alias:
                rc = ctx.snapshot.router.configs.get(plan.config)
                alias = rc[0].aliases.get(plan.alias[1:]) if rc else None
            cfg = getattr(alias, "cache", None)
            self._ttls[slot] = parse_duration(cfg.ttl) if cfg is not None else None
        ttl = self._ttls[slot]
        if ttl is None and asked in ("1", "true", "on", "yes"):
            ttl = parse_duration(DEFAULT_CACHE_TTL)
        return ttl

    # -- remembering what was let through ------------------------------------------------------

    def after(self, ctx: Any, rec: Any) -> None:  # calls.Addon's hook, once per call
        self.observe(rec)

    def observe(self, rec: Any) -> None:
        """Cheap when nothing is pending (one dict lookup)."""
        if not self._pending:
            return
        item = self._pending.pop(rec.call_id, None)
        if item is None or rec.status != "ok":
            return
        why, entry, key = item
        entry.stream = rec.stream
        entry.answered_by = f"{rec.provider}/{rec.model}" if rec.provider else None
        if rec.stream_events is not None:
            entry.events = list(rec.stream_events)
        else:
            entry.response = rec.response
        if why == "cache":
            self.cache.put(key, entry)
            return
        self.matcher.add(entry)
        self._disk.submit(self._append, entry, rec.price_book, rec.usage)

    def _append(self, entry: Entry, prices: Any, usage: Usage | None) -> None:
        """Worker thread: price the new call, then rewrite the cassette atomically."""
        try:
            entry.cost_usd = _estimate_usd(entry, prices, usage, exact=True)
            self.cassette.entries.append(entry)
            self.cassette.save()
        except Exception:
            log.exception("appending a recorded call to %s failed", self.cassette.path)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.shutdown(wait=True)


def _estimate_usd(entry: Entry, prices: Any, usage: Usage | None = None, exact: bool = False) -> float | None:
    """What the recorded answer cost (its usage at the answering model's price), when the file has no figure."""
    if prices is None or not entry.answered_by:
        return None
    if usage is None:
        bodies = reversed(entry.events) if entry.events is not None else [entry.response]
        usage = next((u for b in bodies if b and b"usage" in b and (u := usage_of_body(b)[1])), None)
    provider, _, model = entry.answered_by.partition("/")
    rates = prices.rates(provider, model) if usage is not None else None
    if rates is None:
        return None
    nanos = rates.cost_nanos(usage) if exact else rates.estimate_nanos(usage)
    return nanos / NANOS_PER_USD


def load_playback(path: str | Path | None, on_miss: str = "error") -> Playback:
    """The Playback for `serve --cassette PATH --on-miss MODE` (CassetteError when the file is unusable)."""
    from .format import load, new_header

    if path is None:
        return Playback(None, on_miss)
    p = Path(path)
    if not p.exists() and on_miss == "record":
        cas = Cassette(p, new_header({"recorded_by": "serve --on-miss record"}))
        cas.save()
    else:
        cas = load(p)
    return Playback(cas, on_miss)


def attach(gateway: Any, hooks: Any, playback: Playback) -> None:
    """The proxy's dispatcher asks `playback` before routing; its `after` hook remembers answers."""
    gateway.dispatcher.source = playback
    hooks.add(playback)
