"""Providers behind one seam (see base.py). `build_provider` picks the class by kind."""
from __future__ import annotations

from ..config.schema import LimitsSection, ProviderConfig
from .base import ChatRequest, ChatResult, ChatStream, Provider


def build_provider(name: str, cfg: ProviderConfig, limits: LimitsSection | None = None) -> Provider:
    """`limits`: the server's [limits] (the mock bounds `n` and max_tokens by them)."""
    if cfg.kind == "openai":
        from .openai import OpenAIProvider
        return OpenAIProvider(name, cfg)
    if cfg.kind == "mock":
        from .mock import MockProvider
        return MockProvider(name, cfg, limits)
    if cfg.kind == "anthropic":
        from .anthropic import AnthropicProvider
        return AnthropicProvider(name, cfg)
    if cfg.kind == "gemini":
        from .gemini import GeminiProvider
        return GeminiProvider(name, cfg)
    raise ValueError(f"unknown provider kind {cfg.kind!r}")


__all__ = ["build_provider", "ChatRequest", "ChatResult", "ChatStream", "Provider"]
