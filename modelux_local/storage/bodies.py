"""How request and response bodies are stored: each distinct message once, everything compressed.

Agents resend their growing conversation on every step, so storing each request whole grows
with the square of the run's length. A stored request is instead its bytes with the elements
of its top-level `messages` (or `input`) array cut out — the skeleton — plus, for each cut, an
offset in the skeleton and the id of a row in `messages` holding that element's exact bytes.
Cutting raw byte spans (not re-encoding JSON) makes the round trip byte-identical whatever
the client's JSON spacing or key order, and identical messages share one row.

Stored blob: MAGIC, a kind byte, a codec byte, the payload. Rows written before this format
hold the raw body; MAGIC starts with 0xFF, which no UTF-8 text (so no JSON body) starts with,
so `decode_body` tells them apart. A raw body that itself starts with MAGIC is stored as a
compressed whole body, so it cannot be misread.

Writing happens on the writer thread (record_rows.write_calls); reading anywhere through
`decode_body`. Every reader of `calls.request` / `calls.response` goes through it.
"""
from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections import OrderedDict
from typing import Any

import apsw
import msgspec

MAGIC = b"\xffM"
KIND_BODY, KIND_REFS = 0x62, 0x72          # b"b": the whole body; b"r": skeleton + message refs
CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD = 0x6E, 0x64, 0x7A
# a message's last_at is the latest start of a call referencing it, refreshed at most every TOUCH_S:
# so every referencing call started before last_at + TOUCH_S, and retention keeps that much slack
TOUCH_S = 3600.0
# smaller payloads are stored as they are (codec byte CODEC_NONE, which every version reads): a zstd
# call costs ~10 us of the writer's CPU whatever the size below a few KB (its fixed setup), a third of
# a small chat call's whole write, for a few hundred bytes saved. A chat call's row (the decision JSON
# alone is ~1 KB) fits one 4 KB page either way.
MIN_COMPRESS = 1024
MIN_SPLIT = 1024   # smaller requests are stored whole: a few short messages are not worth a scan and rows
ARRAY_KEYS = (b'"messages"', b'"input"')

try:  # measured in bench/storage.py: zstd compresses these bodies smaller and several times faster than zlib
    import zstandard as _zstd

    _zc = _zstd.ZstdCompressor(level=3)
    _zd = _zstd.ZstdDecompressor()
    CODEC = CODEC_ZSTD
except ImportError:  # pragma: no cover - zstandard is a dependency; this keeps a broken install readable
    _zstd = None
    CODEC = CODEC_ZLIB

_mp_enc = msgspec.msgpack.Encoder()
_mp_dec = msgspec.msgpack.Decoder()
# a JSON string (escapes included) or one structural character: everything else is skipped by the regex
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)  # strings: the unrolled loop, no per-byte alternation


class BodyError(ValueError):
    """A stored blob that cannot be decoded (damaged, or written by a newer version)."""


# -- compression ------------------------------------------------------------------------------

def compress(data: bytes) -> bytes:
    """codec byte + payload."""
    if len(data) < MIN_COMPRESS:
        return bytes((CODEC_NONE,)) + data
    if CODEC == CODEC_ZSTD:
        out = _zc.compress(data)
    else:
        out = zlib.compress(data, 6)
    if len(out) >= len(data):
        return bytes((CODEC_NONE,)) + data
    return bytes((CODEC,)) + out


def decompress(blob: bytes | memoryview) -> bytes:
    codec, data = blob[0], blob[1:]
    if codec == CODEC_NONE:
        return bytes(data)
    if codec == CODEC_ZSTD:
        if _zstd is None:
            raise BodyError("this body is zstd-compressed and the zstandard package is not installed")
        return _zd.decompress(data)
    if codec == CODEC_ZLIB:
        return zlib.decompress(data)
    raise BodyError(f"unknown body codec {codec:#x}")


# -- finding the messages ----------------------------------------------------------------------

