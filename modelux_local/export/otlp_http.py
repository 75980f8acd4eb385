"""Where OTLP goes and how: `[export.otlp]` and the standard OTEL_EXPORTER_OTLP_* variables, and
one POST with the answer classified (sent, or an error saying whether a retry can help)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from .otlp import PROTOBUF, PROTOCOLS

RETRYABLE = (408, 429, 500, 502, 503, 504)


class OtlpSettingError(ValueError):
    """A setting that cannot work (a gRPC protocol, a header without `=`, a URL that is not http)."""


class SendError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.message, self.retryable = message, retryable


@dataclass(frozen=True)
class OtlpTarget:
    url: str                                   # the full traces URL
    headers: dict[str, str] = field(default_factory=dict)
    protocol: str = PROTOBUF
    content: bool = False
    include_replays: bool = False


def traces_url(endpoint: str) -> str:
    """A base endpoint gets /v1/traces appended, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    if not endpoint.startswith(("http://", "https://")):
        raise OtlpSettingError(f"OTLP endpoint {endpoint!r} is not an http(s) URL (e.g. http://127.0.0.1:4318)")
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def parse_headers(text: str, where: str = "OTEL_EXPORTER_OTLP_HEADERS") -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values (the W3C baggage form the OTel spec uses)."""
    out = {}
    for item in (p for p in text.split(",") if p.strip()):
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise OtlpSettingError(f"{where}: {item.strip()!r} is not KEY=VALUE")
        out[unquote(k.strip()).lower()] = unquote(v.strip())
    return out


def check_protocol(protocol: str, where: str) -> str:
    if protocol not in PROTOCOLS:
        raise OtlpSettingError(f"{where} = {protocol!r}: modelux-local exports OTLP over HTTP only "
                               f"({' or '.join(PROTOCOLS)})")
    return protocol


def target_from(cfg, env: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """The live-export target from `[export.otlp]` (its keys win) and the OTEL_* variables; None when
    no endpoint is set anywhere. Raises OtlpSettingError on a setting that cannot work."""
    env = os.environ if env is None else env
    if cfg.endpoint:
        url = traces_url(cfg.endpoint)
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        url = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]  # a full URL: used as is, per the spec
        traces_url(url)
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = traces_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    else:
        return None
    headers = {**env_headers(env), **{k.lower(): v for k, v in cfg.headers.items()}}
    protocol = cfg.protocol or check_protocol(env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                                              or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOBUF,
                                              "OTEL_EXPORTER_OTLP_PROTOCOL")
    return OtlpTarget(url, headers, protocol, cfg.content, cfg.include_replays)


def env_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    out = parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    out.update(parse_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""), "OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
    return out


def _classify(r: httpx.Response) -> None:
    if r.status_code < 300:
        return
    raise SendError(f"HTTP {r.status_code}: {r.text[:200]}", r.status_code in RETRYABLE)


def post(client: httpx.Client, target: OtlpTarget, body: bytes, content_type: str) -> None:
    try:
        r = client.post(target.url, content=body, headers={**target.headers, "content-type": content_type})
    except httpx.HTTPError as e:
        raise SendError(f"{type(e).__name__}: {e}", True) from None
    _classify(r)


async def apost(client: httpx.AsyncClient, target: OtlpTarget, body: bytes, content_type: str) -> None:
    try:
        r = await client.post(target.url, content=body, headers={**target.headers, "content-type": content_type})
    except httpx.HTTPError as e:
        raise SendError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, True) from None
    _classify(r)
