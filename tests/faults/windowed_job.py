"""A keyed tumbling-window job chained to a Parquet sink, its DuckDB reference, and the
comparison the rescale fault tests and the soak report: windows lost, duplicated, wrong.

The window step and the sink form one chain, so rescaling the window step rescales the
sink too: the case in which sink transactions must survive plan changes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

import rheostat as rs

STEP = "ev.aggregate"
WINDOW_MS = 500


def events(n: int = 120_000, keys: int = 300, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` rows of ``keys`` keys, 2 ms of event time apart (a window holds 250 rows)."""
    rnd = random.Random(seed)
    return [{"k": f"k{rnd.randint(0, keys)}", "v": rnd.randint(0, 100), "ts": 1_000_000 + i * 2}
            for i in range(n)]


def flow(data: list[dict[str, Any]], out: Path | str, rate: float | None = 30_000,
         name: str = "windowed", updatable: bool = False, fmt: str = "parquet",
         source_parallelism: int | None = None, batch_size: int = 300,
         hold_end: rs.testing.Gate | None = None) -> rs.Flow:
    """Source (paced at ``rate`` rows/s, so there is time to reconfigure) -> key_by(k) ->
    tumbling 500 ms count and sum -> Parquet (or ``fmt="jsonl"``) files in ``out``.

    ``updatable`` puts step ``PREP`` (:func:`clip`, knob ``ceiling``) before the key_by:
    :func:`clip_v2` and any ceiling >= 100 leave the output unchanged.
    ``source_parallelism`` fixes the tasks of the source (and ``PREP``), so that the job
    can resume at another parallelism (sources resume at theirs). ``hold_end``: the
    input does not end before this gate is open."""
    f = rs.Flow(name)
    ev = f.source("ev", rs.testing.rows(data, batch_size=batch_size, hold_end=hold_end),
                  timestamp="ts",
                  out_of_order="10ms", rate=rate, parallelism=source_parallelism)
    if updatable:
        ev = ev.map_batches(clip, name=PREP, knobs={"ceiling": 1000},
                            parallelism=source_parallelism)
    (ev.key_by("k").window(rs.windows.tumbling(f"{WINDOW_MS}ms"))
     .aggregate(name=STEP, n=rs.agg.count(), total=rs.agg.sum("v"))
     .sink("out", getattr(rs.sinks, fmt)(str(out))))
    return f


PREP = "prep"


def clip(batch: pa.RecordBatch, ceiling: int) -> pa.RecordBatch:
    """``v`` capped at ``ceiling`` (events have v <= 100)."""
    return batch.set_column(batch.schema.get_field_index("v"), "v",
                            pc.min_element_wise(batch["v"], ceiling))


def clip_v2(batch: pa.RecordBatch, ceiling: int) -> pa.RecordBatch:
    """:func:`clip` by numpy: a new version of the function, the same output."""
    v = np.minimum(batch["v"].to_numpy(), ceiling)
    return batch.set_column(batch.schema.get_field_index("v"), "v", pa.array(v))


Window = tuple[str, int, int, int]  # key, window end (ms), count, sum


def reference(data: list[dict[str, Any]]) -> list[Window]:
    """Every window of ``data``, computed by DuckDB."""
    ev = pa.Table.from_pylist(data)  # noqa: F841 - read by DuckDB
    return sorted(duckdb.sql(f"""
        select k, ts // {WINDOW_MS} * {WINDOW_MS} + {WINDOW_MS} as we, count(*) as n,
               sum(v) as total
        from ev group by all
    """).fetchall())


def committed(out: Path | str, fmt: str = "parquet") -> list[Window]:
    """The windows committed in ``out`` (readers skip ``_staging``)."""
    if not Path(out).exists():
        return []
    table = ds.dataset(str(out), format="json" if fmt == "jsonl" else fmt).to_table()
    if fmt == "jsonl":  # timestamps are written as text
        table = table.set_column(table.schema.get_field_index("window_end"), "window_end",
                                 table["window_end"].cast(pa.timestamp("ms")))
    return sorted((r["k"], int(r["window_end"].timestamp() * 1000), r["n"], r["total"])
                  for r in table.to_pylist())


@dataclass(frozen=True)
class Diff:
    """How committed output differs from the reference, counted in windows."""

    expected: int
    lost: int  # a window of the reference missing from the output
    duplicated: int  # a window committed more than once
    wrong: int  # an output row the reference does not have (other values, unknown window)

    @property
    def exact(self) -> bool:
        return self.lost == self.duplicated == self.wrong == 0

    def __str__(self) -> str:
        return (f"{self.expected} windows: {self.lost} lost, {self.duplicated} duplicated, "
                f"{self.wrong} wrong")


def compare(expected: list[Window], got: list[Window]) -> Diff:
    want, have = Counter(expected), Counter(got)
    seen = {(k, we) for k, we, _, _ in got}
    lost = sum(n for w, n in want.items() if (w[0], w[1]) not in seen)
    wrong = sum(n for w, n in have.items() if w not in want)
    duplicated = sum(n - want[w] for w, n in have.items() if w in want and n > want[w])
    return Diff(len(expected), lost, duplicated, wrong)


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    """Pacing only: until ``condition()`` holds (or the timeout; the output decides)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)


def checkpoints_done(job: rs.Job) -> int:
    """How many checkpoints of ``job`` completed so far."""
    done = job.sql("select count(*) from checkpoints where state = 'completed'")
    return int(done.column(0)[0].as_py())


def rescale_after_restart(job: rs.Job, step: str, parallelism: int) -> None:
    """Rescale ``step`` once the job runs again after a restart (a request refused while
    the restart is under way is asked again; one refused because the job ended is not)."""
    for _ in range(20):
        try:
            assert job.rescale(step, parallelism)["status"] == "done"
            return
        except rs.ReconfigError as exc:
            if "ended" in str(exc):
                return
            time.sleep(0.1)