def message_spans(body: bytes, start: int = 0) -> list[tuple[int, int]] | None:
    """Byte spans of the object elements of the body's top-level `messages` (or `input`) array.

    `start` > 0 resumes inside that array right after an element (the part of the body before
    it matched an earlier body whose spans are known). None: no such array (not a JSON object,
    or another endpoint's shape); the body is then stored whole.
    """
    depth = 2 if start else 0
    in_array = bool(start)
    expect_key = False
    want_array = False
    elem_start = -1
    spans: list[tuple[int, int]] = []
    for m in _TOKEN.finditer(body, start):
        t = body[m.start()]
        if t == 0x22:  # a string
            if depth == 1 and expect_key:
                want_array = m.group() in ARRAY_KEYS and not spans
                expect_key = False
            continue
        if t == 0x7B or t == 0x5B:  # { [
            if depth == 0 and t != 0x7B:
                return None
            if depth == 1:
                if want_array and t == 0x5B:
                    in_array = True
                want_array = False
            elif depth == 2 and in_array and t == 0x7B:
                elem_start = m.start()
            depth += 1
            if depth == 1:
                expect_key = True
        elif t == 0x7D or t == 0x5D:  # } ]
            depth -= 1
            if depth == 2 and in_array and t == 0x7D and elem_start >= 0:
                spans.append((elem_start, m.end()))
                elem_start = -1
            elif depth == 1 and in_array:
                in_array = False
                return spans or None
            elif depth <= 0:
                return spans or None
        else:  # ,
            if depth == 1:
                expect_key = True
                want_array = False
    return None


# -- the writer's side -------------------------------------------------------------------------

class BodyEncoder:
    """Encodes bodies for storage on the writer's connection; remembers which messages it stored.

    `_ids` maps a message's hash to its row id and `_touched` a row id to when its last_at was
    last refreshed; `_runs` keeps each recent run's last request prefix, so the next step of the
    run (which resends it) is compared with memcmp and scanned only from where it differs.
    """

    def __init__(self, conn: apsw.Connection, max_ids: int = 200_000, max_runs: int = 256):
        self.conn = conn
        self._ids: OrderedDict[bytes, int] = OrderedDict()
        self._touched: dict[int, float] = {}
        self._runs: OrderedDict[str, tuple[bytes, list[tuple[int, int, int]]]] = OrderedDict()
        self.max_ids, self.max_runs = max_ids, max_runs
        # call_id -> spans of the messages its run's previous request did not have, for the search
        # index (storage/search._batch_rows), which then indexes each message of a run once; reset per batch
        self.fresh: dict[str, list[tuple[int, int]]] = {}
        self.rowids: dict[str, int] = {}  # call_id -> rowid of the batch's rows (RETURNING), for the same index
        # a rolled-back batch takes the message rows it inserted with it: the caches must not outlive them
        conn.set_rollback_hook(self.forget)

    def forget(self) -> None:
        """After a rollback or a retention pass: ids may be gone, check them against the table again."""
        self._ids.clear()
        self._touched.clear()
        self._runs.clear()

    def response(self, body: bytes | None) -> bytes | None:
        if body is None:
            return None
        return MAGIC + bytes((KIND_BODY,)) + compress(bytes(body))

    def request(self, body: bytes | None, run_id: str | None, now: float | None = None,
                call_id: str | None = None) -> bytes | None:
        """`now`: the call's start (epoch s), what retention compares with; default the clock."""
        if body is None:
            return None
        body = bytes(body)
        now = time.time() if now is None else now
        known: list[tuple[int, int, int]] = []
        resume = 0
        prev = self._runs.get(run_id) if run_id else None
        if prev is not None:
            known = _repeated(body, *prev)
            resume = known[-1][1] if known else 0
        if not known and len(body) < MIN_SPLIT:
            return self.response(body)
        spans = message_spans(body, resume)
        if spans is None and not known:
            return self.response(body)
        refs = [(s, e, self._refresh(body, s, e, i, now)) for s, e, i in known]
        refs += [(s, e, self._id_of(body[s:e], now)) for s, e in (spans or [])]
        if known and call_id is not None:
            self.fresh[call_id] = spans or []
        if run_id:
            self._runs[run_id] = (body[:refs[-1][1]], refs)
            self._runs.move_to_end(run_id)
            if len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        parts, offsets, ids = [], [], []
        pos = last_off = last_id = skel_len = 0
        for s, e, mid in refs:
            parts.append(body[pos:s])
            skel_len += s - pos
            offsets.append(skel_len - last_off)   # deltas: small numbers, one msgpack byte each
            ids.append(mid - last_id)
            last_off, last_id, pos = skel_len, mid, e
        parts.append(body[pos:])
        payload = _mp_enc.encode((b"".join(parts), offsets, ids))
        return MAGIC + bytes((KIND_REFS,)) + compress(payload)

    def _refresh(self, body: bytes, s: int, e: int, mid: int, now: float) -> int:
        """A message the run's previous request had: refresh its last_at when that is stale."""
        if now - self._touched.get(mid, -TOUCH_S) < TOUCH_S:
            return mid
        return self._id_of(body[s:e], now)

    def _id_of(self, msg: bytes, now: float) -> int:
        h = _hash(msg)
        mid = self._ids.get(h)
        if mid is not None:
            if now - self._touched.get(mid, -TOUCH_S) < TOUCH_S:
                return mid
            self.conn.execute("UPDATE messages SET last_at = max(last_at, ?) WHERE id = ?", (now, mid))
            if self.conn.changes():
                self._touched[mid] = max(now, self._touched.get(mid, now))
                return mid
        row = self.conn.execute("INSERT INTO messages (hash, last_at, body) VALUES (?, ?, ?) ON CONFLICT(hash) "
                                "DO UPDATE SET last_at = max(last_at, excluded.last_at) RETURNING id",
                                (h, now, compress(msg))).fetchone()
        mid = row[0]
        self._ids[h] = mid
        self._touched[mid] = max(now, self._touched.get(mid, now))
        if len(self._ids) > self.max_ids:
            _, old = self._ids.popitem(last=False)
            self._touched.pop(old, None)
        return mid


