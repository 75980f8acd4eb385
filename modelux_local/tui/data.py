"""The one module through which the TUI talks to the rest of modelux_local.

Screens get plain dicts and small dataclasses from `DataSource`; they never import storage,
config or replay themselves, so what the TUI depends on is visible in this one file.

Reads go through a read-only SQLite connection per thread (screens call these methods from
Textual thread workers, never from the event loop the proxy serves on). The clock is
injectable so that snapshot tests can freeze "now".
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from ..config.loader import ConfigSet, load_dir
from ..core.display import printable  # noqa: F401  (re-exported: the TUI's one door to modelux_local)
from ..core.tags import tags_match
from ..core.usage import cache_share
from ..errors import ConfigError
from ..pricing import format_usd, nanos_to_usd  # noqa: F401  (format_usd: for widgets/format.py, the TUI's one door)
from ..storage import runs as run_rows
from ..storage import serving as serving_db
from ..storage import spend
from ..storage.breakdown import RunBreakdown, run_breakdown  # noqa: F401  (RunBreakdown: for the screens)
from ..storage.db import connect, open_db
from ..storage.history import DEFAULT_MIN_HISTORY, AgentHistory, agent_history, expected, over_usual, run_agents
from ..storage.queries import Reader, untagged_calls

_dec = msgspec.json.Decoder()
NOTHING_TO_ROLL_BACK = "nothing to roll back: no promotion in the audit trail"

RUNS_LIMIT = 300          # the live table shows the most recent runs; older ones are a `runs` query away
SPARK_MINUTES = 30
HISTORY_REFRESH_S = 10.0   # the agents' usual runs are re-read this often (a scan of a month of runs)


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    run_id: str
    agent: str | None
    tags: dict[str, str]
    status: str               # running | completed | aborted
    started_at: float
    last_at: float
    calls: int
    errors: int
    retries: int
    tokens: int
    cost_usd: float | None
    duration_s: float
    anomalies: tuple[str, ...]
    abort_reason: str | None
    budget_usd: float | None  # max_cost_usd of the tightest matching [[budgets]] entry
    budget_calls: int | None = None       # the tightest max_calls
    budget_tokens: int | None = None      # the tightest max_tokens
    budget_duration_s: float | None = None
    first_alias: str | None = None        # a run without an agent tag is its first alias's kind of run
    usual: float | None = None            # how far along its agent's p90 (cost or calls) the run is
    usual_by: str | None = None           # which of the two: "cost" | "calls"
    played_back: bool = False             # some calls were answered from a cassette / the dev cache

    @property
    def budget_use(self) -> tuple[float, str] | None:
        """(share used, limit) of the limit this run is closest to: the guard aborts on whichever is hit
        first, so a run with max_calls = 3 at 3 calls is at 100 % whatever it cost. The agent's usual
        run (its p90) counts as one more limit, "usual": the meter shows whichever is nearer."""
        shares = [(self.usual, "usual")] if self.usual is not None else []
        if self.budget_usd and self.cost_usd is not None:
            shares.append((self.cost_usd / self.budget_usd, "cost"))
        if self.budget_calls:
            shares.append((self.calls / self.budget_calls, "calls"))
        if self.budget_tokens:
            shares.append((self.tokens / self.budget_tokens, "tokens"))
        if self.budget_duration_s:
            shares.append((self.duration_s / self.budget_duration_s, "time"))
        return max(shares) if shares else None

    @property
    def budget_share(self) -> float | None:
        use = self.budget_use
        return use[0] if use else None

    @property
    def flagged(self) -> bool:
        return bool(self.anomalies) or self.status == "aborted"


@dataclass(frozen=True)
class Pulse:
    """The header figures: spend today, calls in the last minute, spend per minute."""

    spend_today_usd: float
    calls_per_min: int
    spend_per_minute: list[float]
    runs_running: int
    storage: str | None = None    # the in-process writer's trouble (disk full...), None while it writes fine
    untagged_calls: int = 0  # calls without a run_id: the empty state says they exist
    otlp: str | None = None  # live OTLP export (serve with [export.otlp]): lag, or the error while it lasts


@dataclass(frozen=True)
class AliasView:
    name: str
    strategy: str
    targets: list[str]        # "provider/model" (with weight when load-balanced)
    retries: int


@dataclass(frozen=True)
class ConfigView:
    name: str
    version: str
    description: str
    serving: bool             # the default config (others serve through [[routing.bind]])
    binds: list[str]          # tag matches that route to it
    aliases: list[AliasView]
    file: str | None
    pinned: str | None = None  # set when a promotion / rollback pins what this name serves


@dataclass(frozen=True)
class ReloadView:
    ok: bool
    at: float | None
    message: str
    file: str | None = None
    line: int | None = None
    live: bool = False        # True: the status of the server in this process; False: the files validated now


@dataclass(frozen=True)
class ConfigsState:
    source: str
    configs: list[ConfigView]
    reload: ReloadView
    versions: list[dict]      # config_versions rows, newest first
    promotions: list[dict] = field(default_factory=list)


class DataSource:
    """Reads for the TUI. `runtime` is the in-process server (serve with the TUI), or None (`tui`)."""

    def __init__(self, db_path: Path | str, config_dir: Path | None = None, *, runtime: Any = None,
                 clock: Callable[[], float] = time.time):
        self.db_path = Path(db_path)
        self.config_dir = config_dir
        self.runtime = runtime
        self.clock = clock
        self._local = threading.local()
        self._configs: ConfigSet | None = None
        self._config_error: ConfigError | None = None
        self._config_checked = 0.0
        self._config_lock = threading.Lock()
        self._usual_lock = threading.Lock()
        self._history: tuple[float, dict[str, AgentHistory]] | None = None  # (monotonic time read, history)
        self._agents: dict[str, str] = {}   # run_id -> its agent: it never changes

    @property
    def live(self) -> bool:
        return self.runtime is not None

    # -- connection ------------------------------------------------------------------------

    def _conn(self):
        """A read-only connection per thread; None until the server has created the database."""
        c = getattr(self._local, "conn", None)
        if c is None:
            if not self.db_path.exists():
                return None
            try:
                c = connect(self.db_path, readonly=True)
                run_rows.ready(c)
            except Exception:  # not migrated yet (the server is starting): try again next refresh
                return None
            self._local.conn = c
        return c

    def _reader(self) -> Reader | None:
        conn = self._conn()
        if conn is None:
            return None
        r = getattr(self._local, "reader", None)
        if r is None:
            r = Reader(self.db_path, self.idle_timeout_s())
            r._local.conn = conn  # share our read-only connection: Reader.conn() would open read-write and migrate
            self._local.reader = r
        return r

    # -- configs ---------------------------------------------------------------------------

    def config_set(self) -> ConfigSet | None:
        """The configs: the running server's when in-process, else the config dir read now (cached 1 s)."""
        if self.runtime is not None:
            return self.runtime.configs
        with self._config_lock:
            now = time.monotonic()
            if self._configs is None and self._config_error is None or now - self._config_checked > 1.0:
                self._config_checked = now
                try:
                    self._configs, self._config_error = load_dir(self.config_dir), None
                except ConfigError as e:
                    self._config_error = e  # keep the last good set: it is what a server would keep serving
            return self._configs

    def base_url(self) -> str:
        """Where clients reach the proxy, as the config's [server] section says (the TUI of `serve`
        knows the real address and passes it to the app instead)."""
        cs = self.config_set()
        host, port = (cs.server.server.host, cs.server.server.port) if cs else ("127.0.0.1", 4000)
        return f"http://{host}:{port}/v1"

    def idle_timeout_s(self) -> float:
        cs = self.config_set()
        return cs.server.runs.idle_timeout_s if cs else 300.0

    def limits_for(self, tags: dict[str, str]) -> dict[str, Any]:
        """The tightest of each limit among the [[budgets]] whose `match` the run's tags satisfy."""
        cs = self.config_set()
        budgets = [b for b in cs.server.budgets if tags_match(b.match, tags)] if cs else []

        def tightest(values):
            values = [v for v in values if v is not None]
            return min(values) if values else None
        return {"budget_usd": tightest(b.max_cost_usd for b in budgets),
                "budget_calls": tightest(b.max_calls for b in budgets),
                "budget_tokens": tightest(b.max_tokens for b in budgets),
                "budget_duration_s": tightest(b.max_duration_s for b in budgets)}

    def configs(self) -> ConfigsState:
        cs = self.config_set()
        views: list[ConfigView] = []
        if cs is not None:
            binds: dict[str, list[str]] = {}
            for b in cs.server.routing.bind:
                binds.setdefault(b.config, []).append(", ".join(f"{k}={v}" for k, v in b.match.items()))
            for name, rc in cs.routing.items():
                aliases = [AliasView(f"@{a}", al.strategy,
                                     [f"{t.provider}/{t.model}" + (f" ×{t.weight:g}" if al.strategy == "loadbalance" else "")
                                      for t in al.targets], al.retries.attempts)
                           for a, al in rc.aliases.items()]
                views.append(ConfigView(name, cs.versions[name], rc.description, name == cs.default_name,
                                        binds.get(name, []), aliases, cs.files.get(name), self.serving(name)))
        return ConfigsState(source=cs.source if cs else str(self.config_dir), configs=views,
                            reload=self._reload_view(cs), versions=self.config_versions(),
                            promotions=self.promotions())

    def reload_status(self) -> ReloadView:
        """Whether the last config edit loaded (cheap: the runs screen asks every refresh)."""
        return self._reload_view(self.config_set())

    def _reload_view(self, cs: ConfigSet | None) -> ReloadView:
        rt = self.runtime
        if rt is not None:
            s = rt.reload_status
            return ReloadView(s.ok, s.at, s.message, s.file, s.line, live=True)
        e = self._config_error
        if e is not None:
            return ReloadView(False, None, e.message, e.file, e.line)
        return ReloadView(True, None, f"{cs.source if cs else '?'}: valid")

    def config_versions(self, limit: int = 50) -> list[dict]:
        conn = self._conn()
        if conn is None:
            return []
        return serving_db.config_versions(conn, limit)

    def promotions(self, limit: int = 20) -> list[dict]:
        """The promotion / rollback audit (the replay room's config_audit table), newest first."""
        conn = self._conn()
        if conn is None:
            return []
        try:
            rows = serving_db.audit_trail(conn, limit)
        except Exception:  # a database from before the replay room's migration
            return []
        return [{"at": datetime.fromtimestamp(r["at"]).strftime("%Y-%m-%d %H:%M:%S"), "action": r["action"],
                 "config": f"@{r['name']}", "version": f"{r['from_number'] or '-'} → {r['to_number'] or '-'}",
                 "replay": r["replay_id"] or "", "reason": r["reason"] or "", "who": r["who"]}
                for r in rows]

    # -- runs ------------------------------------------------------------------------------

    def data_version(self) -> int | None:
        """Changes whenever another connection (the server's writer) commits: lets a screen skip a
        refresh when nothing was written."""
        conn = self._conn()
        return run_rows.data_version(conn) if conn is not None else None

    def runs(self, limit: int = RUNS_LIMIT, query: str = "") -> list[RunRow]:
        """The `limit` most recently started runs plus every run still active, replays left out;
        with a filter `query`, also the `limit` newest runs of the whole database that match it."""
        conn = self._conn()
        if conn is None:
            return []
        now, idle = self.clock(), self.idle_timeout_s()
        rows = run_rows.live_table(conn, limit, now - idle, query)
        agents = self._run_agents(conn, [r[0] for r in rows])
        usual = self._usual(conn, agents, [(r[0], r[11], r[7]) for r in rows])
        played = run_rows.played_back_runs(conn)
        out = []
        for (run_id, agent, tags, status, started, last, ended, calls, errors, retries, tokens, cost, unpriced,
             anomalies, abort_reason) in rows:
            if status == "running" and now - last > idle:
                status = "completed"
            tag_map = _dec.decode(tags) if tags else {}
            out.append(RunRow(
                run_id=run_id, agent=agent, tags=tag_map, status=status, started_at=started, last_at=last,
                calls=calls, errors=errors, retries=retries, tokens=tokens or 0,
                cost_usd=None if calls and unpriced == calls else nanos_to_usd(cost),
                duration_s=max(0.0, (ended if ended is not None else last) - started),
                anomalies=tuple(_dec.decode(anomalies)) if anomalies else (), abort_reason=abort_reason,
                first_alias=None if agent else agents.get(run_id) or None, played_back=run_id in played,
                **usual.get(run_id, {}), **self.limits_for(tag_map)))
        return out

    def storage_problem(self) -> str | None:
        st = self.runtime.writer.status() if self.runtime is not None else None
        if not st or (st["state"] == "ok" and not st["records_dropped"] and not st["bodies_dropped"]):
            return None
        text = f"storage {st['state']}: {st['reason']}" if st["reason"] else "storage recovered"
        return text + f" · {st['queued']} queued, {st['bodies_dropped']} bodies / {st['records_dropped']} records dropped"

    def min_history(self) -> int:
        cs = self.config_set()
        return cs.server.anomalies.cost_min_history if cs else DEFAULT_MIN_HISTORY

    def history(self, conn) -> dict[str, AgentHistory]:
        """Every agent's usual run, re-read at most every HISTORY_REFRESH_S (it moves as runs complete)."""
        # kept on the instance, not per thread: each Textual thread worker may run on a new thread
        with self._usual_lock:
            cached = self._history
            now = time.monotonic()
            if cached is None or now - cached[0] > HISTORY_REFRESH_S:
                cached = self._history = (now, agent_history(conn, now=self.clock(), first_alias=self._agents))
            return cached[1]

    def _usual(self, conn, agents: dict[str, str], runs: list[tuple[str, int, int]]) -> dict[str, dict]:
        """run_id -> {usual, usual_by} for (run_id, cost_nusd, calls) whose agent has enough history."""
        history = self.history(conn)
        floor, out = self.min_history(), {}
        for run_id, cost, calls in runs:
            h = history.get(agents.get(run_id, ""))
            ratio = over_usual(h, cost, calls) if h is not None and h.runs >= floor else None
            if ratio is not None:
                out[run_id] = {"usual": ratio[0], "usual_by": ratio[1]}
        return out

    def _run_agents(self, conn, run_ids: list[str]) -> dict[str, str]:
        """run_agents, remembered: a run's agent never changes, and the table asks every second."""
        with self._usual_lock:
            known = self._agents
            missing = [r for r in run_ids if r not in known]
            if missing:
                known.update(run_agents(conn, missing))  # a run with no alias yet is asked again next time
            return {r: known.get(r, "") for r in run_ids}

    def pulse(self) -> Pulse:
        conn = self._conn()
        if conn is None:
            return Pulse(0.0, 0, [0.0] * SPARK_MINUTES, 0, self.storage_problem())
        now = self.clock()
        today = self._spend_today(conn, now)
        per_min = spend.calls_between(conn, now - 60, now)
        start = now - SPARK_MINUTES * 60
        buckets = [0.0] * SPARK_MINUTES
        for minute, nanos in spend.cost_by_minute(conn, start, now):
            if 0 <= minute < SPARK_MINUTES and nanos:
                buckets[minute] = nanos_to_usd(nanos)
        running = run_rows.running_count(conn, now - self.idle_timeout_s())
        exporter = getattr(self.runtime, "otlp_exporter", None)
        return Pulse(nanos_to_usd(today) or 0.0, per_min, buckets, running, self.storage_problem(), untagged_calls(conn),
                     exporter.header_note() if exporter is not None else None)

    def _spend_today(self, conn, now: float) -> int:
        """Nano-dollars spent since local midnight, summed once and then only over the calls written
        since (by rowid): re-summing a day of a busy database every second cost ~16 ms at 1M calls."""
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        state = getattr(self._local, "spend", None)
        if state is None or state[0] != midnight:
            top, total = spend.spend_since(conn, midnight)
        else:
            _, top, total = state
            new_top, more = spend.spend_after(conn, midnight, top)
            top, total = new_top, total + more
        self._local.spend = (midnight, top, total)
        return total

    def run_detail(self, run_id: str) -> dict | None:
        """RunSummary plus `steps` (the management API's shape)."""
        r = self._reader()
        run = r.get_run(run_id, with_expected=False) if r else None
        if run is not None and run["replay_id"] is None:  # from the cached history: this is read every second
            conn = r.conn()
            h = self.history(conn).get(self._run_agents(conn, [run_id])[run_id])
            run["expected"] = expected(h, round((run["cost_usd"] or 0) * 1e9), run["calls"], self.min_history())
        if run is not None and run["status"] == "completed":
            # Reader decides "idle, so completed" with the wall clock; the TUI's clock may be frozen
            raw = run_rows.status_and_last(r.conn(), run_id)
            if raw and raw[0] == "running" and self.clock() - raw[1] <= self.idle_timeout_s():
                run["status"], run["ended_at"] = "running", None
        if run is not None:
            run["cached_tokens"], _, run["cached_share"] = cache_share(run.get("steps") or [])
        return run

    def run_breakdown(self, run_id: str) -> RunBreakdown | None:
        """Where the run's money went: by alias, by model, and the repeated prompt share."""
        conn = self._conn()
        return run_breakdown(conn, run_id) if conn is not None else None

    def call_detail(self, call_id: str) -> dict | None:
        """A step plus its `request` and `response` bodies."""
        r = self._reader()
        return r.get_call(call_id) if r else None

    # -- replay and promotion (the replay room) ----------------------------------------------

    def replay_available(self) -> bool:
        return self.config_set() is not None

    def config_choices(self) -> list[tuple[str, str, bool]]:
        """(name, description, serves by default) of each routing config, for a chooser."""
        cs = self.config_set()
        return [(n, rc.description, n == cs.default_name) for n, rc in cs.routing.items()] if cs else []

    def run_replay(self, run_ids: list[str], candidate: str, progress: Callable[[int, int], None]) -> dict:
        """Replays the runs live against @candidate (in this thread, on its own event loop) and
        returns the stored report: `simulate --json`'s shape."""
        import asyncio

        from ..replay.selection import Selection
        from ..replay.simulate import Options, simulate

        cs = self._require_configs()
        opts = Options(candidate=candidate.lstrip("@"), selection=Selection(run_ids=tuple(run_ids)),
                       window_label=f"{len(run_ids)} run(s) marked in the TUI")
        return asyncio.run(simulate(cs, self.db_path, opts,
                                    on_progress=lambda p: progress(p.runs_done, p.runs_total)))

    def replay_runs(self, replay_id: str) -> list[dict]:
        from ..storage import replays as store

        conn = self._conn()
        return store.replay_runs(conn, replay_id) if conn else []

    def replay_step_pairs(self, replay_id: str, run_id: str) -> list[tuple[dict, dict | None]]:
        """(original call, its replayed call or None) for each call of the run, in order; each with `cost_usd`."""
        from ..storage import replays as store

        def priced(call: dict | None) -> dict | None:
            return None if call is None else {**call, "cost_usd": nanos_to_usd(call.get("cost_nusd"))}

        conn = self._conn()
        return [(priced(o), priced(c)) for o, c in store.step_pairs(conn, replay_id, run_id)] if conn else []

    def promotion_available(self) -> bool:
        return self.config_set() is not None

    def promote(self, name: str, replay_id: str | None) -> str:
        """Audited promotion through the gate; raises ModeluxError (its message says why) when refused."""
        from ..replay import promotion

        cs = self._require_configs()
        with self._writable() as conn:
            res = promotion.promote(conn, cs, name, replay_id=replay_id, reason="promoted from the TUI")
        return (f"@{res['name']} now serves {res['candidate']} (version {res['to_number']}, content "
                f"{res['to_version']}; was version {res['from_number']}). Audit #{res['audit_id']}; "
                f"`modelux config rollback --to {res['from_number']}` undoes it.")

    def rollback(self) -> str:
        from ..replay import promotion

        cs = self._require_configs()
        with self._writable() as conn:
            res = promotion.rollback(conn, cs, reason="rolled back from the TUI")
        return (f"@{res['name']} serves version {res['to_number']} again (content {res['to_version']}). "
                f"Audit #{res['audit_id']}.")

    def rollback_plan(self, candidate: str | None) -> str:
        """What a rollback would restore: after promoting `candidate`, or (None) undoing the last change."""
        from ..replay import promotion

        cs = self._require_configs()
        conn = self._conn()
        if conn is None:
            return "no database yet"
        if candidate is None:
            last = serving_db.last_change(conn)
            if last is None:
                return NOTHING_TO_ROLL_BACK
            info = promotion.version_info(conn, last[1]) or {}
            return (f"@{last[0]} goes back from version {last[2]} to version {last[1]} "
                    f"(content {info.get('content_version')}, from {info.get('source')})")
        name = cs.default_name
        cur = promotion.current_serving(conn, cs, name)
        where = f"serving version {cur.number}" if cur.number else f"the content of {cur.source}"
        routes = "\n".join(f"  @{a:<14} -> {' | '.join(f'{t.provider}/{t.model}' for t in al.targets)}"
                           for a, al in cs.routing[name].aliases.items()) if cur.number is None else ""
        return (f"after promoting @{candidate.lstrip('@')}, `modelux config rollback` restores @{name} to {where} "
                f"(content {cur.content_version}) from the database, even if the file changes.\n{routes}")

    def serving(self, name: str) -> str | None:
        """What a config name serves when a promotion pinned it ("version N, content X"), else None (its file)."""
        conn = self._conn()
        if conn is None:
            return None
        try:
            row = serving_db.pinned(conn, name)
        except Exception:  # a database from before the replay room's migration
            return None
        return f"promoted version {row[0]} ({row[2]}, {row[3]})" if row else None

    def _require_configs(self) -> ConfigSet:
        cs = self.config_set()
        if cs is None:
            raise ConfigError(f"the config directory does not load: {self._config_error.message if self._config_error else '?'}")
        return cs

    @contextmanager
    def _writable(self):
        """Promotion and rollback write the audit trail: the one place the TUI opens the database read-write."""
        conn = open_db(self.db_path)
        try:
            yield conn
        finally:
            conn.close()

