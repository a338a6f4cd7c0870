"""Progress display and summary: the pure helpers, and the callback without a terminal."""

from __future__ import annotations

import io

import pytest

import rheostat as rs
from rheostat.control.controller import JobResult
from rheostat.observe.progress import (
    RateTracker,
    TerminalProgress,
    chain_totals,
    format_count,
    format_duration,
    format_percent,
    format_rate,
    format_watermark,
    notable_counters,
    plain_line,
    summary,
)
from rheostat.plan.physical import PhysicalPlan, lower
from rheostat.protocol import TaskMetrics
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK


def _plan(parallelism: int = 2) -> PhysicalPlan:
    """Two chains: ``src → m`` (fused) and ``out`` behind a rebalance edge."""
    flow = rs.Flow("demo")
    src = flow.source("src", rs.testing.rows([{"k": "a", "t": 1}]), timestamp="t")
    src.map(lambda r: r, name="m").rebalance().sink("out", None)
    return lower(flow.steps, parallelism, flow_name=flow.name)


def test_plan_shape_the_tests_rely_on() -> None:
    plan = _plan()
    assert [c.steps for c in plan.chains] == [("src", "m"), ("out",)]
    assert plan.task_ids == ["src#0", "src#1", "out#0", "out#1"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0, "0"), (999, "999"), (1_000, "1.00k"), (12_345, "12.3k"),
     (999_999, "1000k"), (2_500_000, "2.50M"), (3_000_000_000, "3.00G")],
)
def test_format_count(value: int | None, text: str) -> None:
    assert format_count(value) == text


def test_format_rate_and_percent() -> None:
    assert format_rate(None) == "-"
    assert format_rate(0.0) == "0/s"
    assert format_rate(350_000.0) == "350k/s"
    assert format_percent(None) == "-"
    assert format_percent(0.0) == "0%"
    assert format_percent(0.456) == "46%"
    assert format_percent(1.0) == "100%"


def test_format_duration() -> None:
    assert format_duration(0) == "0.0s"
    assert format_duration(59.94) == "59.9s"
    assert format_duration(61) == "1m 01s"
    assert format_duration(7322) == "2h 02m 02s"


def test_format_watermark() -> None:
    assert format_watermark(None) == "-"
    assert format_watermark(MIN_WATERMARK) == "-"
    assert format_watermark(MAX_WATERMARK) == "end"
    assert format_watermark(0) == "1970-01-01 00:00:00.000"
    assert format_watermark(1_700_000_000_123) == "2023-11-14 22:13:20.123"
    # Beyond what datetime can show: the raw number, not a crash.
    assert format_watermark(10**18) == str(10**18)


def test_notable_counters_keep_nonzero_late_skipped_dead_lettered_unconsumed() -> None:
    counters = {"late": 3, "skipped": 0, "dead_lettered": 2, "errors_unconsumed": 1,
                "late_dropped": 4, "windows_fired": 9}
    assert notable_counters(counters) == {
        "dead_lettered": 2, "errors_unconsumed": 1, "late": 3, "late_dropped": 4,
    }


def test_chain_totals_sum_tasks_and_take_min_watermark() -> None:
    plan = _plan()
    metrics = {
        "src#0": TaskMetrics(rows_in=10, rows_out=10, backpressure_s=1.0, watermark=500,
                             counters={"skipped": 1}),
        "src#1": TaskMetrics(rows_in=5, rows_out=4, backpressure_s=0.5, watermark=200,
                             counters={"skipped": 2, "late": 1}),
        "out#0": TaskMetrics(rows_in=7, watermark=100),
        # out#1 has not reported yet: no rows, no watermark.
    }
    src, out = chain_totals(plan, metrics)
    assert (src.chain_id, src.label, src.tasks) == ("src", "src → m", 2)
    assert (src.rows_in, src.rows_out, src.backpressure_s) == (15, 14, 1.5)
    assert src.watermark == 200
    assert src.counters == {"skipped": 3, "late": 1}
    assert (out.rows_in, out.watermark) == (7, None)  # one task without a watermark yet


def test_chain_totals_no_event_time_is_no_watermark() -> None:
    plan = _plan(parallelism=1)
    (src, _out) = chain_totals(plan, {"src#0": TaskMetrics(rows_in=1, watermark=MIN_WATERMARK)})
    assert src.watermark is None


def test_rate_tracker_uses_deltas_between_calls() -> None:
    plan = _plan()
    tracker = RateTracker(window_s=0)
    first = tracker.update(plan, {"src#0": TaskMetrics(rows_in=100),
                                  "src#1": TaskMetrics(rows_in=100)}, 2.0)
    assert first[0].rows_per_s == 100.0  # from the start of the job
    second = tracker.update(plan, {"src#0": TaskMetrics(rows_in=400),
                                   "src#1": TaskMetrics(rows_in=300)}, 3.0)
    assert second[0].rows_per_s == 500.0
    assert second[1].rows_per_s == 0.0