def _repeated(body: bytes, prefix: bytes, refs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The leading refs of the previous request whose bytes (and everything before them) this body
    repeats: a binary search over memcmp of prefixes, since a matching prefix implies shorter ones."""
    if body.startswith(prefix):  # the common case: the whole previous history, resent
        return refs
    p = memoryview(prefix)  # bytes.startswith(memoryview) is a memcmp without a copy
    lo, hi = 0, len(refs) - 1  # refs[:lo] match; refs[:hi+1] may not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if body.startswith(p[:refs[mid - 1][1]]):
            lo = mid
        else:
            hi = mid - 1
    return refs[:lo]


def _hash(msg: bytes) -> bytes:
    return hashlib.blake2b(msg, digest_size=16).digest()


# -- the readers' side -------------------------------------------------------------------------

def decode_body(conn: apsw.Connection | None, blob: Any) -> bytes | None:
    """The exact bytes a call's request or response had, from what `calls` stores.

    None when there is no body, or when a retention pass pruned its messages between the
    read of the row and of its messages (the body is then being pruned). `conn` is needed
    for requests (their messages are rows); responses are stored whole.
    """
    if blob is None:
        return None
    b = bytes(blob)
    if not b.startswith(MAGIC):
        return b  # stored before bodies were encoded
    if len(b) < 4:
        raise BodyError("truncated stored body")
    kind = b[2]
    data = decompress(memoryview(b)[3:])
    if kind == KIND_BODY:
        return data
    if kind != KIND_REFS:
        raise BodyError(f"unknown stored body kind {kind:#x}")
    if conn is None:
        raise BodyError("decoding a request that references messages needs the database connection")
    skeleton, offsets, id_deltas = _mp_dec.decode(data)
    ids, acc = [], 0
    for d in id_deltas:
        acc += d
        ids.append(acc)
    found = _messages(conn, set(ids))
    if len(found) < len(set(ids)):
        return None
    out, pos, off = [], 0, 0
    for d, mid in zip(offsets, ids):
        off += d
        out.append(skeleton[pos:off])
        out.append(found[mid])
        pos = off
    out.append(skeleton[pos:])
    return b"".join(out)


def _messages(conn: apsw.Connection, ids: set[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    todo = list(ids)
    for i in range(0, len(todo), 500):
        part = todo[i:i + 500]
        for mid, body in conn.execute(f"SELECT id, body FROM messages WHERE id IN ({','.join('?' * len(part))})", part):
            out[mid] = decompress(body)
    return out
