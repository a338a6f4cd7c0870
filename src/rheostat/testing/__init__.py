"""Testing helpers users need as much as we do: in-memory replayable sources (``rows``,
and ``script`` with sentinels: END, ABORT, Pause, Mark), a fake clock, a step with a known
cost per row (``costly``: a sleep, so a small machine emulates many cores), and a whole job
stepped deterministically in one thread (:class:`SteppedJob`).

>>> src = rows([{"k": "a"}, {"k": "b"}], batch_size=1)
>>> reader = src.open(src.splits(1)[0])
>>> reader.read().num_rows, reader.read().num_rows, reader.read()
(1, 1, None)
"""

from rheostat.testing.clock import FakeClock
from rheostat.testing.cost import costly
from rheostat.testing.script import ABORT, END, InjectedFault, Mark, Pause, script
from rheostat.testing.source import Gate, rows
from rheostat.testing.stepped import SteppedJob

__all__ = ["ABORT", "END", "FakeClock", "Gate", "InjectedFault", "Mark", "Pause", "SteppedJob",
           "costly", "rows", "script"]
