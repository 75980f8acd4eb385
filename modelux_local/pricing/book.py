from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..config.schema import Price, ProviderConfig
from ..core.usage import Usage

NANOS_PER_USD = 1_000_000_000

# The built-in mock models, priced like a frontier / small / embedding model (USD per 1M tokens).
MOCK_PRICES: dict[str, Price] = {
    "mock-large": Price(input=3.0, output=15.0, cached_input=0.3),
    "mock-small": Price(input=0.25, output=1.25, cached_input=0.025),
    "mock-embed": Price(input=0.02),
}

# Our provider kinds -> genai-prices provider ids.
_GENAI_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}


def nanos_to_usd(n: int | None) -> float | None:
    return None if n is None else n / NANOS_PER_USD


def format_usd(usd: float, decimals: int = 4) -> str:
    """`$1,234.5678`; under a cent, as many decimals as two significant digits need (at least
    `decimals`), so a $0.00000004 embedding never prints as $0.000000. Every printed cost goes here."""
    sign, v = ("-", -usd) if usd < 0 else ("", usd)
    if 0 < v < 0.01:
        d = max(decimals, 1 - math.floor(math.log10(v)))
        text = f"{v:.{d}f}"
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(decimals, "0")
        return f"{sign}${whole}.{frac}"
    return f"{sign}${v:,.{decimals}f}"


@dataclass(frozen=True)
class Rates:
    """USD per million tokens for one provider/model, plus where they came from."""

    source: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    cache_write: Decimal | None
    _model_price: Any = None  # genai-prices ModelPrice (handles tiers); None for overrides
    cache_write_1h: Decimal | None = None  # Anthropic's one-hour cache writes (None: at cache_write)
    # the same rates as plain floats, nano-dollars per token, for estimates on the event loop
    # (budget admission and cut-off), where Decimal arithmetic would cost more than it buys
    input_nanos: float = field(init=False)
    output_nanos: float = field(init=False)
    cached_nanos: float = field(init=False)
    _trace: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_nanos", float(self.input) * 1000)
        object.__setattr__(self, "output_nanos", float(self.output) * 1000)
        object.__setattr__(self, "cached_nanos", float(self.cached_input) * 1000 if self.cached_input is not None
                           else self.input_nanos)
        object.__setattr__(self, "_trace", self._build_trace())

    def estimate_nanos(self, u: Usage) -> int:
        """Float approximation of `cost_nanos` (base tier; cache writes at the input rate)."""
        cached = min(u.cached_tokens, u.input_tokens)
        return int((u.input_tokens - cached) * self.input_nanos + cached * self.cached_nanos
                   + u.output_tokens * self.output_nanos)

    def as_trace(self) -> dict:
        return dict(self._trace)  # a copy: it joins each call's stored decision

    def _build_trace(self) -> dict:
        d = {"source": self.source, "input_per_mtok": float(self.input), "output_per_mtok": float(self.output)}
        if self.cached_input is not None:
            d["cached_input_per_mtok"] = float(self.cached_input)
        if self.cache_write is not None:
            d["cache_write_per_mtok"] = float(self.cache_write)
        if self.cache_write_1h is not None:
            d["cache_write_1h_per_mtok"] = float(self.cache_write_1h)
        return d

    def cost_nanos(self, u: Usage) -> int:
        if self._model_price is not None:
            from genai_prices import Usage as GUsage

            calc = self._model_price.calc_price(GUsage(
                input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                cache_read_tokens=u.cached_tokens or None, cache_write_tokens=u.cache_write_tokens or None,
                cache_write_1h_tokens=u.cache_write_1h_tokens or None,
            ))
            return int((calc["total_price"] * NANOS_PER_USD).to_integral_value())
        cached = u.cached_tokens if self.cached_input is not None else 0
        written = u.cache_write_tokens if self.cache_write is not None else 0
        hour = min(u.cache_write_1h_tokens, written) if self.cache_write_1h is not None else 0
        plain = u.input_tokens - cached - written
        total = (plain * self.input + cached * (self.cached_input or 0) + (written - hour) * (self.cache_write or 0)
                 + hour * (self.cache_write_1h or 0) + u.output_tokens * self.output)
        return int((total * 1000).to_integral_value())  # per-Mtok USD * tokens * 1e9 / 1e6


def _dec(x: float | None) -> Decimal | None:
    return None if x is None else Decimal(str(x))


def _from_override(p: Price, source: str) -> Rates:
    return Rates(source, _dec(p.input), _dec(p.output), _dec(p.cached_input), _dec(p.cache_write))


class PriceBook:
    """Thread-safe cache of rates; build a new one on every config reload."""

    def __init__(self, overrides: dict[str, Price], providers: dict[str, ProviderConfig]):
        self._overrides = overrides
        self._providers = providers
        self._cache: dict[tuple[str, str], Rates | None] = {}
        self._lock = threading.Lock()

    def rates(self, provider: str, model: str) -> Rates | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        r = self._lookup(provider, model)
        with self._lock:
            self._cache[key] = r
        return r

    def cost_nanos(self, provider: str, model: str, usage: Usage) -> int | None:
        r = self.rates(provider, model)
        return None if r is None else r.cost_nanos(usage)

    def _lookup(self, provider: str, model: str) -> Rates | None:
        o = self._overrides.get(f"{provider}/{model}")
        if o is not None:
            return _from_override(o, f"override prices.\"{provider}/{model}\"")
        cfg = self._providers.get(provider)
        kind = cfg.kind if cfg else None
        if kind == "mock":
            m = MOCK_PRICES.get(model)
            return _from_override(m, f"built-in mock price for {model}") if m else None
        return _genai_rates(model, kind, cfg.base_url if cfg else None)


def _genai_rates(model: str, kind: str | None, base_url: str | None) -> Rates | None:
    from genai_prices import data_snapshot

    snap = data_snapshot.get_snapshot()
    attempts: list[dict] = []
    if base_url and kind == "openai":
        attempts.append({"provider_api_url": base_url})
    elif kind in _GENAI_PROVIDER:
        attempts.append({"provider_id": _GENAI_PROVIDER[kind]})
    attempts.append({})  # a self-hosted OpenAI-compatible server: match by model name alone
    for a in attempts:
        try:
            prov, info = snap.find_provider_model(model, None, a.get("provider_id"), a.get("provider_api_url"))
        except LookupError:
            continue
        mp = info.get_prices(datetime.now(UTC))
        inp = _base(getattr(mp, "input_mtok", None))
        if inp is None:
            continue
        tiered = any(not isinstance(getattr(mp, k, None), (Decimal, type(None)))
                     for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"))
        return Rates(
            f"genai-prices {prov.id}/{info.id}", inp, _base(getattr(mp, "output_mtok", None)) or Decimal(0),
            _base(getattr(mp, "cache_read_mtok", None)), _base(getattr(mp, "cache_write_mtok", None)),
            mp if tiered else None,  # flat rates are priced with plain Decimal math: 20x cheaper than calc_price
            _base(getattr(mp, "cache_write_1h_mtok", None)),
        )
    return None


def _base(v: Any) -> Decimal | None:
    """The first-tier price of a possibly tiered price."""
    if v is None or isinstance(v, Decimal):
        return v
    return getattr(v, "base", None)
