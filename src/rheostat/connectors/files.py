"""Files: Parquet, CSV and JSON-lines sources, Parquet and JSON-lines sinks.

Paths are local paths or any fsspec URL (``s3://``, ``gcs://``, ``memory://`` ...). A source
path is a file, a directory (its matching files, sorted, hidden and ``_``-prefixed names
skipped) or a glob. Each file is one split; the position is the number of rows of the file
already returned, so a reopened reader resumes exactly. The files are listed once, when the
source is made, so every task of a run (at any parallelism, after any rescale) reads the
same splits; a job resumed with a source that lists more files reads the new ones whole.

The sinks are exactly-once: each sink task stages part files under ``<path>/_staging/`` and
moves them to their final names when the checkpoint that closed them completes.

>>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
>>> d = tempfile.mkdtemp()
>>> pq.write_table(pa.table({"x": [1, 2, 3]}), f"{d}/a.parquet")
>>> src = parquet(d)
>>> reader = src.open(src.splits(1)[0], batch_size=2)
>>> reader.read().num_rows, reader.position(), reader.read().num_rows, reader.read()
(2, 2, 1, None)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from rheostat.connectors.synthetic import check_int
from rheostat.runtime.io import Sink, SinkContext, SinkWriter, Source, SourceReader
from rheostat.runtime.messages import FINAL_CHECKPOINT

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


class BadInputFile(ValueError):
    """A source file that cannot be read as its format; the message names the file, the
    line or row group, and what to do."""


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
        # Listed now (failing with a clear message if there is nothing to read) and kept:
        # tasks listing the directory themselves could disagree about the splits.
        self._files = self._list()

    def files(self) -> list[str]:
        """The files this source reads, sorted (each a path or URL that fsspec can open)."""
        return list(self._files)

    def _list(self) -> list[str]:
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
        """One split per file, whatever the parallelism."""
        return self.files()

    def __repr__(self) -> str:
        return f"{self.format}({self.path!r})"

    def _bad(self, url: str, where: str, problem: str, todo: str) -> BadInputFile:
        problem = problem.rstrip().rstrip(".")
        return BadInputFile(f"{self.format} source {self.path!r}: file {url}{where}: "
                            f"{problem}; {todo}")


class _RowsReader(SourceReader):
    """Batches of at most ``batch_size`` rows; the position counts the rows returned.

    The first ``skip`` rows of ``batches`` are dropped (they were returned before a restart).
    """

    def __init__(
        self, batches: Iterator[pa.RecordBatch], position: int, skip: int, batch_size: int,
        total: int | None = None,
    ) -> None:
        check_int("batch_size", batch_size, 1)
        self._batches = batches
        self._total = total  # the file's rows, where its metadata says
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

    def remaining(self) -> int | None:
        return None if self._total is None else max(0, self._total - self._rows)

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
            schema = self._file(files[0], f).schema_arrow
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
        pf = self._file(split, path if f is None else f)  # Arrow's own reader for local files
        # Start at the row group that holds row `position`; skip the rows before it there.
        meta, first, before = pf.metadata, 0, 0
        while first < meta.num_row_groups and before + meta.row_group(first).num_rows <= position:
            before += meta.row_group(first).num_rows
            first += 1

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for group in range(first, meta.num_row_groups):
                    yield from self._row_group(split, pf, group, batch_size)
            finally:
                pf.close()
                if f is not None:
                    f.close()

        return _RowsReader(batches(), position, position - before, batch_size, meta.num_rows)

    def _file(self, url: str, source: Any) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as e:
            raise self._bad(url, "", f"not a readable Parquet file (truncated, or not Parquet "
                            f"at all): {e}", "rewrite or remove the file, or point the source "
                            "at a glob or directory without it") from e

    def _row_group(
        self, url: str, pf: pq.ParquetFile, group: int, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        batches = pf.iter_batches(batch_size, row_groups=[group], columns=self.columns)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                total = pf.metadata.num_row_groups
                raise self._bad(url, f", row group {group} (of {total}, from 0)",
                                f"cannot be read: {type(e).__name__}: {e}",
                                "the file is damaged from there on: rewrite it, or remove it "
                                "from the source's path") from e
            if batch is None:
                return
            yield batch


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
        rows = 0  # of this file, returned so far
        reader = None
        try:
            try:
                reader = self._stream(f, block_size)
                while reader is not None:
                    batch = next(reader, None)
                    if batch is None:
                        return
                    rows += batch.num_rows
                    yield batch if self.columns is None else batch.select(self.columns)
            except pa.ArrowInvalid as e:
                raise self._explain(url, e, rows, reader) from e
        finally:
            f.close()

    def _stream(self, f: BinaryIO, block_size: int) -> Any:
        """The file's batches (a pyarrow streaming reader), or None for an empty file."""
        raise NotImplementedError

    def _explain(self, url: str, error: pa.ArrowInvalid, rows: int, reader: Any) -> BadInputFile:
        """What went wrong reading ``url`` after its first ``rows`` rows, where, and what
        to do about it."""
        raise NotImplementedError

    def _types_hint(self, column: str) -> str:
        if self._schema is None:
            return (f"types are inferred from the start of each file: pass schema= (a "
                    f"pyarrow.Schema) to give column {column} the type its values have, or "
                    "fix the value")
        return f"the value does not fit the type schema= gives column {column}: fix one of them"


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

    def _explain(self, url: str, error: pa.ArrowInvalid, rows: int, reader: Any) -> BadInputFile:
        text = str(error)
        # Arrow numbers the rows of the file from 1, the header included: its line numbers.
        row = re.search(r"Row #(\d+): ", text)
        where = f", line {row[1]}" if row else f", after line {rows + 1}"
        problem = text[row.end():] if row else text
        column = re.search(r"In CSV column #(\d+)", text)
        if column is not None:
            i = int(column[1])
            names = reader.schema.names if reader is not None else []
            name = repr(names[i]) if i < len(names) else f"#{i}"
            return self._bad(url, f"{where}, column {name}", problem, self._types_hint(name))
        return self._bad(url, where, problem.removeprefix("CSV parse error: "),
                         f"fix the line (quote a value that holds the delimiter "
                         f"{self.delimiter!r}, or pass delimiter=)")


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

    def _explain(self, url: str, error: pa.ArrowInvalid, rows: int, reader: Any) -> BadInputFile:
        text = str(error).removeprefix("JSON parse error: ")
        found = re.search(r" in row (\d+)$", text)
        if found is None:
            return self._bad(url, f", after line {rows}", text, "fix the file")
        # Arrow counts the rows of its block from 0: find that line, and read it ourselves
        # to tell a line that is not JSON from a value of another type.
        number, line = _nth_nonblank_line(url, self.storage_options, rows + int(found[1]))
        where = f", line {number}" if number else f", near line {rows + int(found[1]) + 1}"
        try:
            value = json.loads(line)
        except ValueError as e:
            return self._bad(url, where, f"not valid JSON ({e}): {line[:200]!r}",
                             "fix or remove the line; each line must be one JSON object")
        if not isinstance(value, dict):
            return self._bad(url, where, f"a JSON {type(value).__name__}, not an object: "
                             f"{line[:200]!r}", "each line must be one JSON object")
        problem = text[:found.start()]
        column = re.search(r"Column\(/([^)]*)\)", problem)
        name = repr(column[1]) if column else "that column"
        return self._bad(url, where, problem, self._types_hint(name))


