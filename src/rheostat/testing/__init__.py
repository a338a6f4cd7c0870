"""Testing helpers users need as much as we do: an in-memory source and fault sentinels.

>>> src = rows([{"k": "a"}, {"k": "b"}], batch_size=1)
>>> [b.num_rows for b in src.open(src.splits(1)[0]).__iter__()]
[1, 1]
"""

from rheostat.testing.source import rows

__all__ = ["rows"]
