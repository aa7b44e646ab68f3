"""Parquet pairs files: written in row groups, read batch by batch, so memory stays flat.

One column per field of a pairs row, with fixed types wherever the name says what it holds, so
a file loads the same way in pyarrow, pandas (``pandas.read_parquet``) and Hugging Face datasets
(``datasets.load_dataset("parquet", data_files=...)``):

* ``score`` float64 (the exact margin score; TSV and JSONL round it to 6 decimals);
* ``src``, ``tgt``, ``*_id``, ``reason``, ``detail`` strings;
* ``*_line``, ``*_input`` int64 (1-based line numbers, 0-based input indices);
* any other field: the type pyarrow infers from the first row group.

:class:`ParquetRows` buffers rows column by column and writes a row group every
:data:`ROW_GROUP_ROWS` rows into a file object; callers open that file with
:func:`bitextmine.fs.atomic_writer` (``"wb"``), so a parquet file appears complete or not at all.
pyarrow is imported only when a parquet file is read or written.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bitextmine.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

#: Rows per row group (and per read batch): bounds the memory of writing and reading.
ROW_GROUP_ROWS = 65536
MAGIC = b"PAR1"
SUFFIX = ".parquet"


def column_type(name: str) -> pa.DataType | None:
    """The fixed arrow type of a pairs column (None: inferred from the values)."""
    import pyarrow as pa

    if name == "score":
        return pa.float64()
    if name in ("src", "tgt", "reason", "detail") or name.endswith("_id"):
        return pa.string()
    if name.endswith(("_line", "_input")):
        return pa.int64()
    return None


def is_parquet(path: str | Path) -> bool:
    """Whether the file at ``path`` starts with the parquet magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


class ParquetRows:
    """Rows (dicts) or column batches into one parquet file object, a row group at a time.

    ``names`` fixes the columns up front (their types from :func:`column_type`); ``schema`` fixes
    names and types (a parquet input's own, for filtering). Otherwise the first row's keys are the
    columns. A row may lack a column (null); a row with a column the file does not have is an
    InputError, as is a value that does not fit its column's type.
    """

    def __init__(self, fh: IO[bytes], *, names: Sequence[str] | None = None, schema: pa.Schema | None = None,
                 row_group_rows: int | None = None, empty: Sequence[str] = ("score", "src", "tgt")) -> None:
        self.fh = fh
        self.schema = schema
        self.names: list[str] | None = list(schema.names) if schema is not None else (list(names) if names else None)
        self.rows_per_group = max(1, row_group_rows or ROW_GROUP_ROWS)
        self._cols: dict[str, list] = {n: [] for n in self.names} if self.names else {}
        self._buffered = 0
        self._written = 0
        self._writer: Any = None
        self._empty = list(empty)  # the columns of a file without rows when nothing fixed them

    def empty_names(self, names: Sequence[str]) -> None:
        """The columns of the file if no row comes (extra empty columns of this sink are kept)."""
        self._empty = [*names, *(n for n in self._empty if n not in names and n not in ("score", "src", "tgt"))]

    def add(self, row: Mapping[str, Any]) -> None:
        if self.names is None:
            self.names = list(row)
            self._cols = {n: [] for n in self.names}
        extra = [k for k in row if k not in self._cols]
        if extra:
            raise InputError(f"row {self._written + self._buffered + 1}: field(s) {', '.join(extra)} not in the first row "
                             f"({', '.join(self.names)}); a parquet file has one set of columns")
        for n, col in self._cols.items():
            col.append(row.get(n))
        self._buffered += 1
        if self._buffered >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def add_columns(self, cols: Mapping[str, Sequence[Any]]) -> None:
        """A batch of rows as columns of equal length."""
        if self.names is None:
            self.names = list(cols)
            self._cols = {n: [] for n in self.names}
        n = len(next(iter(cols.values()))) if cols else 0
        for name, col in self._cols.items():
            col.extend(cols[name] if name in cols else [None] * n)
        self._buffered += n
        while self._buffered >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def close(self) -> int:
        """Write what is buffered and the footer; returns the rows written."""
        if self.names is None:
            self.names = list(self._empty)
            self._cols = {n: [] for n in self.names}
        if self._buffered or self._writer is None:
            self._flush(self._buffered)
        self._writer.close()
        return self._written

    def _flush(self, n: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        batch = {k: v[:n] for k, v in self._cols.items()}
        if self.schema is None:
            self.schema = pa.schema([(k, column_type(k) or _inferred(v)) for k, v in batch.items()])
        try:
            table = pa.Table.from_pydict(batch, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise InputError(f"rows {self._written + 1}-{self._written + n}: a value does not fit its parquet column "
                             f"({_first_line(e)}); every row must have the first rows' types") from None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.fh, self.schema)
        self._writer.write_table(table, row_group_size=self.rows_per_group)
        for v in self._cols.values():
            del v[:n]
        self._buffered -= n
        self._written += n


def _inferred(values: list) -> pa.DataType:
    import pyarrow as pa

    try:
        t = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
    return pa.string() if pa.types.is_null(t) else t


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def open_parquet(path: str | Path, required: Sequence[str] = ("score", "src", "tgt")) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` whose schema has the ``required`` columns with usable types
    (numeric ``score``, string ``src`` and ``tgt``); InputError naming the file otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    schema = pf.schema_arrow
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)} (a pairs file has score, src and tgt; it has "
                         f"{', '.join(schema.names)})")
    if "score" in required and not (pa.types.is_floating(t := schema.field("score").type) or pa.types.is_integer(t)):
        raise InputError(f"{path}: column score is {t}, not a number")
    for c in ("src", "tgt"):
        if c in required and not (pa.types.is_string(t := schema.field(c).type) or pa.types.is_large_string(t)):
            raise InputError(f"{path}: column {c} is {t}, not text")
    return pf


def iter_parquet_rows(pf: Any, batch_rows: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of an open parquet file as dicts, one record batch in memory at a time."""
    for batch in pf.iter_batches(batch_size=batch_rows or ROW_GROUP_ROWS):
        yield from batch.to_pylist()
