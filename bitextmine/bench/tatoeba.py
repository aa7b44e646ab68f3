"""Tatoeba retrieval accuracy (LASER's ``data/tatoeba/v1`` test set, Artetxe & Schwenk, 2019).

For each language ``xxx`` there are two line-aligned files, ``tatoeba.xxx-eng.xxx`` and
``tatoeba.xxx-eng.eng`` (up to 1,000 pairs; the English side differs between languages). The
score is the accuracy (precision at 1) of nearest-neighbour retrieval by cosine similarity, in
both directions: each xxx sentence retrieves the closest English sentence of its file (xx→eng),
and each English sentence the closest xxx sentence (eng→xx). A retrieval counts as correct only
when it returns the aligned line (index match, as LASER's xSIM and XTREME count it; a duplicate
sentence on the other side counts as an error).

Language sets (three-letter Tatoeba codes):

* ``dap36``: the 36 languages of XTREME's Tatoeba task (``lang3_dict`` in XTREME's
  ``utils_preprocess.py``), which the DAP paper (Li et al., ACL 2023) reports as "36 languages";
* ``dap14``: the 14 XNLI languages, the DAP code's ``XNLI_LANGS`` (``data/dataset.py`` of
  github.com/ChillingDream/DAP), its 14-language setting;
* ``all``: every language found in the data folder.

Retrieval itself (nearest neighbours, margins) lives in :mod:`bitextmine.retrieval`, shared with
training's dev evaluation; this module finds the files, picks languages and averages.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitextmine.corpus import open_binary
from bitextmine.errors import InputError
from bitextmine.events import Listener, task
from bitextmine.margin import Margin
from bitextmine.retrieval import nearest
from bitextmine.store import EmbeddingStore

DAP36 = (
    "afr", "ara", "ben", "bul", "cmn", "deu", "ell", "est", "eus", "fin", "fra", "heb", "hin", "hun", "ind", "ita",
    "jav", "jpn", "kat", "kaz", "kor", "mal", "mar", "nld", "pes", "por", "rus", "spa", "swh", "tam", "tel", "tgl",
    "tha", "tur", "urd", "vie",
)
DAP14 = ("ara", "bul", "cmn", "deu", "ell", "fra", "hin", "rus", "spa", "swh", "tha", "tur", "urd", "vie")
LANG_SETS: dict[str, tuple[str, ...]] = {"dap36": DAP36, "dap14": DAP14}
ALIASES = {"xtreme": "dap36", "xtreme36": "dap36", "36": "dap36", "xnli": "dap14", "xnli14": "dap14", "14": "dap14"}

_FILE_RE = re.compile(r"^tatoeba\.([a-z]{2,4})-eng\.([a-z]{2,4})$")


def find_tatoeba(data: str | Path) -> dict[str, tuple[Path, Path]]:
    """``{lang: (xx file, eng file)}`` for every language with both files in ``data``."""
    root = Path(data)
    if not root.exists():
        raise InputError(f"{data}: no such folder")
    if not root.is_dir():
        raise InputError(f"{data}: is a file; {{param}} needs the folder holding tatoeba.xxx-eng.xxx files", param="data")
    sides: dict[str, dict[str, Path]] = {}
    for p in sorted(root.iterdir()):
        m = _FILE_RE.match(p.name)
        if m and p.is_file() and m.group(2) in (m.group(1), "eng"):
            sides.setdefault(m.group(1), {})["eng" if m.group(2) == "eng" and m.group(1) != "eng" else "xx"] = p
    out = {lang: (s["xx"], s["eng"]) for lang, s in sorted(sides.items()) if "xx" in s and "eng" in s}
    if not out:
        raise InputError(f"{data}: no Tatoeba files found (expected tatoeba.xxx-eng.xxx and tatoeba.xxx-eng.eng)")
    return out


def resolve_langs(spec: str | Iterable[str] | None, available: Iterable[str]) -> list[str]:
    """Languages to evaluate: a set name (dap36, dap14, all, rest = all but dap36: the languages the default
    model was not trained on), a comma list, or both mixed ("dap14,jpn").

    Errors are about the ``langs`` parameter (``param="langs"``).
    """
    avail = set(available)
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else (spec or ["dap36"])) if s.strip()]
    if not items:
        raise InputError("{param} is empty", param="langs")
    out: list[str] = []
    for it in items:
        it = ALIASES.get(it, it)
        if it == "all":
            out.extend(sorted(avail))
        elif it == "rest":
            out.extend(sorted(avail - set(DAP36)))
        elif it in LANG_SETS:
            missing = [lang for lang in LANG_SETS[it] if lang not in avail]
            if missing:
                raise InputError(f"{{param}} {it}: no Tatoeba files for {', '.join(missing)} in the data folder", param="langs")
            out.extend(LANG_SETS[it])
        elif it in avail:
            out.append(it)
        else:
            known = ", ".join([*LANG_SETS, "all", "rest"])
            raise InputError(f"{{param}}: no Tatoeba files for {it!r} (a language code found in the data folder, or one of {known})",
                             param="langs")
    return list(dict.fromkeys(out))


def line_count(path: str | Path) -> int:
    """Lines of a text file up to its last non-blank one (trailing blank lines do not count)."""
    n = last = 0
    try:
        with open_binary(str(path)) as fh:
            for raw in fh:
                n += 1
                if raw.strip():
                    last = n
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - OS errors and each decompressor's own error types
        raise InputError(f"{path}: cannot read: {e}") from None
    return last


def check_files(found: Mapping[str, tuple[Path, Path]], langs: Iterable[str]) -> None:
    """Raise InputError unless both files of each language in ``langs`` have as many lines.

    The two sides are aligned line by line, so a line missing on one side shifts every later
    pair: this is checked before anything is embedded.
    """
    for lang in langs:
        xx, eng = found[lang]
        nx, ne = line_count(xx), line_count(eng)
        if nx != ne:
            raise InputError(f"{xx} has {nx:,} lines but {eng} has {ne:,}; the two Tatoeba files of {lang} must be "
                             "aligned line by line")


@dataclass
class LangResult:
    lang: str
    pairs: int  # aligned sentence pairs evaluated
    xx2eng: float  # accuracy, 0..1
    eng2xx: float
    xx2eng_errors: int = 0
    eng2xx_errors: int = 0
    seconds: float = 0.0
    files: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return (self.xx2eng + self.eng2xx) / 2


def aligned_embeddings(xs: EmbeddingStore, ys: EmbeddingStore, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings of the lines present on both sides, in line order (blank lines are not embedded)."""
    xl = np.asarray(list(xs.iter_column("line")), dtype=np.int64)
    yl = np.asarray(list(ys.iter_column("line")), dtype=np.int64)
    common, xi, yi = np.intersect1d(xl, yl, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise InputError(f"{what}: the two files have no non-blank line in common")
    return xs.embeddings(xi), ys.embeddings(yi)


Embedder = Callable[[Path], EmbeddingStore]


@dataclass
class TatoebaOptions:
    margin: Margin = Margin.ABSOLUTE  # cosine; ratio/distance rescore the k nearest (xSIM)
    k: int = 4


def evaluate_lang(lang: str, files: tuple[Path, Path], embed: Embedder, opts: TatoebaOptions | None = None) -> LangResult:
    opts = opts or TatoebaOptions()
    t0 = time.perf_counter()
    check_files({lang: files}, [lang])
    xs, ys = embed(files[0]), embed(files[1])
    x, y = aligned_embeddings(xs, ys, f"{files[0]} / {files[1]}")
    fwd, bwd = nearest(x, y, opts.margin, opts.k)
    ref = np.arange(len(x))
    fe, be = int((fwd != ref).sum()), int((bwd != ref).sum())
    n = len(x)
    return LangResult(lang, n, 1 - fe / n, 1 - be / n, fe, be, time.perf_counter() - t0,
                      {"xx": str(files[0]), "eng": str(files[1])})


def averages(results: Iterable[LangResult]) -> dict[str, dict]:
    """Mean accuracies over each named set fully evaluated, and over everything evaluated."""
    by = {r.lang: r for r in results}
    out: dict[str, dict] = {}

    def avg(name: str, langs: list[str]) -> None:
        rs = [by[lang] for lang in langs]
        f = sum(r.xx2eng for r in rs) / len(rs)
        b = sum(r.eng2xx for r in rs) / len(rs)
        out[name] = {"languages": len(rs), "xx2eng": f, "eng2xx": b, "mean": (f + b) / 2, "langs": langs}

    for name, langs in LANG_SETS.items():
        if all(lang in by for lang in langs):
            avg(name, list(langs))
    if by and not any(v["languages"] == len(by) for v in out.values()):
        avg("evaluated", list(by))
    return out


def run_tatoeba(
    found: Mapping[str, tuple[Path, Path]],
    langs: list[str],
    embed: Embedder,
    opts: TatoebaOptions | None = None,
    *,
    on_lang: Callable[[LangResult], None] | None = None,
    listener: Listener | None = None,
) -> list[LangResult]:
    """Evaluate every language of ``langs`` (from :func:`resolve_langs`) found in ``found``.

    ``listener`` gets one task, "tatoeba languages", advanced by one per language. The files of
    every language are checked (:func:`check_files`) before the first is embedded.
    """
    check_files(found, langs)
    out = []
    with task(listener, "tatoeba languages", len(langs), unit="languages") as advance:
        for lang in langs:
            r = evaluate_lang(lang, found[lang], embed, opts)
            out.append(r)
            if on_lang:
                on_lang(r)
            if advance:
                advance(1)
    return out
