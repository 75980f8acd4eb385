"""Playback: recorded calls as cassettes, answered again without a provider (and the dev cache).

- format.py     the cassette file (JSON lines, versioned header), atomic writes
- normalise.py  a request's key: per-endpoint rules for volatile keys and generated ids
- matcher.py    ordered answers per key and run, the `cassette_miss` error, the dev cache
- answers.py    a recorded answer as a ChatResult or ChatStream (stream <-> non-stream)
- source.py     what the gateway asks before routing (`Playback.lookup`) and `observe`s after
- save.py       recorded runs from the database as cassette entries (`cassette save`)

Framework-free: the calls/ dispatcher asks it through its `Source` protocol before routing.
"""
from .format import Cassette, CassetteError, Entry, load
from .matcher import CassetteMiss
from .source import ON_MISS, Playback, attach, load_playback

__all__ = ["Cassette", "CassetteError", "CassetteMiss", "Entry", "ON_MISS", "Playback", "attach", "load",
           "load_playback"]
