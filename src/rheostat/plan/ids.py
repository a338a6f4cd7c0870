"""Typed ids: a task is ``"<chain_id>#<index>"``, a checkpoint is a number.

:class:`TaskId` is a ``str``, so it is a dict key, JSON, a pickle and equal to the plain
string it spells; it adds the two halves, parsed once and checked:

>>> t = TaskId("ev.aggregate#3")
>>> t.chain, t.index
('ev.aggregate', 3)
>>> TaskId.of("ev.aggregate", 3) == "ev.aggregate#3"
True
>>> TaskId("ev.aggregate")
Traceback (most recent call last):
...
ValueError: 'ev.aggregate' is not a task id: a task id is '<chain_id>#<index>', as in 'src#0'
"""

from __future__ import annotations

from typing import NewType

#: A checkpoint's number: 1, 2, ... in the order the controller starts them.
CheckpointId = NewType("CheckpointId", int)


class TaskId(str):
    """Task ``index`` of chain ``chain``, spelled ``"<chain>#<index>"``."""

    __slots__ = ()

    def __new__(cls, value: str) -> TaskId:
        if type(value) is cls:
            return value  # type: ignore[return-value]
        chain, sep, index = str(value).rpartition("#")
        if not (sep and chain and index.isascii() and index.isdigit()
                and str(int(index)) == index):
            raise ValueError(f"{value!r} is not a task id: a task id is "
                             "'<chain_id>#<index>', as in 'src#0'")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, chain_id: str, index: int) -> TaskId:
        """The id of task ``index`` of chain ``chain_id``: ``of("src", 0) == "src#0"``."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"task index of chain {chain_id!r}: a number >= 0, "
                             f"got {index!r}")
        return cls(f"{chain_id}#{index}")

    @property
    def chain(self) -> str:
        """The chain's id: everything before the last ``#``."""
        return self.rpartition("#")[0]

    @property
    def index(self) -> int:  # type: ignore[override]  # str.index is a method
        """The task's index within its chain."""
        return int(self.rpartition("#")[2])
