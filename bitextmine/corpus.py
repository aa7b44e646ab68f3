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
import zlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Iterator

from bitextmine.errors import InputError
from bitextmine.fs import file_identity

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
    missing_id: int = 0  # id_column lines without a tab, skipped (non-strict modes only)


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


#: Leading bytes of the compressed formats we read, by name (the one home of this sniffing).
MAGIC = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "bz2": b"BZh", "zstd": b"\x28\xb5\x2f\xfd"}


def compression(head: bytes) -> str | None:
    """The compression of a file starting with ``head`` (at least 6 bytes), or None for plain text."""
    for name, magic in MAGIC.items():
        if head.startswith(magic):
            return name
    if len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == b"\x2a\x4d\x18":
        return "zstd"  # a zstd skippable frame first (pzstd writes one before every frame)
    return None


def open_binary(path: str) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing .gz, .xz, .bz2 and .zst by file content.

    A compressed stream that ends early (a cut-off download) or fails its checksum raises
    InputError naming the file while it is read, never a silently shorter input.
    """
    if path == STDIN:
        return sys.stdin.buffer
    check_input(path)
    with open(path, "rb") as fh:
        kind = compression(fh.read(6))
    # Each opener owns its file handle, so closing the reader closes the file.
    if kind == "gzip":
        inner: BinaryIO = gzip.open(path, "rb")  # type: ignore[assignment]
    elif kind == "xz":
        inner = lzma.open(path, "rb")  # type: ignore[assignment]
    elif kind == "bz2":
        inner = bz2.open(path, "rb")  # type: ignore[assignment]
    elif kind == "zstd":
        inner = _ZstdReader(open(path, "rb"))  # type: ignore[assignment]
    else:
        return open(path, "rb")
    return io.BufferedReader(_Checked(inner, path, kind), buffer_size=1 << 16)  # type: ignore[return-value]


class _Checked(io.RawIOBase):
    """A raw stream over a decompressing reader that turns its failures into InputError naming the file."""

    def __init__(self, inner: BinaryIO, path: str, kind: str) -> None:
        self._inner, self._path, self._kind = inner, path, kind

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(b))
        except InputError:
            raise
        except EOFError:
            raise InputError(f"{self._path}: the {self._kind} stream ends early (a truncated file or a cut-off download?)") from None
        except (OSError, zlib.error, lzma.LZMAError) as e:
            raise self._error(e) from None
        except Exception as e:
            if type(e).__name__ != "ZstdError":
                raise
            raise self._error(e) from None
        b[: len(data)] = data
        return len(data)

    def _error(self, e: BaseException) -> InputError:
        return InputError(f"{self._path}: corrupt {self._kind} data ({_first_line(e)})")

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def _check_rest(fh: BinaryIO) -> None:
    """Read a compressed stream to its end, so that a checksum failure (InputError) surfaces now.

    A corrupt gzip or bz2 stream yields garbage until its checksum, at the end of the member or
    block, fails; invalid UTF-8 met on the way is then reported as the corruption it is.
    """
    if isinstance(getattr(fh, "raw", None), _Checked):
        while fh.read(1 << 20):
            pass


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


class _ZstdReader:
    """Streamed zstd decompression that notices a stream cut inside a frame.

    zstandard's stream readers return a short stream without complaint when the input ends
    mid-frame; here every frame must reach its end (the frame's checksum, when it has one, is
    verified by the decompressor). Input is fed in small pieces, so one call's output stays bounded
    (at most ~32,000 times its input, for the most compressible data possible).
    """

    PIECE = 1 << 12

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._raw, self._zstd = raw, zstandard
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False  # the current frame has received input
        self._buf = b""
        self._pos = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while self._pos >= len(self._buf) and not self._done:
            self._buf, self._pos = self._more(), 0
        data = self._buf[self._pos : self._pos + n] if n >= 0 else self._buf[self._pos :]
        self._pos += len(data)
        return data

    def _more(self) -> bytes:
        piece = self._raw.read(self.PIECE)
        if not piece:
            self._done = True
            if self._fed and not self._d.eof:
                raise EOFError("zstd frame incomplete")
            return b""
        out = []
        while piece:
            if self._d.eof:  # a frame ended: what follows starts the next one
                self._d, self._fed = self._zstd.ZstdDecompressor().decompressobj(), False
            self._fed = True
            out.append(self._d.decompress(piece))
            piece = self._d.unused_data if self._d.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()


def count_lines(paths: list[str]) -> int | None:
    """Lines in plain (uncompressed) files, for a progress total; None if unknown (stdin, compressed)."""
    total = 0
    for p in paths:
        if p == STDIN:
            return None
        with open(p, "rb") as fh:
            if compression(fh.read(6)) is not None:
                return None
            fh.seek(0)
            total += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
    return total


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
        with _closing(open_binary(path), path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                stats.lines += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if errors is Errors.STRICT:
                        _check_rest(fh)  # garbage from a corrupt stream is reported as corruption, not as bad text
                        raise InputError(
                            f"{path}:{lineno}: invalid UTF-8 at byte {e.start} "
                            "(use {param} replace or {param} skip)", param="errors"
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
                            raise InputError(f"{path}:{lineno}: expected 'id<TAB>sentence' ({{param}}), found no tab", param="id_column")
                        stats.missing_id += 1
                        continue
                if not text.strip():
                    stats.blank += 1
                    continue
                stats.kept += 1
                yield Line(k, lineno, text, ident)


class _closing:
    """Close a file at the end unless it is stdin; turn OS errors into InputError."""

    def __init__(self, fh: BinaryIO, path: str) -> None:
        self.fh, self.path = fh, path

    def __enter__(self) -> BinaryIO:
        return self.fh

    def __exit__(self, typ, exc, tb) -> bool:
        if self.path != STDIN:
            self.fh.close()
        if isinstance(exc, (OSError, EOFError)) and not isinstance(exc, InputError):
            raise InputError(f"{self.path}: cannot read ({_first_line(exc)})") from None
        return False


def input_identity(path: str) -> dict:
    """What identifies an input for resume checks: absolute path, size and mtime (only the name for stdin)."""
    if path == STDIN:
        return {"path": STDIN}
    return file_identity(path)
