"""The reconfiguration soak by hand: N seeded rounds of tests/faults/soak.py, a table of
what each did (kills, reconfigurations, windows lost / duplicated / wrong) and a total.

    python bench/soak.py --rounds 50          # seeds 0..49
    python bench/soak.py --first 37 --rounds 1  # round 37 alone

Exits with status 1 if any round lost, duplicated or got a window wrong.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# before bench/ (this file is soak.py too): the round runner and its job
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))
import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds to run (default: RHEOSTAT_SOAK_ROUNDS or 6)")
    parser.add_argument("--first", type=int, default=0, help="seed of the first round")
    args = parser.parse_args(argv)
    done: list[soak.Round] = []
    print(soak.HEADER, flush=True)
    for seed in range(args.first, args.first + soak.rounds(args.rounds)):
        with tempfile.TemporaryDirectory(prefix=f"soak-{seed}-") as workdir:
            done.append(soak.run_round(seed, Path(workdir)))
        print(done[-1].row(), flush=True)
    print(soak.table(done).splitlines()[-1])
    return 0 if all(r.exact for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
