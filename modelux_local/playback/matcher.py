"""Finding the recorded answer for a request: a cassette's ordered index, and the dev cache.

Identical requests (same key) are answered in recorded order: the second identical request of a
run gets the second recorded answer. Positions are counted per run (`run_id`), so every run
played against one server starts from the first answer; calls outside a run share one count.
"""
from __future__ import annotations

import time
from typing import Any

from ..errors import BadRequest
from .format import Entry
from .normalise import differences, key_of, similarity


class CassetteMiss(BadRequest):
    """No recorded answer for a request, in `--on-miss error` (the default)."""

    code = "cassette_miss"


class Matcher:
    def __init__(self, entries: list[Entry], name: str):
        self.name = name  # the cassette, as error messages name it
        self.entries: list[Entry] = []
        self._by_key: dict[bytes, list[int]] = {}
        self._next: dict[tuple[str | None, bytes], int] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: Entry) -> None:
        self._by_key.setdefault(key_of(entry.endpoint, entry.request), []).append(len(self.entries))
        self.entries.append(entry)

    def take(self, key: bytes, run_id: str | None) -> Entry | None:
        """The next recorded answer for `key` in this run, or None (the position advances either way,
        so a call answered live or recorded on a miss keeps the count of identical requests true)."""
        slot = (run_id, key)
        n = self._next.get(slot, 0)
        self._next[slot] = n + 1
        found = self._by_key.get(key)
        return self.entries[found[n]] if found is not None and n < len(found) else None

    def miss(self, endpoint: str, request: dict[str, Any], key: bytes, run_id: str | None) -> CassetteMiss:
        """The error for a request with no answer left, naming the nearest recorded one and what differs."""
        model = request.get("model")
        head = f"cassette_miss: no recorded answer in {self.name} for this {endpoint} request (model {model!r})"
        found = self._by_key.get(key)
        if found is not None:  # recorded, but fewer times than this run asks
            n = self._next[(run_id, key)]
            return CassetteMiss(f"{head}: this identical request was recorded {len(found)} time(s) (line "
                                f"{', '.join(str(i + 2) for i in found)}) and this is request number {n} of it"
                                f"{' in run ' + repr(run_id) if run_id else ''}. {_REFRESH}")
        same = [(i, e) for i, e in enumerate(self.entries) if e.endpoint == endpoint]
        if not same:
            return CassetteMiss(f"{head}: the cassette holds no {endpoint} calls. {_REFRESH}")
        i, near = max(same, key=lambda ie: similarity(endpoint, request, ie[1].request))
        diff = differences(endpoint, request, near.request)
        return CassetteMiss(f"{head}. Nearest recorded call (line {i + 2}, {near.alias or near.request.get('model')}) "
                            f"differs in {'; '.join(diff[:3])}. {_REFRESH}")


_REFRESH = "To add it, run the server with --on-miss record (or re-save the cassette from a new run)."


class DevCache:
    """Identical requests answered from calls recorded within a ttl (off unless an alias or request asks)."""

    def __init__(self, max_entries: int = 1000):
        self.max_entries = max_entries
        self._items: dict[bytes, tuple[float, Entry]] = {}

    def get(self, key: bytes, ttl_s: float, now: float | None = None) -> Entry | None:
        item = self._items.get(key)
        if item is None:
            return None
        if (time.time() if now is None else now) - item[0] > ttl_s:
            del self._items[key]
            return None
        return item[1]

    def put(self, key: bytes, entry: Entry, now: float | None = None) -> None:
        self._items.pop(key, None)
        self._items[key] = (time.time() if now is None else now, entry)
        while len(self._items) > self.max_entries:  # oldest first (insertion order)
            del self._items[next(iter(self._items))]
