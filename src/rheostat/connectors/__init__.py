"""Sources and sinks. Users reach them through ``rheostat.sources`` and ``rheostat.sinks``.

- ``nexmark``: the Nexmark auction benchmark's persons, auctions and bids (vectorised).
- ``synthetic``: Zipf-keyed rows for benchmarks and tests.
- ``files``: Parquet, CSV and JSON-lines sources; Parquet and JSON-lines sinks.
- ``sinks``: the sink constructors, and the stdout, discarding and collecting sinks.
"""

from rheostat.connectors.files import (
    CsvSource,
    FileSink,
    FileSource,
    JsonlSink,
    JsonlSource,
    ParquetSink,
    ParquetSource,
)
from rheostat.connectors.nexmark import Nexmark
from rheostat.connectors.sinks import CollectSink, NullSink, StdoutSink
from rheostat.connectors.synthetic import ChunkedSource, Synthetic

__all__ = [
    "ChunkedSource",
    "CollectSink",
    "CsvSource",
    "FileSink",
    "FileSource",
    "JsonlSink",
    "JsonlSource",
    "Nexmark",
    "NullSink",
    "ParquetSink",
    "ParquetSource",
    "StdoutSink",
    "Synthetic",
]
