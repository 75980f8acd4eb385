"""Migrations of the playback room (cassettes, the dev cache). Numbers 1201, 1202... belong to it.

- calls_playback: the few calls answered from a cassette or the cache, by run, so `analytics` totals
  what they saved without reading every call row (a partial index: it holds nothing until used).
"""

MIGRATIONS: list[tuple[int, str]] = [
    (1201, """
CREATE INDEX calls_playback ON calls(run_id) WHERE provider IN ('cassette', 'cache');
"""),
]
