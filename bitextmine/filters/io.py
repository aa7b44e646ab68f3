"""Pairs files in and out: the TSV, JSONL and parquet that ``mine`` writes, read and written as a stream.

TSV rows are ``score<TAB>src<TAB>tgt`` then, when ``mine`` was asked for them, ``src_line
tgt_line`` (and ``src_input tgt_input``) and ``src_id tgt_id``: 3, 5, 7 or 9 columns, the same on
every line. JSONL objects carry ``score``, ``src`` and ``tgt`` (and any other fields). The format is
told by the first line (``{`` opens JSONL). Kept rows are written back byte for byte; rejected ones
get their reason: a first TSV column ``reason`` (so the rest stays a valid pairs row), or
``reason`` and ``detail`` fields in JSONL, or ``reason`` and ``detail`` columns in parquet.

Parquet inputs (told by their magic bytes) are read a row group at a time. Each output is written
in ``format`` when given, else as parquet when its name ends in ``.parquet``, else in the input's
format (a parquet input then needs a ``.parquet`` name or a format). Converting a TSV names its
extra columns as ``mine`` writes them: integers in columns 4-5 are line numbers (else ids), in
columns 6-7 of a 7-column file input indices (else ids).
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from bitextmine.errors import InputError
from bitextmine.events import Listener, task
from bitextmine.filters.lid import LanguageID
from bitextmine.filters.pipeline import Decision, FilterOptions, FilterReport, filter_pairs
from bitextmine.fs import OutputLock, atomic_write_json, remove_temps
from bitextmine.output import Format, RowSink, choose_format, open_sink

STDIO = "-"
TSV_COLUMNS = (3, 5, 7, 9)
_TSV_LAYOUT = "score, src, tgt, then src_line tgt_line [src_input tgt_input] and/or src_id tgt_id"


@dataclass
class FileRow:
    """One input line: the pair and the line as read (written back unchanged when kept)."""

    score: float
    src: str
    tgt: str
    line: str  # without its line end
    lineno: int
    obj: dict | None = None  # JSONL and parquet: the row's fields
    names: tuple[str, ...] | None = None  # TSV: the column names (for conversion)
    fmt: Format = Format.TSV  # the input's format

    def as_dict(self, name: str = "") -> dict:
        """The row's fields by name (a TSV row's typed as :func:`tsv_names` says)."""
        if self.obj is not None:
            return self.obj
        out: dict = {"score": self.score}
        for k, v in zip((self.names or ())[1:], self.line.split("\t")[1:], strict=False):
            if k.endswith(("_line", "_input")):
                try:
                    v = int(v)
                except ValueError:
                    raise InputError(f"{name}:{self.lineno}: column {k} must be an integer, got {v[:30]!r}") from None
            out[k] = v
        return out


def tsv_names(cols: list[str]) -> tuple[str, ...]:
    """Names of a TSV row's columns (3, 5, 7 or 9) as ``mine`` writes them, told from the first row."""
    names = ["score", "src", "tgt"]
    rest = cols[3:]
    if len(rest) >= 4 or (rest and all(c.strip().isdigit() for c in rest[:2])):
        names += ["src_line", "tgt_line"]
        rest = rest[2:]
        if len(rest) == 4 or (rest and all(c.strip().isdigit() for c in rest[:2])):
            names += ["src_input", "tgt_input"]
            rest = rest[2:]
    if rest:
        names += ["src_id", "tgt_id"]
    return tuple(names)


