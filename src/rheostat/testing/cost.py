"""``costly(per_row_s)``: a step that costs a known time per row, served as a sleep.

It emulates capacity, not CPU: each task sleeps ``len(batch) * per_row_s / efficiency``
per batch, so one task serves at most ``efficiency / per_row_s`` rows per second and K
tasks serve K times that *whatever the machine's real cores* — 2 real cores emulate K
"virtual cores", because a sleeping task holds none. The sleep is the task's useful time
(DS2's busy time: it is inside the step), so the sensors and the policies see exactly the
cost they would see from real work, and an oracle parallelism follows from the costs:
``ceil(rate * per_row_s / efficiency / target_utilisation)``. Use it to test and benchmark
scaling decisions on a small machine; it says nothing about real CPU-bound speed.

``efficiency`` divides the speed of every task alike (a per-row cost of ``per_row_s /
efficiency``); scaling that gets sub-linear with the number of tasks needs the task count,
which a ``map_batches`` function does not see.

>>> import pyarrow as pa
>>> import time
>>> step = costly(0.001)
>>> t = time.monotonic(); out = step(pa.record_batch({"x": list(range(20))}))
>>> out.num_rows, time.monotonic() - t >= 0.02
(20, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class costly:  # lower case: used like a function, flow.map_batches(costly(...))
    """A ``map_batches`` function that passes its batch through after sleeping
    ``len(batch) * per_row_s / efficiency`` seconds (see the module docstring)."""

    per_row_s: float
    efficiency: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.per_row_s >= 0:
            raise ValueError(f"per_row_s must be >= 0, got {self.per_row_s!r}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency!r}")

    @property
    def rows_per_s_per_task(self) -> float:
        """The most one task serves: its true processing rate."""
        return self.efficiency / self.per_row_s if self.per_row_s > 0 else float("inf")

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows and self.per_row_s > 0:
            self.sleep(batch.num_rows * self.per_row_s / self.efficiency)
        return batch