def _nth_nonblank_line(
    url: str, storage_options: dict[str, Any], n: int
) -> tuple[int | None, str]:
    """The line number (from 1) and text of the ``n``-th (from 0) non-blank line of a
    file; ``(None, "")`` if it has fewer."""
    with _open_input(url, storage_options) as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                if n == 0:
                    return number, raw.decode("utf-8", "replace").rstrip("\r\n")
                n -= 1
    return None, ""


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

#: The folder of ``path`` where sink tasks stage part files until their checkpoint commits.
#: Readers skip it: Spark, Hive and pyarrow.dataset ignore names starting with ``_`` or ``.``.
STAGING = "_staging"
_IN_PROGRESS = ".inprogress"
_STAGED = re.compile(r"part-(?P<task>\d+)-(?P<writer>[0-9a-f]+)-\d+\..+")

#: A file sink's transaction: (staged, final) paths, relative to the sink's directory.
Transaction = tuple[tuple[str, str], ...]

log = logging.getLogger(__name__)


class FileSink(Sink):
    """Each sink task writes its own part files into ``path``; exactly-once, in two phases.

    A task writes under ``path/_staging/<step>/``; each checkpoint closes its open files
    (``prepare``) and, once the checkpoint is complete, moves them to their final names
    ``part-<task>-c<checkpoint>-<seq>-<writer><suffix>`` (``final`` instead of
    ``c<checkpoint>`` for the end of the stream). Rows replayed after a failure replace the
    staged files the restore discards; committed files are never touched. See docs/sinks.md.
    """

    exactly_once = True
    format = "file"
    suffix = ""
    #: Leave a 0-row file with the schema when a task wrote no rows (Parquet: yes).
    schema_only_file = False

    def __init__(
        self, path: str, rows_per_file: int | None, storage_options: dict[str, Any] | None
    ) -> None:
        self.path = _check_path(path)
        if rows_per_file is not None:
            check_int("rows_per_file", rows_per_file, 1, "Or None for one file per checkpoint.")
        self.rows_per_file = rows_per_file
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"sinks.{self.format}({self.path!r})"


