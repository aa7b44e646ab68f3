"""Writing mined pairs: TSV or JSONL, best first, atomically; the output checked before any work.

TSV columns: ``score src tgt`` then, on request, ``src_line tgt_line`` (plus ``src_input
tgt_input`` when a side has several inputs) and ``src_id tgt_id``. JSONL objects carry the same
fields by name. Line numbers refer to the original inputs. ``-`` writes to stdout.

A TSV row is one line for every reader: tabs and everything that Python's ``csv`` module or
``str.splitlines`` takes for a line end (``\\n``, ``\\r``, ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``,
``\\x85``, U+2028, U+2029) become spaces inside a field. JSONL escapes them and keeps the text.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

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


@dataclass
class PairsOutput:
    path: str | Path  # a file, or "-" for stdout
    format: Format = Format.TSV
    with_lines: bool = False  # add source and target line numbers
    with_ids: bool = False  # add source and target ids (sides read with id_column)

    def __post_init__(self) -> None:
        try:
            self.format = Format(self.format)
        except ValueError:
            raise InputError("{param} must be one of " + ", ".join(f.value for f in Format), param="format") from None

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


def write_pairs(out: PairsOutput, pairs: Candidates, src: EmbeddingStore, tgt: EmbeddingStore) -> int:
    """Write ``pairs`` (best first) as ``out`` says; returns the number of pairs written.

    A file appears complete or not at all: an error while writing (a full disk...) is an
    InputError naming the file, the temporary file is removed and a previous file is kept.
    """
    check_output(out, stores=(src, tgt))
    cols = {"src": src.column("text", pairs.src), "tgt": tgt.column("text", pairs.tgt)}
    if out.with_lines:
        cols["src_line"] = src.column("line", pairs.src)
        cols["tgt_line"] = tgt.column("line", pairs.tgt)
        if len(src.manifest["inputs"]) > 1 or len(tgt.manifest["inputs"]) > 1:
            cols["src_input"] = src.column("input", pairs.src)
            cols["tgt_input"] = tgt.column("input", pairs.tgt)
    if out.with_ids:
        cols["src_id"] = src.column("id", pairs.src)
        cols["tgt_id"] = tgt.column("id", pairs.tgt)

    def rows() -> Iterator[str]:
        for i in range(len(pairs.score)):
            score = float(pairs.score[i])
            if out.format is Format.JSONL:
                yield json.dumps({"score": round(score, 6), **{k: v[i] for k, v in cols.items()}}, ensure_ascii=False) + "\n"
            else:
                yield "\t".join([f"{score:.6f}", *(tsv_field(v[i]) for v in cols.values())]) + "\n"

    write_rows(out, rows(), "pairs")
    return len(pairs.score)


def write_rows(out: PairsOutput, rows: Iterable[str], what: str = "pairs") -> None:
    """Write text ``rows`` to ``out`` (stdout for ``-``), atomically; a failed write (a full disk) is a
    one-line InputError, and the previous file at the path is kept."""
    if out.to_stdout:
        sys.stdout.writelines(rows)
        return
    try:
        with atomic_writer(out.path) as fh:
            fh.writelines(rows)
    except OSError as e:
        kept = "the previous file is kept" if Path(out.path).exists() else "nothing was written"
        raise InputError(f"{out.path}: cannot write the {what} ({e.strerror or e}); {kept}") from None


def tsv_field(v: object) -> str:
    """``v`` as one TSV field: a string's tabs and line ends (:data:`TSV_BREAKS`) become spaces."""
    return v.translate(_TSV_TABLE) if isinstance(v, str) else str(v)
