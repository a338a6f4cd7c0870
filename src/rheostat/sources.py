"""Where rows come from: ``rs.sources.nexmark(...)``, ``rs.sources.parquet(...)`` ...

>>> from rheostat import sources
>>> sources.nexmark(10_000, "bid").schema().names[:3]
['auction', 'bidder', 'price']
"""

from rheostat.connectors.files import csv, jsonl, parquet
from rheostat.connectors.nexmark import nexmark
from rheostat.connectors.synthetic import synthetic

__all__ = ["csv", "jsonl", "nexmark", "parquet", "synthetic"]
