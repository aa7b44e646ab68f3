"""Writing mined pairs: TSV or JSONL, best first, atomically; the output checked before any work.

TSV columns: ``score src tgt`` then, on request, ``src_line tgt_line`` (plus ``src_input
tgt_input`` when a side has several inputs) and ``src_id tgt_id``. JSONL objects carry the same
fields by name. Line numbers refer to the original inputs. ``-`` writes to stdout.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from bitextmine.errors import InputError
from bitextmine.fs import atomic_writer

if TYPE_CHECKING:
    from bitextmine.margin import Candidates
    from bitextmine.store import EmbeddingStore

STDOUT = "-"


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


def check_output(out: PairsOutput, *, inputs: Sequence[str] = (), stores: Sequence[EmbeddingStore] = ()) -> None:
    """Raise InputError now for what would fail when the pairs are written.

    With ``inputs`` (before the sides are open): the path is not a folder. With ``stores`` (the
    opened sides): ids exist when asked for.
    """
    if str(out.path) != STDOUT and Path(out.path).is_dir():
        raise InputError(f"{out.path}: is a directory; {{param}} needs a file name", param="out")
    if stores and out.with_ids and not all(s.has_ids for s in stores):
        raise InputError("{param} needs both sides encoded with {id_column}", param=("with_ids", "id_column"))


def write_pairs(out: PairsOutput, pairs: Candidates, src: EmbeddingStore, tgt: EmbeddingStore) -> int:
    """Write ``pairs`` (best first) as ``out`` says; returns the number of pairs written."""
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
                yield "\t".join([f"{score:.6f}", *(_tsv(v[i]) for v in cols.values())]) + "\n"

    if str(out.path) == STDOUT:
        sys.stdout.writelines(rows())
    else:
        with atomic_writer(out.path) as fh:
            fh.writelines(rows())
    return len(pairs.score)


def _tsv(v) -> str:
    s = str(v)
    return s.replace("\t", " ").replace("\n", " ") if isinstance(v, str) else s
