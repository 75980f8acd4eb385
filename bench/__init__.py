"""Benchmarks for modelux-local, run through `scripts/bench` (`python -m bench.run`).

Speed and memory targets live here, not in timed tests. The bench is a set of named
sections, each its own module registered in `bench.run.SECTIONS`:

    overhead   proxy latency and CPU per request against a direct call to the same upstream

A section module provides
    DESCRIPTION: str
    add_arguments(parser)            optional: its own flags
    async run(ctx: Context) -> dict  the figures (JSON-serialisable); `ctx` gives the flags,
                                     a scratch dir, progress logging and process helpers
    render(figures: dict) -> str     the human table

Shared helpers: `bench._harness` (free ports, the fake upstream and the proxy as
subprocesses, their CPU time from /proc) and `bench._load` (closed-loop load generator,
percentiles).
"""