def test_rate_tracker_backpressure_is_averaged_over_tasks_and_clamped() -> None:
    plan = _plan()
    tracker = RateTracker(window_s=0)
    tracker.update(plan, {}, 1.0)
    rows = tracker.update(plan, {"src#0": TaskMetrics(backpressure_s=1.0),
                                 "src#1": TaskMetrics(backpressure_s=0.0),
                                 "out#0": TaskMetrics(backpressure_s=5.0)}, 2.0)
    assert rows[0].backpressure == 0.5
    assert rows[1].backpressure == 1.0  # never above 100 %


def test_rate_tracker_window_smooths_over_several_calls() -> None:
    plan = _plan(parallelism=1)
    tracker = RateTracker(window_s=2.0)
    for i in range(1, 7):  # 100 rows per half second
        rows = tracker.update(plan, {"src#0": TaskMetrics(rows_in=100 * i)}, 0.5 * i)
    assert rows[0].rows_per_s == pytest.approx(200.0)


def test_rate_tracker_no_interval_no_rate() -> None:
    rows = RateTracker().update(_plan(), {}, 0.0)
    assert all(r.rows_per_s is None and r.backpressure is None for r in rows)


def test_plain_line_names_every_chain() -> None:
    plan = _plan()
    rows = RateTracker().update(plan, {
        "src#0": TaskMetrics(rows_in=2000, watermark=1_000, counters={"late": 2}),
        "src#1": TaskMetrics(rows_in=2000, watermark=2_000),
    }, 4.0)
    line = plain_line("demo", rows, 4.0)
    assert line.startswith("demo 4.0s | ")
    assert "src → m: 4.00k rows, 1.00k/s, wm 1970-01-01 00:00:01.000, bp 0%, late 2" in line
    assert "out: 0 rows, 0/s, wm -, bp 0%" in line


def test_terminal_progress_without_tty_prints_plain_lines_every_interval() -> None:
    plan = _plan()
    out = io.StringIO()  # not a TTY
    progress = TerminalProgress(stream=out, plain_interval_s=5.0)
    progress(plan, {"src#0": TaskMetrics(rows_in=10)}, 0.5)
    progress(plan, {"src#0": TaskMetrics(rows_in=20)}, 1.0)
    progress(plan, {"src#0": TaskMetrics(rows_in=5010)}, 5.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("demo 0.5s | src → m: 10 rows")
    assert "src → m: 5.01k rows, 1.00k/s" in lines[1]  # rate between the printed lines
    progress.close()
    progress(plan, {}, 20.0)
    assert len(out.getvalue().splitlines()) == 2  # nothing after close


def test_terminal_progress_live_renders_a_table_and_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # wide enough that no cell wraps
    plan = _plan()
    out = io.StringIO()
    with TerminalProgress(stream=out, live=True) as progress:
        progress(plan, {"src#0": TaskMetrics(rows_in=1234, watermark=0)}, 0.5)
        progress(plan, {"src#0": TaskMetrics(rows_in=2468, watermark=1000,
                                             counters={"dead_lettered": 3}),
                        "src#1": TaskMetrics(watermark=2000)}, 1.0)
    text = out.getvalue()
    for expected in ("demo", "src → m", "out", "rows/s", "2.47k",
                     "1970-01-01 00:00:01.000", "dead_lettered 3"):
        assert expected in text
    progress.close()  # idempotent


def test_summary_in_plain_words() -> None:
    plan = _plan()
    metrics = {
        "src#0": TaskMetrics(rows_in=6000, watermark=MAX_WATERMARK, counters={"skipped": 2}),
        "src#1": TaskMetrics(rows_in=4000, watermark=MAX_WATERMARK),
        "out#0": TaskMetrics(rows_in=5000, counters={"errors_unconsumed": 1}),
        "out#1": TaskMetrics(rows_in=4998),
    }
    text = summary(JobResult("demo", "finished", 4.0, plan, metrics))
    lines = text.splitlines()
    assert lines[0] == "Job 'demo' finished in 4.0s."
    assert "src → m  (2 tasks): 10,000 rows in, 2.50k rows/s" in lines[1]
    assert "out" in lines[2] and "9,998 rows in" in lines[2]
    assert lines[3] == "Counters: errors_unconsumed 1, skipped 2."


def test_summary_without_counters_or_time() -> None:
    plan = _plan(parallelism=1)
    text = summary(JobResult("demo", "finished", 0.0, plan, {}))
    assert "0 rows in, - rows/s" in text
    assert text.endswith("Counters: none.")
