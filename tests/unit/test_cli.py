"""The ``rheostat`` command, driven through click's CliRunner on small flow files."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import rheostat as rs
from rheostat.cli import main as cli_main
from rheostat.cli.main import cli, describe_failure, module_name_for

# A flow file: its sink counts rows into a file next to it, so a test can see the job ran
# without relying on any sink from rs.sinks; its main block must never run under the CLI.
HEADER = '''
import pathlib

import rheostat as rs
from rheostat.runtime.io import Sink, SinkWriter

HERE = pathlib.Path(__file__).parent


class CountInto(Sink):
    def __init__(self, name):
        self.name = name

    def open(self, ctx):
        return _Writer(HERE / f"{self.name}.{ctx.task_index}.count")


class _Writer(SinkWriter):
    def __init__(self, path):
        self.path, self.rows = path, 0

    def write(self, batch):
        self.rows += batch.num_rows

    def close(self):
        self.path.write_text(str(self.rows))


def rows(n):
    return rs.testing.rows([{"x": i, "t": i * 10} for i in range(n)], batch_size=50)
'''

TINY = HEADER + '''

def double(row):
    return {"x": row["x"] * 2, "t": row["t"]}


flow = rs.Flow("tiny")
flow.source("nums", rows(200), timestamp="t").map(double, name="double").sink(
    "out", CountInto("out"))

if __name__ == "__main__":
    raise SystemExit("the main block ran")
'''


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading a flow file adds to sys.path and sys.modules: undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("_rheostat_flow_"):
            del sys.modules[name]


def _write(tmp_path: Path, text: str, name: str = "flow.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _rows_written(tmp_path: Path, sink: str = "out") -> int:
    return sum(int(p.read_text()) for p in tmp_path.glob(f"{sink}.*.count"))


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0
    assert rs.__version__ in result.output


def test_run_inline_prints_a_summary(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY)
    result = _invoke("run", path, "--backend", "inline", "--no-progress")
    assert result.exit_code == 0, result.output
    assert _rows_written(tmp_path) == 200  # the job ran, and the main block did not
    assert "Job 'tiny' finished in" in result.stdout
    assert "nums → double → out" in result.stdout
    assert "Counters: none." in result.stdout


def test_run_with_progress_on_a_pipe_prints_plain_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY)
    result = _invoke("run", path, "--backend", "inline")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("tiny ") and "| nums → double → out:" in first


def test_module_name_is_never_main(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + '''
flow = rs.Flow("named")
flow.source("nums", rows(10)).sink("out", CountInto(__name__))
''')
    result = _invoke("run", path, "--backend", "inline", "--no-progress")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.glob("*.count")] == [f"{module_name_for(path)}.0.count"]


def test_run_local_backend_ships_functions_defined_in_the_file(tmp_path: Path) -> None:
    """Worker processes get the file's functions and classes by value, and its folder."""
    _write(tmp_path, "def triple(row):\n    return {'x': row['x'] * 3}\n", "helpers.py")
    path = _write(tmp_path, TINY.replace(
        'flow = rs.Flow("tiny")',
        'from helpers import triple\nflow = rs.Flow("tiny")',
    ).replace('name="double")', 'name="double").map(triple)'))
    result = _invoke("run", path, "-p", "2", "--workers", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    assert _rows_written(tmp_path) == 200
    assert "(2 tasks)" in result.stdout


def test_flow_error_while_building_is_one_paragraph(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + '''
flow = rs.Flow("bad")
flow.source("nums", rows(10)).key_by("nope")
''')
    result = _invoke("run", path, "--backend", "inline")
    assert result.exit_code == 1
    assert "is not valid (line " in result.stderr
    assert "unknown column(s) ['nope']" in result.stderr
    assert "Traceback" not in result.output


def test_flow_error_when_the_flow_is_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + '''
flow = rs.Flow("sinkless")
flow.source("nums", rows(10))
''')
    result = _invoke("run", path, "--backend", "inline")
    assert result.exit_code == 1
    assert "has no sink" in result.stderr
    assert "Traceback" not in result.output


