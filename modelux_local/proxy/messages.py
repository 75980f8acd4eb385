"""POST /v1/messages: the Anthropic Messages format in, routed through the same aliases."""
from __future__ import annotations


def routes(rt, gateway) -> list:
    return []
