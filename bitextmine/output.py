"""Writing mined pairs: TSV, JSONL or parquet, best first, atomically; the output checked before any work.

TSV columns: ``score src tgt`` then, on request, ``src_line tgt_line`` (plus ``src_input
tgt_input`` when a side has several inputs) and ``src_id tgt_id``. JSONL objects carry the same
fields by name, parquet files the same columns (:mod:`bitextmine.parquet_io`: typed, the exact
score, written in row groups). Line numbers refer to the original inputs. ``-`` writes to stdout
(not parquet). Without a format, a name ending in ``.parquet`` means parquet, any other TSV.

A TSV row is one line for every reader: tabs and everything that Python's ``csv`` module or
``str.splitlines`` takes for a line end (``\\n``, ``\\r``, ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``,
``\\x85``, U+2028, U+2029) become spaces inside a field. JSONL escapes them and keeps the text.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bitextmine.errors import InputError
from bitextmine.fs import atomic_writer, create_exclusive, temp_name

if TYPE_CHECKING:
    from bitextmine.margin import Candidates
    from bitextmine.store import EmbeddingStore

STDOUT = "-"

#: What a TSV field may not contain: the column separator and every line end of csv / str.splitlines.
TSV_BREAKS = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_TSV_TABLE = str.maketrans({c: " " for c in TSV_BREAKS})


class Format(str, Enum):
    TSV = "tsv"  # score<TAB>src<TAB>tgt[...]
    JSONL = "jsonl"  # one JSON object per pair
    PARQUET = "parquet"  # typed columns in row groups (bitextmine.parquet_io)


def choose_format(path: str | Path, fmt: Format | str | None, fallback: Format | None, param: str = "out") -> Format | None:
    """The format of an output file: ``fmt`` when given, else parquet for a ``.parquet`` name, else
    ``fallback`` (None: the caller's "as the input"). InputError for parquet on stdout, a
    ``.parquet`` name with another format given, or a parquet fallback under another name (a parquet
    file is named so or asked for)."""
    from bitextmine.parquet_io import SUFFIX

    if fmt is not None:
        try:
            fmt = Format(fmt)
        except ValueError:
            raise InputError("{param} must be one of " + ", ".join(f.value for f in Format), param="format") from None
    named = str(path).lower().endswith(SUFFIX)
    if fmt is not None and named and fmt is not Format.PARQUET:
        raise InputError(f"{path}: a .parquet name but {{format}} is {fmt.value}; give {{format}} parquet or another "
                         "name", param=(param, "format"))
    chosen = fmt or (Format.PARQUET if named else fallback)
    if fmt is None and not named and chosen is Format.PARQUET:
        raise InputError(f"{path}: the pairs are parquet; name {{param}} *.parquet or give {{format}} tsv or jsonl",
                         param=(param, "format"))
    if chosen is Format.PARQUET and str(path) == STDOUT:
        raise InputError("parquet cannot be written to stdout ('-'): give {param} a file name ending in .parquet",
                         param=param)
    return chosen


@dataclass
class PairsOutput:
    path: str | Path  # a file, or "-" for stdout
    format: Format | None = None  # None: parquet for a .parquet name, else TSV
    with_lines: bool = False  # add source and target line numbers
    with_ids: bool = False  # add source and target ids (sides read with id_column)

    def __post_init__(self) -> None:
        self.format = choose_format(self.path, self.format, Format.TSV)

    @property
    def to_stdout(self) -> bool:
        return str(self.path) == STDOUT


def check_output(out: PairsOutput, *, inputs: Sequence[str] = (), stores: Sequence[EmbeddingStore] = (),
                 id_column: bool | None = None) -> None:
    """Raise InputError now for what would fail, or destroy data, when the pairs are written.

    Always: the path is not a folder, its folder exists and a file can be created there. With
    ``inputs`` (the two sides, before they are opened): the output is none of them and not inside
    an input embedding folder; with ``id_column`` given, ids can exist when asked for (a text side
    read without ``id_column``, or a folder encoded without it, has none). With ``stores`` (the
    opened sides): ids exist when asked for.
    """
    if out.with_ids and id_column is not None:
        for p in inputs:
            if _has_ids(p, id_column) is False:
                raise InputError("{param} needs both sides encoded with {id_column}" + f" ({p} has no ids)",
                                 param=("with_ids", "id_column"))
    if stores and out.with_ids and not all(s.has_ids for s in stores):
        raise InputError("{param} needs both sides encoded with {id_column}", param=("with_ids", "id_column"))
    if out.to_stdout:
        return
    check_writable(out.path, "out", inputs=inputs)


def check_writable(path: str | Path, param: str, *, inputs: Sequence[str | Path] = ()) -> None:
    """Raise InputError unless a file can be written at ``path`` without harming ``inputs``.

    ``path`` must not be a folder, its folder must exist and take a new file (tried: a temporary
    file is created and removed), and it must be neither an input nor inside an input folder.
    Errors name ``param``.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; {{param}} needs a file name", param=param)
    parent = p.parent
    if not parent.exists():
        raise InputError(f"{p}: no such folder {parent}; create it first or choose another {{param}}", param=param)
    if not parent.is_dir():
        raise InputError(f"{p}: {parent} is not a folder", param=param)
    target = _resolved(p)
    for inp in inputs:
        if str(inp) == STDOUT:
            continue
        q = Path(inp)
        if _same_file(p, q) or target == _resolved(q):
            raise InputError(f"{p}: is also an input; {{param}} would replace it: choose another file", param=param)
        if q.is_dir() and target.is_relative_to(_resolved(q)):
            raise InputError(f"{p}: is inside the input folder {q}; {{param}} would overwrite its files: choose a file "
                             "outside it", param=param)
    probe = temp_name(p)
    try:
        create_exclusive(probe).close()
    except OSError as e:
        raise InputError(f"{p}: cannot create a file in {parent} ({e.strerror or e}); choose another {{param}}",
                         param=param) from None
    try:
        probe.unlink()
    except OSError:
        pass


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return p.absolute()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _has_ids(side: str | Path, id_column: bool) -> bool | None:
    """Whether a mining side will have ids: a text file when read with ``id_column``, an embedding
    folder when its manifest says so (None: cannot tell yet; opening the side will say)."""
    from bitextmine.errors import StoreError
    from bitextmine.store import read_manifest

    if not Path(side).is_dir():
        return id_column
    try:
        m = read_manifest(Path(side))
    except StoreError:
        return None
    return None if m is None else bool(m.get("id_column"))


def pair_names(out: PairsOutput, src: EmbeddingStore, tgt: EmbeddingStore) -> list[str]:
    """The columns of ``out``'s rows, score first."""
    names = ["score", "src", "tgt"]
    if out.with_lines:
        names += ["src_line", "tgt_line"]
        if len(src.manifest["inputs"]) > 1 or len(tgt.manifest["inputs"]) > 1:
            names += ["src_input", "tgt_input"]
    if out.with_ids:
        names += ["src_id", "tgt_id"]
    return names


def pair_chunks(pairs: Candidates, src: EmbeddingStore, tgt: EmbeddingStore, names: Sequence[str] = ("score", "src", "tgt"),
                fmt: Format = Format.PARQUET, rows: int = 65536) -> Iterator[dict[str, list]]:
    """``pairs`` as column batches of at most ``rows`` rows (texts read per batch), the values as a
    ``fmt`` file gives them back: text formats round the score to 6 decimals, TSV turns tabs and line
    ends in texts into spaces; parquet keeps both as they are."""
    for s in range(0, len(pairs.score), rows):
        scores = [float(v) for v in pairs.score[s : s + rows]]
        cols: dict[str, list] = {"score": scores if fmt is Format.PARQUET else [_round(v) for v in scores]}
        for n in names[1:]:
            side, idx = (src, pairs.src) if n.startswith("src") else (tgt, pairs.tgt)
            vals = side.column(n.partition("_")[2] or "text", idx[s : s + rows])
            cols[n] = [tsv_field(v) for v in vals] if fmt is Format.TSV and n in ("src", "tgt") else vals
        yield cols


def _round(v: float) -> float:
    return round(v, 6) if math.isfinite(v) else v


def write_pairs(out: PairsOutput, pairs: Candidates, src: EmbeddingStore, tgt: EmbeddingStore) -> int:
    """Write ``pairs`` (best first) as ``out`` says, streamed in batches; returns the number written.

    A file appears complete or not at all: an error while writing (a full disk...) is an
    InputError naming the file, the temporary file is removed and a previous file is kept.
    """
    check_output(out, stores=(src, tgt))
    names = pair_names(out, src, tgt)
    with writing(out, "pairs", names=names) as sink:
        for cols in pair_chunks(pairs, src, tgt, names, out.format):
            sink.write_columns(cols)
    return len(pairs.score)


def render(fmt: Format, row: Mapping[str, Any], rejects: bool = False) -> str:
    """One text line (with its line end) of a row: TSV ``score`` to 6 decimals then the other fields
    in order (a rejects row: ``reason`` first, no ``detail``); JSONL an object (non-finite score: null)."""
    score = float(row["score"])
    if fmt is Format.JSONL:
        return json.dumps({**row, "score": round(score, 6) if math.isfinite(score) else None}, ensure_ascii=False) + "\n"
    rest = [tsv_field(v) for k, v in row.items() if k != "score" and not (rejects and k in ("reason", "detail"))]
    return "\t".join([*([tsv_field(row["reason"])] if rejects else []), f"{score:.6f}", *rest]) + "\n"


class RowSink:
    """Rows into one open output: text lines (rendered, or passed through as read) or parquet row groups."""

    def __init__(self, fmt: Format | None, fh: IO[Any], *, rejects: bool = False, names: Sequence[str] | None = None,
                 schema: Any = None) -> None:
        self.format, self.fh, self.rejects = fmt, fh, rejects  # format None: text lines passed through as read
        self.table = None
        if fmt is Format.PARQUET:
            from bitextmine.parquet_io import ParquetRows

            empty = ("score", "src", "tgt", *(("reason", "detail") if rejects else ()))
            self.table = ParquetRows(fh, names=names, schema=schema, empty=empty)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.table is not None:
            self.table.add(row)
        else:
            self.fh.write(render(self.format, row, self.rejects))

    def write_line(self, line: str) -> None:
        """A text line as read (no line end); text formats only."""
        self.fh.write(line + "\n")

    def write_columns(self, cols: Mapping[str, Sequence[Any]]) -> None:
        if self.table is not None:
            self.table.add_columns(cols)
            return
        names = list(cols)
        for values in zip(*cols.values()):
            self.write(dict(zip(names, values)))

    def close(self) -> None:
        if self.table is not None:
            self.table.close()


@contextlib.contextmanager
def open_sink(path: str | Path, fmt: Format | None, **kw: Any) -> Iterator[RowSink]:
    """A :class:`RowSink` on ``path`` (stdout for ``-``), written atomically (:func:`~bitextmine.fs.atomic_writer`)."""
    if str(path) == STDOUT:
        yield RowSink(fmt, sys.stdout, **kw)
        return
    with atomic_writer(path, "wb" if fmt is Format.PARQUET else "w") as fh:
        sink = RowSink(fmt, fh, **kw)
        yield sink
        sink.close()


@contextlib.contextmanager
def writing(out: PairsOutput, what: str = "pairs", **kw: Any) -> Iterator[RowSink]:
    """:func:`open_sink` for ``out``; a failed write (a full disk) is a one-line InputError, and the
    previous file at the path is kept."""
    try:
        with open_sink(out.path, out.format, **kw) as sink:
            yield sink
    except OSError as e:
        kept = "the previous file is kept" if Path(out.path).exists() else "nothing was written"
        raise InputError(f"{out.path}: cannot write the {what} ({e.strerror or e}); {kept}") from None


def write_rows(out: PairsOutput, rows: Iterable[str], what: str = "pairs") -> None:
    """Write text ``rows`` to ``out`` (stdout for ``-``), atomically; a failed write (a full disk) is a
    one-line InputError, and the previous file at the path is kept."""
    with writing(out, what) as sink:
        sink.fh.writelines(rows)


def tsv_field(v: object) -> str:
    """``v`` as one TSV field: a string's tabs and line ends (:data:`TSV_BREAKS`) become spaces."""
    return v.translate(_TSV_TABLE) if isinstance(v, str) else str(v)