def _folder_name(step_id: str) -> str:
    """``step_id`` as one safe path segment (a hash is added when characters were replaced)."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", step_id)
    if safe != step_id or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha1(step_id.encode()).hexdigest()[:8]}"
    return safe


def _fsync_dir(path: str) -> None:
    """Make renames and new names in a local folder durable (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Staging:
    """The part files of one sink task: staged, named, committed and cleaned up.

    Staged names are unique per writer (a random id), so a restarted task never overwrites
    a staged file of a transaction that a restore still has to commit. The final name is
    chosen at ``prepare`` and kept in the transaction, so a repeated commit maps to it.
    """

    def __init__(self, sink: FileSink, ctx: SinkContext) -> None:
        self.fs, self.root = _fs(sink.path, sink.storage_options)
        self.local = _is_local(self.fs)
        self.task, self.parallelism = ctx.task_index, ctx.parallelism
        self.suffix = sink.suffix
        self.writer = uuid.uuid4().hex[:12]
        self.folder = posixpath.join(STAGING, _folder_name(ctx.step_id))
        self.fs.makedirs(self.root, exist_ok=True)
        self.opened = 0  # staged files this writer opened
        self.sealed: list[str] = []  # complete staged files not yet in a transaction

    def _abs(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def open(self) -> tuple[str, Any]:
        """A new staged file: its relative path and the open binary file."""
        name = f"part-{self.task:05d}-{self.writer}-{self.opened:05d}{self.suffix}{_IN_PROGRESS}"
        relative = posixpath.join(self.folder, name)
        self.opened += 1
        tries = 0
        while True:
            try:
                self.fs.makedirs(self._abs(self.folder), exist_ok=True)
                return relative, self.fs.open(self._abs(relative), "wb")
            except FileNotFoundError:  # a writer that closed removed the empty folders
                tries += 1
                if tries == 5:
                    raise

    def seal(self, relative: str, f: Any) -> None:
        """Close a complete staged file (synced to disk when local)."""
        if self.local:
            f.flush()
            os.fsync(f.fileno())
        f.close()
        self.sealed.append(relative)

    def transaction(self, checkpoint_id: int) -> Transaction:
        """The sealed files with their final names; a checkpoint's files sort in order."""
        tag = "final" if checkpoint_id == FINAL_CHECKPOINT else f"c{checkpoint_id:08d}"
        pairs = tuple(
            (staged, f"part-{self.task:05d}-{tag}-{seq:04d}-{self.writer}{self.suffix}")
            for seq, staged in enumerate(self.sealed)
        )
        self.sealed = []
        if pairs and self.local:
            _fsync_dir(self._abs(self.folder))
        return pairs

    def commit(self, transaction: Transaction) -> None:
        """Move staged files to their final names; files already moved are skipped."""
        moved = False
        if transaction:
            self.fs.invalidate_cache(self._abs(self.folder))  # listings cached by object stores
        for staged, final in transaction:
            source, target = self._abs(staged), self._abs(final)
            if self.fs.exists(source):
                self.fs.mv(source, target)  # a rename on local disks, copy + delete elsewhere
                moved = True
            elif not self.fs.exists(target):
                log.warning("file sink %s: staged file %s of a transaction to commit is gone "
                            "and %s does not exist; its rows are lost", self.root, staged, final)
        if moved and self.local:
            _fsync_dir(self.root)

    def discard_restored(self) -> None:
        """After a restore, once the restored transactions are committed: delete the staged
        files of the writers of every task ``t`` with ``t % p == index`` but this one.

        A restore restarts every writer of the step at one parallelism ``p``, and this
        task restored the state (so the transactions) of exactly those old tasks; what
        they staged and is still staged was in no restored transaction, and its rows are
        replayed. Files of the live writers of other tasks never match.
        """
        self._delete(lambda task, writer: task % self.parallelism == self.task
                     and writer != self.writer)

    def discard_own(self) -> None:
        """At the end: delete what this writer staged and never committed. Only its own
        files: writers of other tasks may run at another parallelism after a rescale."""
        self._delete(lambda task, writer: writer == self.writer)

    def _delete(self, which: Callable[[int, str], bool]) -> None:
        self.fs.invalidate_cache(self._abs(self.folder))
        try:
            paths = self.fs.ls(self._abs(self.folder), detail=False)
        except FileNotFoundError:
            return
        for path in paths:
            found = _STAGED.fullmatch(posixpath.basename(path))
            if found is not None and which(int(found["task"]), found["writer"]):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def tidy(self) -> None:
        """Remove the staging folders if empty (local disks; object stores have none)."""
        if self.local:
            for relative in (self.folder, STAGING):
                try:
                    os.rmdir(self._abs(relative))
                except OSError:
                    return


class ParquetSink(FileSink):
    format = "parquet"
    suffix = ".parquet"
    schema_only_file = True

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


class _FileWriter(SinkWriter):
    """Buffers batches to ``flush_rows`` rows into staged part files; commits in two phases.

    ``prepare`` flushes the buffer and closes the open file; ``commit`` moves a
    transaction's files to their final names; ``recover`` commits the restored
    transactions and discards every other staged file of this task. Subclasses write the
    format: ``_begin`` a file, ``_append`` a table, ``_end`` it.
    """

    def __init__(self, sink: FileSink, ctx: SinkContext, flush_rows: int) -> None:
        self._sink = sink
        self._ctx = ctx
        self._staging = _Staging(sink, ctx)
        self._flush_rows = flush_rows
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = self._buffered_bytes = 0
        self._schema: pa.Schema | None = None
        self._file: Any = None
        self._file_name = ""
        self._file_rows = 0
        self._unprepared = 0  # rows written since the last prepare
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
        self._unprepared += batch.num_rows
        self.rows += batch.num_rows
        if self._buffered >= self._flush_rows or self._buffered_bytes >= _FLUSH_BYTES:
            self._flush_buffer()

    def prepare(self, checkpoint_id: int) -> Transaction:
        self._flush_buffer()
        if (checkpoint_id == FINAL_CHECKPOINT and self._sink.schema_only_file
                and not self._staging.opened and self._schema is not None):
            self._flush(self._schema.empty_table())  # a task that saw no rows leaves its schema
        self._seal()
        self._unprepared = 0
        return self._staging.transaction(checkpoint_id)

    def commit(self, checkpoint_id: int, transaction: Transaction) -> None:
        self._staging.commit(transaction)

    def recover(self, transactions: list[tuple[int, Any]]) -> None:
        for checkpoint_id, transaction in transactions:
            self.commit(checkpoint_id, transaction)
        self._staging.discard_restored()

    def close(self) -> None:
        """Clean up after the last commit; rows never prepared are discarded (and logged)."""
        if self._unprepared:
            log.warning("%r in step %r: %d rows written after the last prepare were discarded",
                        self._sink, self._ctx.step_id, self._unprepared)
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
        if self._file is not None:
            try:
                self._end()
            finally:
                self._file.close()
                self._file = None
        self._staging.discard_own()
        self._staging.tidy()

    # --- files ----------------------------------------------------------------------

    def _flush_buffer(self) -> None:
        if self._buffer:
            table = pa.Table.from_batches(self._buffer, schema=self._schema)
            self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
            self._flush(table)

    def _flush(self, table: pa.Table) -> None:
        """Append ``table`` to the open file, starting new ones every ``rows_per_file`` rows."""
        limit = self._sink.rows_per_file
        while True:
            if self._file is None:
                self._file_name, self._file = self._staging.open()
                self._begin(table)
            room = table.num_rows if limit is None else limit - self._file_rows
            self._append(table.slice(0, room))
            self._file_rows += min(room, table.num_rows)
            table = table.slice(room)
            if limit is not None and self._file_rows >= limit:
                self._seal()
            if not table.num_rows:
                return

    def _seal(self) -> None:
        if self._file is not None:
            self._end()
            self._staging.seal(self._file_name, self._file)
            self._file, self._file_rows = None, 0

    def _begin(self, table: pa.Table) -> None:
        """A new file was opened as ``self._file``; ``table`` is its first data."""

    def _append(self, table: pa.Table) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        """Finish the format of ``self._file`` before it is closed."""


class ParquetWriter(_FileWriter):
    def __init__(self, sink: ParquetSink, ctx: SinkContext) -> None:
        super().__init__(sink, ctx, sink.row_group_rows)
        self._writer: pq.ParquetWriter | None = None
        self._dictionary = sink.use_dictionary

    def _begin(self, table: pa.Table) -> None:
        sink: ParquetSink = self._sink  # type: ignore[assignment]
        if self._dictionary is None:
            self._dictionary = _low_cardinality(table)
        self._writer = pq.ParquetWriter(
            self._file, table.schema, compression=sink.compression,
            use_dictionary=self._dictionary,
        )

    def _append(self, table: pa.Table) -> None:
        assert self._writer is not None
        if table.num_rows:
            self._writer.write_table(table, row_group_size=table.num_rows)

    def _end(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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


class JsonlWriter(_FileWriter):
    def __init__(self, sink: JsonlSink, ctx: SinkContext) -> None:
        super().__init__(sink, ctx, 65_536)

    def _append(self, table: pa.Table) -> None:
        if table.num_rows:
            self._file.write(to_json_lines(table))
