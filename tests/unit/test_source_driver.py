"""The source driver: split assignment, per-split watermarks, idleness and rate limits."""

import pyarrow as pa

from rheostat.plan.logical import SourceStep
from rheostat.runtime.io import Source, SourceReader
from rheostat.runtime.messages import MAX_WATERMARK, Batch, EndOfStream, Watermark
from rheostat.runtime.source import SourceDriver


class Scripted(Source):
    """Split i yields the scripted batches of timestamps; None entries mean 'nothing yet'."""

    def __init__(self, script, bounded=True):
        self.script = script
        self.bounded = bounded

    def splits(self, parallelism):
        return list(range(len(self.script)))

    def open(self, split, position=None, batch_size=0):
        return _ScriptReader(self.script[split], position or 0)


class _ScriptReader(SourceReader):
    def __init__(self, items, pos):
        self.items, self.pos = items, pos

    def read(self):
        if self.pos >= len(self.items):
            return None
        item = self.items[self.pos]
        self.pos += 1
        ts = [] if item is None else item
        return pa.record_batch({"t": pa.array(ts, pa.int64())})

    def position(self):
        return self.pos


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def step(source, **kw):
    return SourceStep("src", (), source=source, timestamp="t", **kw)


def drain(driver, polls=20):
    out = []
    for _ in range(polls):
        out += driver.poll()
    return out


def test_a_task_without_splits_of_a_bounded_source_ends_at_once():
    driver = SourceDriver(step(Scripted([[[1]]])), index=1, parallelism=2)
    assert driver.poll() == [Watermark(MAX_WATERMARK), EndOfStream()]
    assert driver.done


def test_a_task_without_splits_of_an_unbounded_source_is_idle():
    driver = SourceDriver(step(Scripted([[[1]]], bounded=False)), index=1, parallelism=2)
    assert driver.poll() == [Watermark(0, idle=True)]
    assert driver.poll() == []


def test_watermark_is_the_minimum_over_splits_and_trails_by_the_disorder():
    driver = SourceDriver(step(Scripted([[[100]], [[50]]]), out_of_order_ms=10), 0, 1)
    messages = drain(driver, 2)
    marks = [m.value for m in messages if isinstance(m, Watermark)]
    assert marks == [39]  # split 0 alone is no watermark (split 1 unseen); then min(89, 39)
    rest = drain(driver)
    assert rest[-2:] == [Watermark(MAX_WATERMARK), EndOfStream()]


def test_idle_timeout_marks_a_quiet_source_idle_until_data_returns():
    clock = Clock()
    src = Scripted([[[10], None, None, [20]]], bounded=False)
    driver = SourceDriver(step(src, idle_timeout_ms=1000), 0, 1, clock=clock)
    assert isinstance(driver.poll()[0], Batch)
    assert driver.poll() == []  # empty, but not yet quiet for long enough
    clock.now = 2.0
    assert driver.poll() == [Watermark(9, idle=True)]
    messages = driver.poll()
    assert isinstance(messages[0], Batch) and messages[1] == Watermark(19)


def test_rate_limit_holds_rows_back_until_time_allows():
    clock = Clock()
    src = Scripted([[[i] for i in range(10)]])
    driver = SourceDriver(step(src, rate=2.0), 0, 1, clock=clock)
    assert driver.poll() == []  # no time has passed: no budget yet
    clock.now = 1.0
    rows = sum(m.data.num_rows for m in drain(driver) if isinstance(m, Batch))
    assert rows == 2
    clock.now = 3.0
    rows = sum(m.data.num_rows for m in drain(driver) if isinstance(m, Batch))
    assert rows == 4
