"""Prices: genai-prices' packaged data plus `[prices."provider/model"]` overrides.

Rates are resolved once per (provider, model) and cached, because a genai-prices lookup
costs a few hundred microseconds; calls are priced in the storage writer, off the hot path.
Money is integer nano-dollars (1e-9 USD): per-token prices of real models are exact in it.
"""
from .book import NANOS_PER_USD, PriceBook, Rates, format_usd, nanos_to_usd

__all__ = ["PriceBook", "Rates", "NANOS_PER_USD", "nanos_to_usd", "format_usd"]
