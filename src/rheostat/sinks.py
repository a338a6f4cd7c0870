"""Where rows go: ``rs.sinks.parquet(dir)``, ``rs.sinks.collect()``, ``rs.sinks.null()`` ...

>>> from rheostat import sinks
>>> sinks.collect().table().num_rows
0
"""

from rheostat.connectors.sinks import collect, jsonl, null, parquet, stdout

__all__ = ["collect", "jsonl", "null", "parquet", "stdout"]
