"""The config file shapes. Frozen Structs that refuse unknown keys, so typos fail loudly.

Every number is range-checked by its type: use one of the annotated types below for a new
numeric key (msgspec checks the bounds; the loader names file, line and key on a violation, and
refuses NaN and infinities for every key, whatever its type):

    PositiveFloat / PositiveInt   > 0            (limits, sizes, windows, weights)
    NonNegFloat / NonNegInt       >= 0           (prices, counts, budgets; 0 is meaningful)
    Fraction                      0 .. 1         (rates, thresholds such as warn_at)
    Seconds                       > 0, <= 30 days (timeouts, idle times, deadlines)
    Millis                        >= 0, <= 1 hour (latencies, backoff)
    Port                          0 .. 65535
Ints are also capped at 2**53 (exact in JSON and SQLite) and floats at 1e15 (money and sizes
stay far from overflow).
"""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

_MAX_INT, _MAX_FLOAT = 2**53, 1e15
PositiveFloat = Annotated[float, Meta(gt=0, le=_MAX_FLOAT)]
NonNegFloat = Annotated[float, Meta(ge=0, le=_MAX_FLOAT)]
PositiveInt = Annotated[int, Meta(gt=0, le=_MAX_INT)]
NonNegInt = Annotated[int, Meta(ge=0, le=_MAX_INT)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Seconds = Annotated[float, Meta(gt=0, le=30 * 86400)]
Millis = Annotated[float, Meta(ge=0, le=3_600_000)]
Port = Annotated[int, Meta(ge=0, le=65535)]
HttpStatus = Annotated[int, Meta(ge=100, le=599)]
MAX_RETRIES = 100  # retries per target: the backoff doubles each time (2**1024 overflowed a float)

RETRY_ON = ("429", "5xx", "timeout", "connect", "upstream_invalid")


class _S(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_S, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 4000


class Bind(_S, kw_only=True):
    match: dict[str, str]
    config: str


class RoutingSection(_S, kw_only=True):
    default: str | None = None
    bind: list[Bind] = []


class MockModel(_S, kw_only=True):
    """Behaviour of one model of a `mock` provider."""

    latency_ms: Millis = 0.0          # total time of a non-streamed answer
    ttft_ms: Millis = 0.0             # time to the first streamed chunk; the rest spread until latency_ms
    error_rate: Fraction = 0.0        # share of calls answered with `error_status`
    error_status: HttpStatus = 500
    output_tokens: NonNegInt = 0      # 0 = derived from the request
    embedding_dim: Annotated[int, Meta(gt=0, le=65536)] = 256


# Mock models that are always known (and priced, in pricing/book.py) besides a provider's `models`.
BUILTIN_MOCK_MODELS = ("mock-large", "mock-small", "mock-embed")


def mock_model_known(provider: ProviderConfig, model: str) -> bool:
    """A mock provider that declares `models` knows those and the built-in ones: a typo is not a model."""
    return not provider.models or model in provider.models or model in BUILTIN_MOCK_MODELS


class ProviderConfig(_S, kw_only=True):
    kind: Literal["openai", "anthropic", "gemini", "mock"]
    base_url: str | None = None
    api_key_env: str | None = None    # keys come from the environment, never from files
    timeout_s: Seconds = 60.0
    headers: dict[str, str] = {}
    max_tokens: PositiveInt = 4096    # anthropic: its API requires max_tokens; used when the request has none
    api_version: str | None = None    # anthropic: anthropic-version header
    max_connections: Annotated[int, Meta(gt=0, le=10_000)] = 100
    seed: int = 0                     # mock: seed of the error draw
    models: dict[str, MockModel] = {}  # mock: per-model behaviour
    responses: Literal["translate", "native"] = "translate"  # openai: "native" forwards /v1/responses as is


class Budget(_S, kw_only=True):
    match: dict[str, str] = {}
    max_cost_usd: NonNegFloat | None = None
    max_calls: NonNegInt | None = None
    max_tokens: NonNegInt | None = None
    max_duration_s: Seconds | None = None
    warn_at: Fraction | None = None


# the events a webhook can subscribe to; a misspelt one is a config error, not a silent never
WebhookEvent = Literal["budget.warning", "run.aborted", "run.completed", "anomaly.loop", "anomaly.retry_storm",
                       "anomaly.cost"]


class Webhook(_S, kw_only=True):
    url: str
    events: list[WebhookEvent] = []  # empty: every event
    secret_env: str | None = None


class AnomaliesSection(_S, kw_only=True):
    loop_repeats: PositiveInt = 5
    retry_storm: PositiveInt = 5
    retry_window_s: Seconds = 60.0
    # `cost`: judged once an agent has this many completed runs; fires past its p95 and this x its median
    cost_min_history: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20
    cost_factor: Annotated[float, msgspec.Meta(ge=1.0, le=1000.0)] = 2.0


class LimitsSection(_S, kw_only=True):
    """[limits]: bounds on what a client controls; each refusal names its key."""

    max_body_mb: Annotated[float, Meta(gt=0, le=4096)] = 10.0
    max_json_depth: Annotated[int, Meta(ge=2, le=10_000)] = 64        # nesting of a request body's arrays/objects
    max_n: Annotated[int, Meta(ge=1, le=1_000_000)] = 128              # `n` for any provider (OpenAI's own maximum)
    mock_max_n: Annotated[int, Meta(ge=1, le=1_000_000)] = 16          # `n` for the mock provider
    mock_max_tokens: Annotated[int, Meta(ge=1, le=_MAX_INT)] = 1_000_000            # max_tokens / max_completion_tokens for the mock
    max_header_kb: Annotated[float, Meta(gt=0, le=1024 * 1024)] = 64.0  # request line + headers; 431 beyond (read at start)
    header_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0    # to receive them; the connection is closed after


class RunsSection(_S, kw_only=True):
    idle_timeout_s: Seconds = 300.0


class StorageSection(_S, kw_only=True):
    """[storage]: bodies older than keep_days are pruned (run and call rollups stay); 0 keeps them all."""

    keep_days: Annotated[float, msgspec.Meta(ge=0, le=36_500)] = 30.0


class Price(_S, kw_only=True):
    """USD per million tokens."""

    input: NonNegFloat
    output: NonNegFloat = 0.0
    cached_input: NonNegFloat | None = None
    cache_write: NonNegFloat | None = None


class PromotionSection(_S, kw_only=True):
    """[promotion]: the gate `config promote` applies to a replay, and how replays judge quality."""

    max_success_drop_pp: NonNegFloat = 2.0            # agent success may fall by at most this many points
    max_p95_latency_increase_pct: NonNegFloat = 25.0  # p95 run latency may rise by at most this much
    max_error_rate_increase_pp: NonNegFloat = 1.0     # error rate per request may rise by at most this many points
    similarity_threshold: Annotated[float, Meta(ge=-1, le=1)] = 0.8  # `similarity` evaluator: cosine at or above it accepts
    embedder: str = "@embedder"                # alias that embeds answers for `similarity`
    judge: str = "@judge"                      # alias that judges for `judge`
    judge_rubric: str = "Which answer does the task better: correct, complete, and following the instructions?"


class OtlpExport(_S, kw_only=True):
    """[export.otlp]: live OTLP trace export while serving. Unset keys fall back to the standard
    OTEL_EXPORTER_OTLP_* variables; no endpoint anywhere means no live export."""

    endpoint: str | None = None        # base URL; /v1/traces is appended (as OTEL_EXPORTER_OTLP_ENDPOINT)
    headers: dict[str, str] = {}       # e.g. Authorization (secrets: prefer OTEL_EXPORTER_OTLP_HEADERS)
    protocol: Literal["http/protobuf", "http/json"] | None = None   # default http/protobuf
    content: bool = False              # message content on spans (GenAI conventions: off by default)
    include_replays: bool = False


class ExportSection(_S, kw_only=True):
    otlp: OtlpExport = OtlpExport()


class ServerConfig(_S, kw_only=True):
    """modelux.toml"""

    server: ServerSection = ServerSection()
    routing: RoutingSection = RoutingSection()
    providers: dict[str, ProviderConfig] = {}
    budgets: list[Budget] = []
    webhooks: list[Webhook] = []
    anomalies: AnomaliesSection = AnomaliesSection()
    limits: LimitsSection = LimitsSection()
    runs: RunsSection = RunsSection()
    storage: StorageSection = StorageSection()
    prices: dict[str, Price] = {}
    promotion: PromotionSection = PromotionSection()
    export: ExportSection = ExportSection()


class Retries(_S, kw_only=True):
    attempts: Annotated[int, Meta(ge=0, le=MAX_RETRIES)] = 1  # retries after the first try, per target
    backoff_ms: Millis = 250.0
    on: list[Literal["429", "5xx", "timeout", "connect", "upstream_invalid"]] = msgspec.field(default_factory=lambda: list(RETRY_ON))


class Target(_S, kw_only=True):
    provider: str
    model: str
    weight: PositiveFloat = 1.0
    timeout_s: Seconds | None = None
    stream_timeout_s: Seconds | None = None  # a stream's whole duration; None = the alias's


class Cache(_S, kw_only=True):
    """An alias's development response cache: identical requests within `ttl` get the answer again."""

    ttl: str = "1h"                   # a duration: 30m, 1h, 7d

    def __post_init__(self) -> None:
        from ..core.durations import parse_duration

        parse_duration(self.ttl)  # DurationError (a ValueError) names the bad value


class Alias(_S, kw_only=True):
    strategy: Literal["fallback", "loadbalance"] = "fallback"
    targets: list[Target]
    retries: Retries = Retries()
    timeout_s: Seconds | None = None
    stream_timeout_s: Seconds | None = None  # a stream's whole duration; None = no deadline
    cache: Cache | None = None        # off by default (playback room)


class RoutingConfig(_S, kw_only=True):
    """One <name>.toml routing config."""

    description: str = ""
    aliases: dict[str, Alias] = {}