def test_job_failure_names_step_and_record_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + '''
def boom(row):
    if row["x"] == 13:
        raise ValueError("thirteen")
    return row

flow = rs.Flow("failing")
flow.source("nums", rows(100)).map(boom, name="boom").sink("out", CountInto("out"))
''')
    result = _invoke("run", path, "--backend", "inline", "--no-progress")
    assert result.exit_code == 1
    message = result.stderr
    assert "job 'failing' failed" in message
    assert "step 'boom' failed on record" in message and '"x": 13' in message
    assert "ValueError: thirteen" in message
    assert "--debug" in message
    assert "Traceback" not in result.output
    assert len(message.strip().splitlines()) == 1  # one paragraph


def test_job_failure_with_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + '''
def boom(row):
    raise ValueError("always")

flow = rs.Flow("failing")
flow.source("nums", rows(10)).map(boom, name="boom").sink("out", CountInto("out"))
''')
    result = _invoke("run", path, "--backend", "inline", "--no-progress", "--debug")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: always" in result.stderr


def test_error_while_loading_the_file_says_where(tmp_path: Path) -> None:
    path = _write(tmp_path, "import rheostat as rs\n\nflow = rs.Flow('x')\nundefined_name\n")
    result = _invoke("run", path)
    assert result.exit_code == 1
    assert "raised at line 4 NameError" in result.stderr
    assert "Traceback" not in result.output


def test_no_flow_in_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "import rheostat as rs\n\ndef make():\n    return rs.Flow('x')\n")
    result = _invoke("run", path)
    assert result.exit_code == 1
    assert "defines no flow at module level" in result.stderr


TWO_FLOWS = HEADER + '''
first = rs.Flow("alpha")
first.source("nums", rows(10)).sink("out", CountInto("alpha"))
second = rs.Flow("beta")
second.source("nums", rows(30)).sink("out", CountInto("beta"))
also_second = second
'''


def test_several_flows_need_flow_option(tmp_path: Path) -> None:
    path = _write(tmp_path, TWO_FLOWS)
    result = _invoke("run", path, "--backend", "inline")
    assert result.exit_code == 1
    assert "defines 2 flows" in result.stderr
    for name in ("first (flow 'alpha')", "second (flow 'beta')", "--flow NAME"):
        assert name in result.stderr
    assert not list(tmp_path.glob("*.count"))


@pytest.mark.parametrize("wanted", ["second", "beta", "also_second"])
def test_flow_option_picks_by_variable_or_flow_name(tmp_path: Path, wanted: str) -> None:
    path = _write(tmp_path, TWO_FLOWS)
    result = _invoke("run", path, "--flow", wanted, "--backend", "inline", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "Job 'beta' finished" in result.stdout
    assert _rows_written(tmp_path, "beta") == 30
    assert _rows_written(tmp_path, "alpha") == 0


def test_flow_option_unknown_name_lists_what_exists(tmp_path: Path) -> None:
    path = _write(tmp_path, TWO_FLOWS)
    result = _invoke("run", path, "--flow", "gamma", "--backend", "inline")
    assert result.exit_code == 1
    assert "there is no flow named 'gamma'" in result.stderr
    assert "first (flow 'alpha')" in result.stderr


def test_ctrl_c_stops_cleanly_with_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "run_flow", interrupted)
    path = _write(tmp_path, TINY)
    result = _invoke("run", path, "--backend", "inline")
    assert result.exit_code == 130
    assert "Interrupted (Ctrl-C): job 'tiny' was cancelled" in result.stderr


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY)
    assert _invoke("run", path, "--parallelism", "0").exit_code == 2
    assert _invoke("run", path, "--backend", "spark").exit_code == 2
    assert _invoke("run", path, "--address", "auto").exit_code == 2  # needs --backend ray
    assert _invoke("run", tmp_path / "missing.py").exit_code == 2


def test_mermaid(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY)
    result = _invoke("mermaid", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart LR")
    assert "s_nums --> s_double" in result.stdout
    assert not list(tmp_path.glob("*.count"))  # drawing runs nothing


def test_describe_failure_keeps_the_first_paragraph() -> None:
    err = rs.JobFailed("job 'j' failed in task a#0: worker said\nTraceback (most recent...)\n x")
    assert describe_failure(err) == "job 'j' failed in task a#0: worker said"
