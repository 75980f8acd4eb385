"""Resolving a request's `model` to an ordered plan of targets. Pure: no I/O."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from ..config.loader import ConfigSet
from ..config.schema import Alias, Retries, RoutingConfig
from ..core.tags import tags_match
from ..errors import ModelNotFound

_KIND_PREFIXES = (("claude", "anthropic"), ("gemini", "gemini"), ("mock-", "mock"),
                  ("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
                  ("text-embedding", "openai"), ("chatgpt", "openai"))
_NO_RETRY = Retries(attempts=0)


@dataclass(frozen=True, slots=True)
class TargetPlan:
    provider: str
    model: str
    timeout_s: float
    weight: float = 1.0
    stream_timeout_s: float | None = None  # a stream's whole duration; None: no deadline

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Plan:
    alias: str | None           # "@planner", or None for a direct model
    config: str
    config_version: str
    strategy: str               # fallback | loadbalance | direct
    targets: tuple[TargetPlan, ...]   # in the order they will be tried
    retries: Retries
    candidates: tuple[TargetPlan, ...] = field(default=())  # as declared, for the trace
    _trace: dict | None = field(default=None, init=False, repr=False, compare=False)

    def trace(self) -> dict:
        """What the call's stored `decision` starts with. Built once per plan (an alias's plan is
        shared by its requests) on the writer thread; shared: callers copy it, never change it."""
        if self._trace is None:
            object.__setattr__(self, "_trace", self._build_trace())
        return self._trace

    def _build_trace(self) -> dict:
        return {
            "requested": self.alias,
            "config": self.config,
            "config_version": self.config_version,
            "strategy": self.strategy,
            "candidates": [{"provider": t.provider, "model": t.model, "weight": t.weight, "timeout_s": t.timeout_s}
                           for t in self.candidates or self.targets],
            "order": [t.label for t in self.targets],
            "retries": {"attempts": self.retries.attempts, "backoff_ms": self.retries.backoff_ms, "on": list(self.retries.on)},
        }


class Router:
    """Built once per config load; `resolve` is called per request and allocates little."""

    def __init__(self, cs: ConfigSet, serving: dict[str, tuple[RoutingConfig, str]] | None = None):
        self.cs = cs
        # config name -> (config, version); promotion (replay room) may override file contents
        self.configs: dict[str, tuple[RoutingConfig, str]] = {n: (rc, cs.versions[n]) for n, rc in cs.routing.items()}
        if serving:
            self.configs.update(serving)
        self.default = cs.default_name
        self._binds = [(dict(b.match), b.config) for b in cs.server.routing.bind]
        self._providers = cs.server.providers
        self._alias_plans: dict[tuple[str, str], Plan] = {}  # immutable, so shared between requests

    def config_for(self, tags: dict[str, str]) -> str:
        for match, name in self._binds:
            if tags_match(match, tags):
                return name
        return self.default

    def aliases(self, config: str | None = None) -> list[str]:
        rc, _ = self.configs[config or self.default]
        return [f"@{a}" for a in rc.aliases]

    def resolve(self, model: str, tags: dict[str, str], rng: random.Random | None = None) -> Plan:
        name = self.config_for(tags)
        rc, version = self.configs[name]
        if model.startswith("@"):
            plan = self._alias_plans.get((name, model))
            if plan is None:
                alias = rc.aliases.get(model[1:])
                if alias is None:
                    raise ModelNotFound(f"unknown alias {model!r} in config {name!r}; known aliases: "
                                        f"{', '.join(self.aliases(name)) or 'none'}")
                plan = self._alias_plans[(name, model)] = self._alias_plan(model, alias, name, version)
            if plan.strategy == "loadbalance":
                plan = replace(plan, targets=_weighted_order(plan.candidates, rng or random))
            return plan
        return self._direct_plan(model, rc, name, version)

    def _timeout(self, alias_timeout: float | None, target_timeout: float | None, provider: str) -> float:
        return target_timeout or alias_timeout or self._providers[provider].timeout_s

    def _alias_plan(self, requested: str, alias: Alias, name: str, version: str) -> Plan:
        targets = tuple(TargetPlan(t.provider, t.model, self._timeout(alias.timeout_s, t.timeout_s, t.provider), t.weight,
                                   t.stream_timeout_s or alias.stream_timeout_s)
                        for t in alias.targets)
        return Plan(requested, name, version, alias.strategy, targets, alias.retries, targets)

    def _direct_plan(self, model: str, rc: RoutingConfig, name: str, version: str) -> Plan:
        provider, upstream_model = self._provider_for(model, rc)
        t = TargetPlan(provider, upstream_model, self._timeout(None, None, provider))
        return Plan(None, name, version, "direct", (t,), _NO_RETRY, (t,))

    def _provider_for(self, model: str, rc: RoutingConfig) -> tuple[str, str]:
        head, sep, rest = model.partition("/")
        if sep and head in self._providers and rest:
            return head, rest
        for alias in rc.aliases.values():  # a model the config already routes somewhere
            for t in alias.targets:
                if t.model == model:
                    return t.provider, model
        kind = next((k for p, k in _KIND_PREFIXES if model.startswith(p)), None)
        if kind:
            of_kind = [n for n, p in self._providers.items() if p.kind == kind]
            if len(of_kind) == 1 or kind in of_kind:
                return (kind if kind in of_kind else of_kind[0]), model
        real = [n for n, p in self._providers.items() if p.kind != "mock"]
        if len(real) == 1:
            return real[0], model
        raise ModelNotFound(
            f"cannot tell which provider serves model {model!r}: use an alias "
            f"({', '.join(self.aliases()) or 'none defined'}) or 'provider/model' "
            f"with a provider of: {', '.join(self._providers)}")


def _weighted_order(targets: tuple[TargetPlan, ...], rng) -> tuple[TargetPlan, ...]:
    """Weighted shuffle: the first pick follows the weights, the rest remain as fallbacks."""
    pool = list(targets)
    out = []
    while pool:
        total = sum(t.weight for t in pool)
        x = rng.random() * total
        for i, t in enumerate(pool):
            x -= t.weight
            if x <= 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return tuple(out)
