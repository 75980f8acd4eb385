"""The config file shapes. Frozen Structs that refuse unknown keys, so typos fail loudly."""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec

RETRY_ON = ("429", "5xx", "timeout", "connect")


class _S(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_S, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 4000


class Bind(_S, kw_only=True):
    match: dict[str, str]
    config: str


class RoutingSection(_S, kw_only=True):
    default: str | None = None
    bind: list[Bind] = []


class MockModel(_S, kw_only=True):
    """Behaviour of one model of a `mock` provider."""

    latency_ms: float = 0.0           # total time of a non-streamed answer
    ttft_ms: float = 0.0              # time to the first streamed chunk; the rest spread until latency_ms
    error_rate: float = 0.0           # share of calls answered with `error_status`
    error_status: int = 500
    output_tokens: int = 0            # 0 = derived from the request
    embedding_dim: int = 256


class ProviderConfig(_S, kw_only=True):
    kind: Literal["openai", "anthropic", "gemini", "mock"]
    base_url: str | None = None
    api_key_env: str | None = None    # keys come from the environment, never from files
    timeout_s: float = 60.0
    headers: dict[str, str] = {}
    max_tokens: int = 4096            # anthropic: its API requires max_tokens; used when the request has none
    api_version: str | None = None    # anthropic: anthropic-version header
    max_connections: int = 100
    seed: int = 0                     # mock: seed of the error draw
    models: dict[str, MockModel] = {}  # mock: per-model behaviour


class Budget(_S, kw_only=True):
    match: dict[str, str] = {}
    max_cost_usd: float | None = None
    max_calls: int | None = None
    max_tokens: int | None = None
    max_duration_s: float | None = None
    warn_at: float | None = None


# the events a webhook can subscribe to; a misspelt one is a config error, not a silent never
WebhookEvent = Literal["budget.warning", "run.aborted", "run.completed", "anomaly.loop", "anomaly.retry_storm",
                       "anomaly.cost"]


class Webhook(_S, kw_only=True):
    url: str
    events: list[WebhookEvent] = []  # empty: every event
    secret_env: str | None = None


class AnomaliesSection(_S, kw_only=True):
    loop_repeats: int = 5
    retry_storm: int = 5
    retry_window_s: float = 60.0


class LimitsSection(_S, kw_only=True):
    max_body_mb: float = 10.0


class RunsSection(_S, kw_only=True):
    idle_timeout_s: float = 300.0


class StorageSection(_S, kw_only=True):
    """[storage]: bodies older than keep_days are pruned (run and call rollups stay); 0 keeps them all."""

    keep_days: Annotated[float, msgspec.Meta(ge=0, le=36_500)] = 30.0


class Price(_S, kw_only=True):
    """USD per million tokens."""

    input: float
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None


class PromotionSection(_S, kw_only=True):
    """[promotion]: the gate `config promote` applies to a replay, and how replays judge quality."""

    max_success_drop_pp: float = 2.0           # agent success may fall by at most this many points
    max_p95_latency_increase_pct: float = 25.0  # p95 run latency may rise by at most this much
    max_error_rate_increase_pp: float = 1.0    # error rate per request may rise by at most this many points
    similarity_threshold: float = 0.8          # `similarity` evaluator: cosine at or above it accepts
    embedder: str = "@embedder"                # alias that embeds answers for `similarity`
    judge: str = "@judge"                      # alias that judges for `judge`
    judge_rubric: str = "Which answer does the task better: correct, complete, and following the instructions?"


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


class Retries(_S, kw_only=True):
    attempts: int = 1                 # retries after the first try, per target
    backoff_ms: float = 250.0
    on: list[Literal["429", "5xx", "timeout", "connect"]] = msgspec.field(default_factory=lambda: list(RETRY_ON))


class Target(_S, kw_only=True):
    provider: str
    model: str
    weight: float = 1.0
    timeout_s: float | None = None


class Alias(_S, kw_only=True):
    strategy: Literal["fallback", "loadbalance"] = "fallback"
    targets: list[Target]
    retries: Retries = Retries()
    timeout_s: float | None = None


class RoutingConfig(_S, kw_only=True):
    """One <name>.toml routing config."""

    description: str = ""
    aliases: dict[str, Alias] = {}
