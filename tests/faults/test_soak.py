"""The reconfiguration soak (issue 11, part 5): seeded random rounds of ``soak.py`` on
real worker processes -- rescales, key-group moves, function and knob updates, SIGKILLs
of workers and of the driver -- each round's committed output equal to DuckDB's.

``--rounds N`` (or RHEOSTAT_SOAK_ROUNDS=N) runs seeds 0..N-1; the default 6 take about
two minutes on two cores. ``python bench/soak.py --first S --rounds 1`` reruns round S alone.
"""

from pathlib import Path
from typing import Any

import pytest
import soak


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        n = soak.rounds(metafunc.config.getoption("rounds"))
        metafunc.parametrize("seed", range(n), ids=lambda s: f"seed{s}")


def test_a_round_of_reconfigurations_and_kills_commits_every_window_once(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], local_workers: Any
) -> None:
    record = soak.run_round(seed, tmp_path)
    table = f"{soak.HEADER}\n{record.row()}"
    with capsys.disabled():
        print(f"\n{table}")
    assert record.exact, (f"round {seed} is not exact "
                          f"(rerun: python bench/soak.py --first {seed} --rounds 1)\n{table}")
    assert local_workers() == []
