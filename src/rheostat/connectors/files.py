"""Files: Parquet, CSV and JSON-lines sources, Parquet and JSON-lines sinks.

Paths are local paths or any fsspec URL (``s3://``, ``gcs://``, ``memory://`` ...). A source
path is a file, a directory (its matching files, sorted, hidden and ``_``-prefixed names
skipped) or a glob. Each file is one split; the position is the number of rows of the file
already returned, so a reopened reader resumes exactly.

>>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
>>> d = tempfile.mkdtemp()
>>> pq.write_table(pa.table({"x": [1, 2, 3]}), f"{d}/a.parquet")
>>> src = parquet(d)
>>> reader = src.open(src.splits(1)[0], batch_size=2)
>>> reader.read().num_rows, reader.position(), reader.read().num_rows, reader.read()
(2, 2, 1, None)
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from rheostat.connectors.synthetic import check_int
from rheostat.runtime.io import Sink, SinkContext, SinkWriter, Source, SourceReader

_GLOB_CHARS = "*?["


def _fs(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url, **storage_options)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise TypeError(f"path must be a non-empty string (local path or fsspec URL), got {path!r}")
    return path


# ---------------------------------------------------------------- sources


class FileSource(Source):
    """Rows from every file of ``path`` with one of ``suffixes``; one split per file."""

    format = "file"
    suffixes: tuple[str, ...] = ()

    def __init__(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = _check_path(path)
        if columns is not None and (
            isinstance(columns, str) or not all(isinstance(c, str) for c in columns)
        ):
            raise TypeError(f"columns must be a list of column names, got {columns!r}")
        self.columns = None if columns is None else list(columns)
        self.storage_options = dict(storage_options or {})
        self.files()  # fail now, with a clear message, if there is nothing to read

    def files(self) -> list[str]:
        """The files this source reads, sorted (each a path or URL that fsspec can open)."""
        fs, root = _fs(self.path, self.storage_options)
        if any(c in root for c in _GLOB_CHARS):
            found = fs.glob(root)
        elif fs.isdir(root):
            found = [
                p for p in fs.find(root)
                if p.lower().endswith(self.suffixes)
                and not posixpath.basename(p).startswith((".", "_"))
            ]
        elif fs.exists(root):
            found = [root]
        else:
            raise FileNotFoundError(
                f"{self.format} source: {self.path!r} does not exist; pass an existing file, "
                "directory or glob (local path or fsspec URL)"
            )
        if not found:
            wanted = "|".join(f"*{suffix}" for suffix in self.suffixes)
            raise FileNotFoundError(
                f"{self.format} source: no file in {self.path!r} matches {wanted}; "
                "pass a file or a glob to read other names"
            )
        found = sorted(found)
        return found if _is_local(fs) else [fs.unstrip_protocol(p) for p in found]

    def splits(self, parallelism: int) -> list[str]:
        return self.files()

    def __repr__(self) -> str:
        return f"{self.format}({self.path!r})"


class _RowsReader(SourceReader):
    """Batches of at most ``batch_size`` rows; the position counts the rows returned.

    The first ``skip`` rows of ``batches`` are dropped (they were returned before a restart).
    """

    def __init__(
        self, batches: Iterator[pa.RecordBatch], position: int, skip: int, batch_size: int
    ) -> None:
        check_int("batch_size", batch_size, 1)
        self._batches = batches
        self._rows = position
        self._skip = skip
        self._batch_size = batch_size
        self._pending: pa.RecordBatch | None = None

    def read(self) -> pa.RecordBatch | None:
        while self._pending is None or self._pending.num_rows == 0:
            self._pending = next(self._batches, None)
            if self._pending is None:
                self.close()
                return None
            if self._skip:
                skipped = min(self._skip, self._pending.num_rows)
                self._pending = self._pending.slice(skipped)
                self._skip -= skipped
        batch = self._pending.slice(0, self._batch_size)
        self._pending = self._pending.slice(batch.num_rows)
        self._rows += batch.num_rows
        return batch

    def position(self) -> int:
        return self._rows

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()


def _check_position(position: Any) -> int:
    if position is None:
        return 0
    return check_int("position", position, 0, "Pass a position that reader.position() returned.")


def _open_input(url: str, storage_options: dict[str, Any]) -> BinaryIO:
    """An open binary file (decompressed by suffix: .gz, .bz2, .zst ...)."""
    return fsspec.open(url, "rb", compression="infer", **storage_options).open()


class ParquetSource(FileSource):
    format = "parquet"
    suffixes = (".parquet", ".parq", ".pq")

    def schema(self) -> pa.Schema | None:
        files = self.files()
        if not files:
            return None
        with fsspec.open(files[0], "rb", **self.storage_options) as f:
            schema = pq.ParquetFile(f).schema_arrow
        if self.columns is None:
            return schema
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise KeyError(f"parquet source {self.path!r} has no column(s) {missing}; "
                           f"it has {schema.names}")
        return pa.schema([schema.field(c) for c in self.columns])

    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        position = _check_position(position)
        fs, path = _fs(split, self.storage_options)
        f = None if _is_local(fs) else fs.open(path, "rb")
        pf = pq.ParquetFile(path if f is None else f)  # Arrow's own reader for local files
        # Start at the row group that holds row `position`; skip the rows before it there.
        meta, first, before = pf.metadata, 0, 0
        while first < meta.num_row_groups and before + meta.row_group(first).num_rows <= position:
            before += meta.row_group(first).num_rows
            first += 1

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                groups = list(range(first, meta.num_row_groups))
                if groups:
                    yield from pf.iter_batches(batch_size, row_groups=groups, columns=self.columns)
            finally:
                pf.close()
                if f is not None:
                    f.close()

        return _RowsReader(batches(), position, position - before, batch_size)


class _StreamingSource(FileSource):
    """CSV and JSON lines: streamed block by block; resuming re-reads and skips rows."""

    def __init__(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        schema: pa.Schema | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
        self._schema = schema
        super().__init__(path, columns, storage_options)

    def schema(self) -> pa.Schema | None:
        if self._schema is None or self.columns is None:
            return self._schema
        return pa.schema([self._schema.field(c) for c in self.columns])

    def open(self, split: Any, position: Any = None, batch_size: int = 65_536) -> SourceReader:
        position = _check_position(position)
        block = min(max(batch_size * 128, 1 << 20), 1 << 28)
        return _RowsReader(self._batches(split, block), position, position, batch_size)

    def _batches(self, url: str, block_size: int) -> Iterator[pa.RecordBatch]:
        f = _open_input(url, self.storage_options)
        try:
            reader = self._stream(f, block_size)
            if reader is None:
                return
            for batch in reader:
                yield batch if self.columns is None else batch.select(self.columns)
        finally:
            f.close()

    def _stream(self, f: BinaryIO, block_size: int) -> Iterator[pa.RecordBatch] | None:
        raise NotImplementedError


class CsvSource(_StreamingSource):
    format = "csv"
    suffixes = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")

    def __init__(self, path: str, delimiter: str = ",", **kwargs: Any) -> None:
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        self.delimiter = delimiter
        super().__init__(path, **kwargs)

    def _stream(self, f: BinaryIO, block_size: int) -> Iterator[pa.RecordBatch] | None:
        types = None if self._schema is None else dict(zip(self._schema.names, self._schema.types))
        try:
            return pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return None
            raise


class JsonlSource(_StreamingSource):
    format = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")

    def _stream(self, f: BinaryIO, block_size: int) -> Iterator[pa.RecordBatch] | None:
        parse = pajson.ParseOptions(explicit_schema=self._schema)
        try:
            return pajson.open_json(
                f, read_options=pajson.ReadOptions(block_size=block_size, use_threads=False),
                parse_options=parse,
            )
        except pa.ArrowInvalid as e:
            if "Empty JSON" in str(e):
                return None
            raise


def parquet(
    path: str,
    columns: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ParquetSource:
    """Rows of a Parquet file, a directory of ``*.parquet`` files or a glob; one split per file.

    ``columns`` reads only those columns. ``storage_options`` go to fsspec (credentials ...).
    The schema of the first file is known at build time (``source.schema()``).

    >>> bids = parquet("s3://bucket/bids/", columns=["auction", "price"])  # doctest: +SKIP
    """
    return ParquetSource(path, columns, storage_options)


def csv(
    path: str,
    delimiter: str = ",",
    columns: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
    storage_options: dict[str, Any] | None = None,
) -> CsvSource:
    """Rows of CSV files with a header line (``.gz``/``.bz2``/``.zst`` decompressed).

    Types are inferred from each file's first block unless ``schema`` gives them.

    >>> rows = csv("data/*.tsv", delimiter="\t")  # doctest: +SKIP
    """
    return CsvSource(path, delimiter, columns=columns, schema=schema,
                     storage_options=storage_options)


def jsonl(
    path: str,
    columns: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
    storage_options: dict[str, Any] | None = None,
) -> JsonlSource:
    """Rows of JSON-lines files (one object per line), types inferred unless ``schema`` is given.

    >>> events = jsonl("logs/", schema=pa.schema([("user", pa.int64())]))  # doctest: +SKIP
    """
    return JsonlSource(path, columns=columns, schema=schema, storage_options=storage_options)


# ---------------------------------------------------------------- sinks


class FileSink(Sink):
    """Each sink task writes its own part files ``part-TTTTT[-K]<suffix>`` into ``path``.

    At-least-once: a part file is complete when its writer closes; after a failure the
    replayed rows are written again into new part files. Existing files are never touched.
    """

    format = "file"
    suffix = ""

    def __init__(
        self, path: str, rows_per_file: int | None, storage_options: dict[str, Any] | None
    ) -> None:
        self.path = _check_path(path)
        if rows_per_file is not None:
            check_int("rows_per_file", rows_per_file, 1, "Or None for one file per sink task.")
        self.rows_per_file = rows_per_file
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"sinks.{self.format}({self.path!r})"


class _PartFiles:
    """Names and opens the part files of one sink task."""

    def __init__(self, sink: FileSink, ctx: SinkContext) -> None:
        self.fs, self.root = _fs(sink.path, sink.storage_options)
        self.fs.makedirs(self.root, exist_ok=True)
        self.task = ctx.task_index
        self.suffix = sink.suffix
        self.count = 0
        self.paths: list[str] = []

    def open(self) -> Any:
        while True:
            tail = f"-{self.count}" if self.count else ""
            path = posixpath.join(self.root, f"part-{self.task:05d}{tail}{self.suffix}")
            self.count += 1
            if not self.fs.exists(path):
                self.paths.append(path)
                return self.fs.open(path, "wb")


class ParquetSink(FileSink):
    format = "parquet"
    suffix = ".parquet"

    def __init__(
        self,
        path: str,
        rows_per_file: int | None = None,
        row_group_rows: int = 131_072,
        compression: str = "snappy",
        use_dictionary: bool | Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, rows_per_file, storage_options)
        check_int("row_group_rows", row_group_rows, 1)
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.use_dictionary = use_dictionary

    def open(self, ctx: SinkContext) -> SinkWriter:
        return ParquetWriter(self, ctx)


#: Dictionary-encode a column only if its distinct values are at most this share of its rows.
_DICTIONARY_SHARE = 0.1


def _low_cardinality(table: pa.Table) -> list[str]:
    """Columns worth dictionary encoding, judged on one sample row group."""
    import pyarrow.compute as pc

    names = []
    for name, column in zip(table.column_names, table.columns):
        t = column.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_integer(t) or pa.types.is_dictionary(t)):
            continue
        if pc.count_distinct(column).as_py() <= _DICTIONARY_SHARE * max(len(column), 1):
            names.append(name)
    return names


_FLUSH_BYTES = 64 << 20


class _BufferedWriter(SinkWriter):
    """Buffers batches to ``flush_rows`` rows, then hands them to ``_flush``."""

    def __init__(self, sink: FileSink, ctx: SinkContext, flush_rows: int) -> None:
        self._sink = sink
        self._ctx = ctx
        self._parts = _PartFiles(sink, ctx)
        self._flush_rows = flush_rows
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = self._buffered_bytes = 0
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._schema = batch.schema
        elif not batch.schema.equals(self._schema):
            try:
                batch = batch.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise TypeError(
                    f"{self._sink!r} in step {self._ctx.step_id!r}: a batch with schema "
                    f"{batch.schema} does not match the first batch's {self._schema}; "
                    "make the step emit one schema"
                ) from e
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        self._buffered_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._buffered >= self._flush_rows or self._buffered_bytes >= _FLUSH_BYTES:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        if self._buffer:
            table = pa.Table.from_batches(self._buffer, schema=self._schema)
            self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
            self._flush(table)

    def _flush(self, table: pa.Table) -> None:
        raise NotImplementedError


class ParquetWriter(_BufferedWriter):
    def __init__(self, sink: ParquetSink, ctx: SinkContext) -> None:
        super().__init__(sink, ctx, sink.row_group_rows)
        self._file: Any = None
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._dictionary = sink.use_dictionary

    def _flush(self, table: pa.Table) -> None:
        sink: ParquetSink = self._sink  # type: ignore[assignment]
        if self._writer is None:
            if self._dictionary is None:
                self._dictionary = _low_cardinality(table)
            self._file = self._parts.open()
            self._writer = pq.ParquetWriter(
                self._file, table.schema, compression=sink.compression,
                use_dictionary=self._dictionary,
            )
        if table.num_rows:
            self._writer.write_table(table, row_group_size=table.num_rows)
        self._file_rows += table.num_rows
        if sink.rows_per_file is not None and self._file_rows >= sink.rows_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._writer, self._file, self._file_rows = None, None, 0

    def close(self) -> None:
        self._flush_buffer()
        if not self._parts.paths and self._schema is not None:
            self._flush(self._schema.empty_table())  # a task that saw no rows leaves its schema
        self._close_file()


class JsonlSink(FileSink):
    format = "jsonl"
    suffix = ".jsonl"

    def __init__(
        self,
        path: str,
        rows_per_file: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(path, rows_per_file, storage_options)

    def open(self, ctx: SinkContext) -> SinkWriter:
        return JsonlWriter(self, ctx)


def _jsonable(table: pa.Table) -> pa.Table:
    """Temporal and decimal columns as strings, so every encoder writes them the same way."""
    columns = []
    for column in table.columns:
        t = column.type
        if pa.types.is_temporal(t) or pa.types.is_decimal(t):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


_SIMPLE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
           pa.types.is_large_string, pa.types.is_null)


def to_json_lines(table: pa.Table) -> bytes:
    """Rows as JSON lines (UTF-8), with polars' fast encoder when the types allow it."""
    table = _jsonable(table)
    if all(any(is_(t) for is_ in _SIMPLE) for t in table.schema.types):
        try:
            import polars as pl

            return pl.from_arrow(table).write_ndjson().encode()  # type: ignore[union-attr]
        except ImportError:
            pass
    lines = (json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":"))
             for row in table.to_pylist())
    return "".join(f"{line}\n" for line in lines).encode()


class JsonlWriter(_BufferedWriter):
    def __init__(self, sink: JsonlSink, ctx: SinkContext) -> None:
        super().__init__(sink, ctx, 65_536)
        self._file: Any = None
        self._file_rows = 0

    def _flush(self, table: pa.Table) -> None:
        if self._file is None:
            self._file = self._parts.open()
        self._file.write(to_json_lines(table))
        self._file_rows += table.num_rows
        limit = self._sink.rows_per_file
        if limit is not None and self._file_rows >= limit:
            self._file.close()
            self._file, self._file_rows = None, 0

    def close(self) -> None:
        self._flush_buffer()
        if self._file is not None:
            self._file.close()
            self._file = None
