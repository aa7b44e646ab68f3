"""Pairs files in and out: the TSV and JSONL that ``mine`` writes, read and written one line at a time.

TSV rows are ``score<TAB>src<TAB>tgt`` then, when ``mine`` was asked for them, ``src_line
tgt_line`` (and ``src_input tgt_input``) and ``src_id tgt_id``: 3, 5, 7 or 9 columns, the same on
every line. JSONL objects carry ``score``, ``src`` and ``tgt`` (and any other fields). The format is
told by the first line (``{`` opens JSONL). Kept rows are written back byte for byte; rejected ones
get their reason: a first TSV column ``reason`` (so the rest stays a valid pairs row), or
``reason`` and ``detail`` fields in JSONL.
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
from bitextmine.fs import OutputLock, atomic_write_json, atomic_writer, remove_temps

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
    obj: dict | None = None  # JSONL: the parsed object


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
    for n, line in _lines(fh, name):
        if fmt is None:
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
        elif len(cols) != ncols:
            raise InputError(f"{name}:{n}: {len(cols)} tab-separated column(s), expected {ncols} like line 1 ({_TSV_LAYOUT})")
        yield FileRow(_score(cols[0], n, name), cols[1], cols[2], line, n)


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
    return FileRow(float(obj["score"]), obj["src"], obj["tgt"], line, n, obj)


def reject_line(row: FileRow, d: Decision) -> str:
    """The rejects-file line of a dropped row."""
    if row.obj is not None:
        return json.dumps({**row.obj, "reason": d.reason, "detail": d.detail}, ensure_ascii=False)
    return f"{d.reason}\t{row.line}"


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
def _sink(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
    elif path == STDIO:
        yield sys.stdout
    else:
        with atomic_writer(path) as fh:
            yield fh


@contextlib.contextmanager
def _source(path: str) -> Iterator[IO[bytes]]:
    if path == STDIO:
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as fh:
            yield fh


def filter_file(pairs: str | Path, out: str | Path, opts: FilterOptions | None = None, *, rejects: str | Path | None = None,
                report: str | Path | None = None, listener: Listener | None = None,
                lid: LanguageID | None = None) -> FilterReport:
    """Filter the pairs file ``pairs`` (``-``: stdin) into ``out`` (``-``: stdout), streaming.

    ``rejects`` gets the dropped rows with their reason, ``report`` the counts as JSON. Every file
    appears complete or not at all: on an error (a malformed line, an unknown language...) nothing
    is written under the final names and earlier files stay as they were.
    """
    opts = opts or FilterOptions()
    pairs, out = str(pairs), str(out)
    rejects = None if rejects is None else str(rejects)
    report = None if report is None else str(report)
    _check_paths(pairs, out, rejects, report)
    rep = FilterReport()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        for path in (out, rejects):
            if path is not None and path != STDIO:
                stack.enter_context(OutputLock(path))
                remove_temps(Path(path))
        src = stack.enter_context(_source(pairs))
        keep_fh = stack.enter_context(_sink(out))
        rej_fh = stack.enter_context(_sink(rejects))
        adv = stack.enter_context(task(listener, f"filtering {pairs}", None, unit="pairs"))
        n = 0
        try:
            for row, d in filter_pairs(read_pairs(src, pairs), opts, report=rep, lid=lid):
                if d.kept:
                    keep_fh.write(row.line + "\n")
                elif rej_fh is not None:
                    rej_fh.write(reject_line(row, d) + "\n")
                n += 1
                if adv is not None and n % 10000 == 0:
                    adv(10000)
        except OSError as e:
            raise InputError(f"cannot write the filtered pairs ({e.strerror or e}); nothing was written") from None
        if adv is not None and n % 10000:
            adv(n % 10000)
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
