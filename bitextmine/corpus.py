"""Reading corpora: compression, encodings, ids and original line numbers.

A corpus is one or more inputs (paths, or ``-`` for stdin) holding one sentence per line, or
``id<TAB>sentence`` lines (BUCC layout) when ``id_column`` is set. Lines are streamed; nothing
holds the corpus in memory.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Iterator

from bitextmine.errors import InputError

STDIN = "-"


class Errors(str, Enum):
    """What to do with a line that is not valid UTF-8."""

    STRICT = "strict"  # stop with an error naming file and line
    REPLACE = "replace"  # keep the line, bad bytes become U+FFFD
    SKIP = "skip"  # drop the line (counted)


@dataclass(frozen=True)
class Line:
    """One sentence and where it came from."""

    input: int  # index of the input among the corpus' inputs
    line: int  # 1-based line number in that input, counting every line (blank ones too)
    text: str
    id: str | None = None


@dataclass
class ReadStats:
    """Counts of what the reader dropped or changed; reported in the encode summary."""

    lines: int = 0  # every line read, kept or not
    kept: int = 0
    blank: int = 0
    invalid_utf8_replaced: int = 0
    invalid_utf8_skipped: int = 0
    missing_id: int = 0  # --id-column lines without a tab, skipped (non-strict modes only)
    per_input: list[int] = field(default_factory=list)


def check_input(path: str) -> None:
    """Raise InputError with a one-line message unless ``path`` is a readable, non-empty file."""
    if path == STDIN:
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, expected a text file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def open_binary(path: str) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing .gz, .xz, .bz2 and .zst by file content."""
    if path == STDIN:
        return sys.stdin.buffer
    check_input(path)
    raw = open(path, "rb")
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))  # type: ignore[arg-type]
    return raw


def iter_lines(
    inputs: list[str],
    *,
    id_column: bool = False,
    errors: Errors = Errors.STRICT,
    stats: ReadStats | None = None,
) -> Iterator[Line]:
    """Yield the sentences of ``inputs`` in order, skipping blank lines.

    Line numbers always refer to the original input, whatever was skipped. With ``id_column``,
    each line is ``id<TAB>sentence``; a line without a tab is an error in strict mode and
    skipped (counted) otherwise. Raises InputError on invalid UTF-8 in strict mode.
    """
    stats = stats if stats is not None else ReadStats()
    for k, path in enumerate(inputs):
        stats.per_input.append(0)
        with _closing(open_binary(path), path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                stats.lines += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if errors is Errors.STRICT:
                        raise InputError(
                            f"{path}:{lineno}: invalid UTF-8 at byte {e.start} "
                            "(use --errors replace or --errors skip)"
                        ) from None
                    if errors is Errors.SKIP:
                        stats.invalid_utf8_skipped += 1
                        continue
                    text = raw.decode("utf-8", errors="replace")
                    stats.invalid_utf8_replaced += 1
                text = text.rstrip("\r\n")
                ident = None
                if id_column:
                    ident, tab, text = text.partition("\t")
                    if not tab:
                        if not ident.strip():
                            stats.blank += 1
                            continue
                        if errors is Errors.STRICT:
                            raise InputError(f"{path}:{lineno}: expected 'id<TAB>sentence' (--id-column), found no tab")
                        stats.missing_id += 1
                        continue
                if not text.strip():
                    stats.blank += 1
                    continue
                stats.kept += 1
                stats.per_input[k] += 1
                yield Line(k, lineno, text, ident)


class _closing:
    """Close a file at the end unless it is stdin; turn OS and decompression errors into InputError."""

    def __init__(self, fh: BinaryIO, path: str) -> None:
        self.fh, self.path = fh, path

    def __enter__(self) -> BinaryIO:
        return self.fh

    def __exit__(self, typ, exc, tb) -> bool:
        if self.path != STDIN:
            self.fh.close()
        if exc is not None and (isinstance(exc, (OSError, EOFError, lzma.LZMAError)) or type(exc).__name__ == "ZstdError") and not isinstance(exc, InputError):
            raise InputError(f"{self.path}: cannot read: {exc}") from None
        return False


def input_identity(path: str) -> dict:
    """What identifies an input for resume checks: absolute path, size and mtime (None for stdin)."""
    if path == STDIN:
        return {"path": STDIN}
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
