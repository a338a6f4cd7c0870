"""Benchmarks that ship with rheostat: ``python -m rheostat.bench nexmark ...``.

An entry point like the CLI: it builds flows with rheostat's public API, runs them with
:func:`rheostat.run` and measures them against an in-process limit (DuckDB over the same
data). :mod:`rheostat.bench.nexmark` holds the Nexmark queries, their DuckDB reference SQL
and the runner.
"""
