"""``python -m rheostat.bench nexmark --query q5 --events 10000000 --parallelism 2``.

Subcommands: ``nexmark`` (see ``python -m rheostat.bench nexmark --help``).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from rheostat.bench.nexmark.runner import add_arguments, run_cli

    ap = argparse.ArgumentParser(prog="python -m rheostat.bench",
                                 description="rheostat's benchmarks")
    sub = ap.add_subparsers(dest="suite", required=True)
    nexmark = sub.add_parser(
        "nexmark", help="the Nexmark queries against the in-process limit (DuckDB)",
        description="Run Nexmark queries through rheostat (generator to a discarding sink) "
                    "and through DuckDB over the same events in this process; print and "
                    "optionally save one JSON record per query.")
    add_arguments(nexmark)
    args = ap.parse_args(argv)
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
