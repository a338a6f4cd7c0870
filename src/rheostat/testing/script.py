"""A testing source that follows a script: rows, and sentinels that end the input, crash
the job once, pause, or mark a point a test waits for to inject a checkpoint or a
reconfiguration.

>>> src = script([{"x": 1}, Mark("half"), {"x": 2}, END, {"x": 3}])
>>> reader = src.open(src.splits(1)[0])
>>> reader.read().to_pylist(), src.reached("half")
([{'x': 1}], False)
>>> reader.read().num_rows, src.reached("half")  # the mark is read: nothing to emit
(0, True)
>>> reader.read().to_pylist(), reader.read()
([{'x': 2}], None)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rheostat.runtime.io import Source, SourceReader


class InjectedFault(RuntimeError):
    """Raised by an :data:`ABORT` sentinel: the job fails (or restarts) there, once."""


@dataclass(frozen=True)
class _End:
    def __repr__(self) -> str:
        return "END"


@dataclass(frozen=True)
class _Abort:
    def __repr__(self) -> str:
        return "ABORT"


#: The split ends here; what follows is never read.
END = _End()
#: Raise :class:`InjectedFault` here the first time it is read; a restored run goes on.
ABORT = _Abort()


@dataclass(frozen=True)
class Pause:
    """Return ``reads`` empty batches here: the source has nothing ready for a while."""

    reads: int = 1


@dataclass(frozen=True)
class Mark:
    """A named point: ``source.reached(name)`` is True once a reader passed it."""

    name: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"a mark's name is letters, digits, '_', '.', '-'; got "
                             f"{self.name!r}")


Item = dict[str, Any] | _End | _Abort | Pause | Mark


class ScriptSource(Source):
    """The source :func:`script` builds. Its markers (marks reached, aborts fired) live in
    a folder, so they hold across worker processes and restarts."""

    def __init__(self, items: Sequence[Item], splits: int, schema: pa.Schema | None) -> None:
        self.items = list(items)
        self.n_splits = splits
        self._schema = schema
        self.folder = tempfile.mkdtemp(prefix="rheostat-script-")
        # Removed with the driver's instance; the copies workers unpickle leave it alone.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        rows = [i for i in self.items if isinstance(i, dict)]
        if schema is None and rows:
            self._schema = pa.Table.from_pylist(rows).schema
        for i, item in enumerate(self.items):
            if not isinstance(item, dict | _End | _Abort | Pause | Mark):
                raise TypeError(f"script item {i} is {item!r}: give dicts (rows) or END, "
                                "ABORT, Pause(n), Mark(name)")

    def schema(self) -> pa.Schema | None:
        return self._schema

    def splits(self, parallelism: int) -> list[int]:
        """Split ``s`` reads items ``s, s + n, s + 2n...`` (one split: the whole script)."""
        return list(range(self.n_splits))

    def open(self, split: Any, position: Any = None, batch_size: int = 0) -> SourceReader:
        return _ScriptReader(self, self.items[split::self.n_splits], split, position or 0)

    def reached(self, name: str) -> bool:
        """Whether some reader has passed ``Mark(name)``."""
        return os.path.exists(os.path.join(self.folder, f"mark-{name}"))

    def _flag(self, name: str) -> bool:
        """Set flag ``name``; True if it was not set before."""
        try:
            os.close(os.open(os.path.join(self.folder, name), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cleanup"}

    def __repr__(self) -> str:
        return f"testing.script(<{len(self.items)} items>)"


class _ScriptReader(SourceReader):
    """Reads one item per call: a row as a 1-row batch, a sentinel as what it says."""

    def __init__(self, source: ScriptSource, items: list[Item], split: int, position: int):
        self.source, self.items, self.split = source, items, split
        self.next = position
        self.paused = 0

    def read(self) -> pa.RecordBatch | None:
        empty = pa.RecordBatch.from_pylist([], schema=self.source.schema())
        if self.next >= len(self.items):
            return None
        item = self.items[self.next]
        if isinstance(item, Pause):
            if self.paused < item.reads:
                self.paused += 1
                return empty
            self.paused = 0
            self.next += 1
            return self.read()
        if isinstance(item, _End):
            return None
        if isinstance(item, _Abort) and self.source._flag(f"abort-{self.split}-{self.next}"):
            raise InjectedFault(f"ABORT at item {self.next} of split {self.split}")
        self.next += 1
        if isinstance(item, Mark):
            self.source._flag(f"mark-{item.name}")
        if isinstance(item, dict):
            return pa.RecordBatch.from_pylist([item], schema=self.source.schema())
        return empty

    def position(self) -> int:
        return self.next


def script(items: Sequence[Item], *, splits: int = 1, schema: pa.Schema | None = None
           ) -> ScriptSource:
    """A source that reads ``items`` in order, one per read: dicts are rows, and

    - ``END`` ends the input there (a test of what happens before the end);
    - ``ABORT`` raises :class:`InjectedFault` the first time it is read, so the job fails
      there or, with checkpoints and a restart policy, restarts and goes on past it;
    - ``Pause(n)`` returns nothing ``n`` times (a source with no data ready);
    - ``Mark(name)``: ``source.reached(name)`` turns True once it is read, for a test
      that waits for that point to take a checkpoint or reconfigure the job (with
      :class:`~rheostat.testing.SteppedJob`, ``job.run_until(lambda: src.reached(...))``).

    With ``splits=n`` split ``s`` reads items ``s, s + n...``; the schema comes from the
    rows unless given. Positions are item indexes, so a restore resumes exactly.
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits!r}")
    return ScriptSource(items, splits, schema)