def _lines(fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(fh, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{name}:{n}: invalid UTF-8 at byte {e.start}") from None
        yield n, text.rstrip("\n").removesuffix("\r")


def read_pairs(fh: IO[bytes], name: str) -> Iterator[FileRow]:
    """Rows of a pairs file; InputError naming the line for anything that is not a pairs row."""
    fmt = None
    ncols = 0
    names: tuple[str, ...] = ()
    for n, line in _lines(fh, name):
        if fmt is None:
            if line.startswith("PAR1"):
                raise InputError(f"{name}: a parquet file cannot be read from stdin; give its path")
            fmt = "jsonl" if line.lstrip().startswith("{") else "tsv"
        if fmt == "jsonl":
            yield _json_row(line, n, name)
            continue
        cols = line.split("\t")
        if not ncols:
            if len(cols) not in TSV_COLUMNS:
                raise InputError(f"{name}:{n}: {len(cols)} tab-separated column(s); a pairs file from 'mine' has 3, 5, "
                                 f"7 or 9 ({_TSV_LAYOUT})")
            ncols = len(cols)
            names = tsv_names(cols)
        elif len(cols) != ncols:
            raise InputError(f"{name}:{n}: {len(cols)} tab-separated column(s), expected {ncols} like line 1 ({_TSV_LAYOUT})")
        yield FileRow(_score(cols[0], n, name), cols[1], cols[2], line, n, names=names)


def read_parquet_pairs(pf: object, name: str) -> Iterator[FileRow]:
    """Rows of an open parquet pairs file (:func:`bitextmine.parquet_io.open_parquet`), batch by batch."""
    from bitextmine.parquet_io import iter_parquet_rows

    for n, obj in enumerate(iter_parquet_rows(pf), 1):
        score, src, tgt = obj["score"], obj["src"], obj["tgt"]
        if score is None or (isinstance(score, float) and math.isnan(score)):
            raise InputError(f"{name}: row {n}: the score is missing or NaN")
        if src is None or tgt is None:
            raise InputError(f"{name}: row {n}: src or tgt is missing (null)")
        yield FileRow(float(score), src, tgt, "", n, obj, fmt=Format.PARQUET)


def _score(text: str, n: int, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{name}:{n}: the first column must be the score, got {text[:30]!r}") from None
    if math.isnan(v):
        raise InputError(f"{name}:{n}: the score is NaN")
    return v


def _json_row(line: str, n: int, name: str) -> FileRow:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise InputError(f"{name}:{n}: not a JSON object ({e.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{name}:{n}: not a JSON object")
    missing = [k for k in ("score", "src", "tgt") if k not in obj]
    if missing:
        raise InputError(f"{name}:{n}: the object lacks {', '.join(missing)} (a pairs row has score, src and tgt)")
    if not isinstance(obj["src"], str) or not isinstance(obj["tgt"], str):
        raise InputError(f"{name}:{n}: src and tgt must be strings")
    if isinstance(obj["score"], bool) or not isinstance(obj["score"], (int, float)):
        raise InputError(f"{name}:{n}: score must be a number")
    return FileRow(float(obj["score"]), obj["src"], obj["tgt"], line, n, obj, fmt=Format.JSONL)


def reject_line(row: FileRow, d: Decision) -> str:
    """The rejects-file line of a dropped row, in its own (text) format."""
    if row.obj is not None:
        return json.dumps({**row.obj, "reason": d.reason, "detail": d.detail}, ensure_ascii=False)
    return f"{d.reason}\t{row.line}"


def write_row(sink: RowSink | None, row: FileRow, d: Decision | None, name: str) -> None:
    """A kept row (``d`` None) or a rejected one into ``sink``: as read when the formats match, else converted."""
    if sink is None:
        return
    if sink.format in (None, row.fmt) and row.fmt is not Format.PARQUET:
        sink.write_line(row.line if d is None else reject_line(row, d))
    elif d is None:
        sink.write(row.as_dict(name))
    else:
        sink.write({**row.as_dict(name), "reason": d.reason, "detail": d.detail})


def _check_paths(pairs: str, out: str, rejects: str | None, report: str | None) -> None:
    if pairs != STDIO:
        p = Path(pairs)
        if not p.exists():
            raise InputError(f"{pairs}: no such file")
        if p.is_dir():
            raise InputError(f"{pairs}: is a directory; expected a pairs file from 'mine'")
    named = [("out", out), ("rejects", rejects), ("report", report)]
    if sum(path == STDIO for _, path in named) > 1:
        raise InputError("only one of {out}, {rejects} and {report} can be '-' (stdout)", param=("out", "rejects", "report"))
    seen: dict[str, str] = {}
    for param, path in named:
        if path is None or path == STDIO:
            continue
        q = Path(path)
        if q.is_dir():
            raise InputError(f"{path}: is a directory; {{param}} needs a file name", param=param)
        if not q.parent.is_dir():
            raise InputError(f"{path}: no such folder {q.parent}; create it first", param=param)
        key = str(q.resolve())
        if pairs != STDIO and key == str(Path(pairs).resolve()):
            raise InputError(f"{path}: is the input; {{param}} would replace it: choose another file", param=param)
        if key in seen:
            raise InputError(f"{path}: given as both {{{seen[key]}}} and {{{param}}}", param=(seen[key], param))
        seen[key] = param


@contextlib.contextmanager
def _sink(path: str | None, fmt: Format | None, **kw: object) -> Iterator[RowSink | None]:
    if path is None:
        yield None
    else:
        with open_sink(path, fmt, **kw) as sink:
            yield sink


@contextlib.contextmanager
def _source(path: str) -> Iterator[IO[bytes]]:
    if path == STDIO:
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as fh:
            yield fh


def filter_file(pairs: str | Path, out: str | Path, opts: FilterOptions | None = None, *, rejects: str | Path | None = None,
                report: str | Path | None = None, format: Format | str | None = None, listener: Listener | None = None,
                lid: LanguageID | None = None) -> FilterReport:
    """Filter the pairs file ``pairs`` (TSV, JSONL or parquet; ``-``: stdin, not parquet) into ``out``
    (``-``: stdout), streaming.

    ``rejects`` gets the dropped rows with their reason, ``report`` the counts as JSON. ``format``
    (tsv, jsonl or parquet) applies to ``out`` and ``rejects``; without it a ``.parquet`` name is
    parquet and any other keeps the input's format. Every file appears complete or not at all: on
    an error (a malformed line, an unknown language...) nothing is written under the final names
    and earlier files stay as they were.
    """
    from bitextmine.parquet_io import is_parquet, open_parquet

    opts = opts or FilterOptions()
    pairs, out = str(pairs), str(out)
    rejects = None if rejects is None else str(rejects)
    report = None if report is None else str(report)
    _check_paths(pairs, out, rejects, report)
    pf = open_parquet(pairs) if pairs != STDIO and is_parquet(pairs) else None
    in_fmt = Format.PARQUET if pf is not None else None
    out_fmt = choose_format(out, format, in_fmt, "out")
    rej_fmt = choose_format(rejects, format, in_fmt, "rejects") if rejects is not None else None
    schema = rej_schema = None
    if pf is not None:
        import pyarrow as pa

        schema = rej_schema = pf.schema_arrow
        for col in ("reason", "detail"):
            if col not in schema.names:
                rej_schema = rej_schema.append(pa.field(col, pa.string()))
    rep = FilterReport()
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            for path in (out, rejects):
                if path is not None and path != STDIO:
                    stack.enter_context(OutputLock(path))
                    remove_temps(Path(path))
            rows = read_parquet_pairs(pf, pairs) if pf is not None else read_pairs(stack.enter_context(_source(pairs)), pairs)
            keep = stack.enter_context(_sink(out, out_fmt, schema=schema))
            rej = stack.enter_context(_sink(rejects, rej_fmt, rejects=True, schema=rej_schema))
            adv = stack.enter_context(task(listener, f"filtering {pairs}", None, unit="pairs"))
            n = 0
            for row, d in filter_pairs(rows, opts, report=rep, lid=lid):
                if n == 0:  # an output left empty still gets the input's columns
                    for sink in (keep, rej):
                        if sink is not None and sink.table is not None and schema is None:
                            sink.table.empty_names(list(row.as_dict(pairs)))
                write_row(keep if d.kept else rej, row, None if d.kept else d, pairs)
                n += 1
                if adv is not None and n % 10000 == 0:
                    adv(10000)
            if adv is not None and n % 10000:
                adv(n % 10000)
    except OSError as e:
        raise InputError(f"cannot filter {pairs} ({e.strerror or e}); nothing was written") from None
    if report is not None:  # written last: a report names files that exist
        doc = {"input": pairs, "out": out, "rejects": rejects, "seconds": round(time.perf_counter() - t0, 3), **rep.to_dict()}
        with OutputLock(report) if report != STDIO else contextlib.nullcontext():
            _write_report(report, doc)
    return rep


def _write_report(path: str, doc: dict) -> None:
    if path == STDIO:
        sys.stdout.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    else:
        atomic_write_json(path, doc)
