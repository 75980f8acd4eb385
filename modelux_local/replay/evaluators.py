"""Does a candidate's output hold up against the original? One verdict per replayed run.

- similarity (default): cosine of the embeddings of the original and the candidate final
  answer (embedded through an alias, `@embedder` by default), accepted at or above a threshold.
  Vectors of originals are kept in `answer_embeddings` (sqlite-vec's float32 format) and
  compared with sqlite-vec's `vec_distance_cosine` when it is loaded, plain math otherwise.
- judge: an LLM (alias `@judge`) compares the two final answers pairwise, in random order
  so position bias cannot favour either side; accepted unless the original wins.
- tool_calls: each step calls the same tool names with the same argument keys as the original.
- json_valid: every step whose original answer was JSON (or asked for it) is valid JSON again.

A run the evaluator cannot judge (no final text answer, embedder unavailable...) is counted as
"not judged"; its candidate success then rests on the replay completing without error.
"""
from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Any

from ..config.schema import PromotionSection
from ..storage import replays
from .engine import Replayer, RunReplay, message_of

EVALUATORS = ("similarity", "judge", "tool_calls", "json_valid")


@dataclass(slots=True)
class Verdict:
    judged: bool
    accepted: bool | None = None
    score: float | None = None
    reason: str = ""


def _text(message: dict | None) -> str | None:
    if not message:
        return None
    c = message.get("content")
    if isinstance(c, list):
        c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return c if isinstance(c, str) and c.strip() else None


# endpoints whose stored response is a chat.completion (/v1/messages calls store the one they were
# translated from), so evaluators can compare their answers
ANSWERING = ("chat", "messages", "responses")


def answered_steps(rr: RunReplay, *, replayed_only: bool = True) -> list:
    """The replayed calls whose original answered (ok, chat-shaped); skipped replays left out."""
    return [rc for rc in rr.calls if rc.original.endpoint in ANSWERING and rc.original.status == "ok"
            and not (replayed_only and rc.status == "skipped")]


def final_pair(rr: RunReplay) -> tuple[str | None, Any, str]:
    """(original final text, the candidate's replayed call of it, why not) for the last text answer."""
    for rc in reversed(answered_steps(rr, replayed_only=False)):
        oc = rc.original
        text = _text(message_of(oc.response))
        if text is not None:
            return text, rc, ""
    return None, None, "the original run has no final text answer"


class Evaluator:
    name = "?"

    def __init__(self, settings: PromotionSection, replayer: Replayer, conn=None, cache_write=None):
        self.settings, self.replayer, self.conn, self.cache_write = settings, replayer, conn, cache_write

    @property
    def describe(self) -> str:
        return self.name

    async def judge(self, rr: RunReplay) -> Verdict:
        raise NotImplementedError


class Similarity(Evaluator):
    name = "similarity"

    def __init__(self, *a, threshold: float | None = None, **kw):
        super().__init__(*a, **kw)
        self.threshold = self.settings.similarity_threshold if threshold is None else threshold
        self.alias = self.settings.embedder

    @property
    def describe(self) -> str:
        return f"similarity (cosine >= {self.threshold:.2f} via {self.alias})"

    async def judge(self, rr: RunReplay) -> Verdict:
        original, rc, why = final_pair(rr)
        if original is None:
            return Verdict(False, reason=why)
        if rc.failed:
            return Verdict(True, False, 0.0, "the candidate's final call failed")
        candidate = _text(rc.message)
        if candidate is None:
            return Verdict(True, False, 0.0, "the candidate gave no text answer")
        v_orig = self._cached(rc.original.call_id)
        texts = [candidate] if v_orig is not None else [original, candidate]
        vectors = await self._embed(texts)
        if vectors is None:
            return Verdict(False, reason=f"{self.alias} could not embed the answers")
        if v_orig is None:
            v_orig = vectors[0]
            self._store(rc.original.call_id, v_orig)
        score = self.cosine(v_orig, vectors[-1])
        return Verdict(True, score >= self.threshold, round(score, 4),
                       f"cosine {score:.3f} {'>=' if score >= self.threshold else '<'} {self.threshold:.2f}")

    async def _embed(self, texts: list[str]) -> list[list[float]] | None:
        out = await self.replayer.aux_call(self.alias, {"model": self.alias, "input": texts}, "embeddings")
        data = (out or {}).get("data") if isinstance(out, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            return None
        return [d.get("embedding") for d in sorted(data, key=lambda d: d.get("index", 0))]

    def _cached(self, call_id: str) -> list[float] | None:
        if self.conn is None:
            return None
        blob = replays.answer_vector(self.conn, call_id, self.alias)
        if blob is None:
            return None
        return list(struct.unpack(f"{len(blob) // 4}f", blob))

    def _store(self, call_id: str, vec: list[float]) -> None:
        if self.cache_write is not None:
            blob = struct.pack(f"{len(vec)}f", *vec)
            self.cache_write(lambda conn: replays.save_answer_vector(conn, call_id, self.alias, blob))

    def cosine(self, a: list[float], b: list[float]) -> float:
        if self.conn is not None and len(a) == len(b):
            try:
                return 1.0 - replays.cosine_distance(self.conn, struct.pack(f"{len(a)}f", *a),
                                                     struct.pack(f"{len(b)}f", *b))
            except Exception:  # sqlite-vec not loadable here: the same formula by hand
                pass
        return cosine(a, b)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class Judge(Evaluator):
    name = "judge"

    def __init__(self, *a, rubric: str | None = None, seed: str = "", **kw):
        super().__init__(*a, **kw)
        self.rubric = rubric or self.settings.judge_rubric
        self.alias = self.settings.judge
        self._rng = random.Random(seed)

    @property
    def describe(self) -> str:
        return f"judge (pairwise via {self.alias}, random order)"

    async def judge(self, rr: RunReplay) -> Verdict:
        original, rc, why = final_pair(rr)
        if original is None:
            return Verdict(False, reason=why)
        candidate = _text(rc.message) if not rc.failed else None
        if candidate is None:
            return Verdict(True, False, 0.0, "the candidate gave no text answer")
        candidate_first = self._rng.random() < 0.5
        a, b = (candidate, original) if candidate_first else (original, candidate)
        task = _task_of(rc.original.request)
        prompt = (f"{self.rubric}\n\nTask:\n{task}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
                  'Reply with JSON {"verdict": "A"} or {"verdict": "B"} for the better answer, or {"verdict": "tie"}.')
        body = {"model": self.alias, "temperature": 0, "messages": [
            {"role": "system", "content": "You are a strict, impartial evaluator of answers."},
            {"role": "user", "content": prompt}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {
                "type": "object", "properties": {"verdict": {"type": "string", "enum": ["tie", "A", "B"]}},
                "required": ["verdict"]}}}}
        out = await self.replayer.aux_call(self.alias, body)
        verdict = _verdict_of(message_of(json.dumps(out).encode()) if out else None)
        if verdict is None:
            return Verdict(False, reason=f"{self.alias} gave no verdict")
        original_letter = "B" if candidate_first else "A"
        accepted = verdict != original_letter
        score = 0.5 if verdict == "tie" else (1.0 if accepted else 0.0)
        return Verdict(True, accepted, score, f"judge: {'tie' if verdict == 'tie' else ('candidate' if accepted else 'original')} better")


def _task_of(request: bytes | None) -> str:
    try:
        msgs = json.loads(request or b"{}").get("messages") or []
    except (ValueError, AttributeError):
        return ""
    users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    return (_text(users[-1]) or "") if users else ""


def _verdict_of(message: dict | None) -> str | None:
    text = _text(message)
    if text is None:
        return None
    try:
        v = json.loads(text).get("verdict")
    except (ValueError, AttributeError):
        v = text.strip().strip('"')
    v = str(v).strip()
    return {"a": "A", "b": "B", "tie": "tie"}.get(v.lower())


class ToolCalls(Evaluator):
    name = "tool_calls"

    @property
    def describe(self) -> str:
        return "tool_calls (same tool names and argument keys at every step)"

    async def judge(self, rr: RunReplay) -> Verdict:
        compared = 0
        for rc in answered_steps(rr):
            oc = rc.original
            compared += 1
            want, got = _tool_shape(message_of(oc.response)), _tool_shape(rc.message)
            if rc.failed or want != got:
                return Verdict(True, False, 0.0, f"step {oc.call_id}: expected {want or 'no tool calls'}, "
                                                 f"got {got or ('an error' if rc.failed else 'no tool calls')}")
        if not compared:
            return Verdict(False, reason="no successful chat step in the original run")
        return Verdict(True, True, 1.0, f"{compared} steps with the same tool calls")


def _tool_shape(message: dict | None) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for tc in (message or {}).get("tool_calls") or []:
        fn = tc.get("function") or {}
        try:
            keys = tuple(sorted(json.loads(fn.get("arguments") or "{}")))
        except (ValueError, TypeError):
            keys = ("<invalid JSON>",)
        out.append((fn.get("name") or "", keys))
    return out


class JsonValid(Evaluator):
    name = "json_valid"

    @property
    def describe(self) -> str:
        return "json_valid (steps that answered JSON still answer valid JSON)"

    async def judge(self, rr: RunReplay) -> Verdict:
        checked = 0
        for rc in answered_steps(rr):
            oc = rc.original
            if not (_is_json(_text(message_of(oc.response))) or _asks_json(oc.request)):
                continue
            checked += 1
            if rc.failed or not _is_json(_text(rc.message)):
                return Verdict(True, False, 0.0, f"step {oc.call_id}: the candidate's answer is not valid JSON")
        if not checked:
            return Verdict(False, reason="no step of the original answered JSON")
        return Verdict(True, True, 1.0, f"{checked} JSON steps valid")


def _is_json(text: str | None) -> bool:
    if text is None:
        return False
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def _asks_json(request: bytes | None) -> bool:
    try:
        rf = json.loads(request or b"{}").get("response_format") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


def make_evaluator(name: str, settings: PromotionSection, replayer: Replayer, *, conn=None, cache_write=None,
                   threshold: float | None = None, rubric: str | None = None) -> Evaluator:
    if name == "similarity":
        return Similarity(settings, replayer, conn, cache_write, threshold=threshold)
    if name == "judge":
        return Judge(settings, replayer, conn, cache_write, rubric=rubric, seed=replayer.replay_id)
    if name == "tool_calls":
        return ToolCalls(settings, replayer, conn, cache_write)
    if name == "json_valid":
        return JsonValid(settings, replayer, conn, cache_write)
    raise ValueError(f"unknown evaluator {name!r}; choose one of {', '.join(EVALUATORS)}")
