"""The BUCC 2018 files: where they lie (folders or the distributed archives), gold in, submission out.

A split of a pair is three files, ``xx-en.<split>.xx`` and ``xx-en.<split>.en`` (lines
``id<TAB>sentence``) and, except for the official test split, ``xx-en.<split>.gold`` (lines
``xxid<TAB>enid``). They come as ``bucc2018-xx-en.<split>[-gold].tar.bz2`` archives, which are
extracted once into the cache.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bitextmine import fs
from bitextmine.corpus import check_input, open_binary
from bitextmine.errors import InputError

SPLITS = ("sample", "training", "test")
TARGET = "en"  # English is always the second language in BUCC 2018
_TEXT_RE = re.compile(r"^([a-z]{2,3})-en\.(sample|training|test)\.([a-z]{2,3}|gold)$")
_ARCHIVE_RE = re.compile(r"^bucc2018-([a-z]{2,3})-en\.(sample|training|test)(-gold)?\.tar\.bz2$")

Pair = tuple[str, str]  # (src_id, tgt_id)


@dataclass
class BuccSplit:
    """One split of one language pair: the two text files and the gold file (if any)."""

    pair: str  # "zh-en"
    split: str  # sample | training | test
    src: Path  # xx-en.<split>.xx
    tgt: Path  # xx-en.<split>.en
    gold: Path | None = None  # xx-en.<split>.gold
    archive: Path | None = None  # the .tar.bz2 it was extracted from, if any

    @property
    def lang(self) -> str:
        return self.pair.split("-")[0]


def _scan_files(folder: Path, depth: int) -> dict[tuple[str, str], dict[str, Path]]:
    """``{(pair, split): {"xx"|"en"|"gold": path}}`` for BUCC-named files up to ``depth`` folders down."""
    found: dict[tuple[str, str], dict[str, Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for p in entries:
        if p.is_file():
            m = _TEXT_RE.match(p.name)
            if m and m.group(3) in (m.group(1), TARGET, "gold"):
                role = "gold" if m.group(3) == "gold" else ("en" if m.group(3) == TARGET else "xx")
                found.setdefault((f"{m.group(1)}-en", m.group(2)), {}).setdefault(role, p)
    if depth > 0:
        for p in entries:
            if p.is_dir() and not p.name.startswith("."):
                for key, roles in _scan_files(p, depth - 1).items():
                    have = found.setdefault(key, {})
                    for role, path in roles.items():
                        have.setdefault(role, path)
    return found


def _scan_archives(folder: Path, depth: int) -> list[Path]:
    out: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        if p.is_file() and _ARCHIVE_RE.match(p.name):
            out.append(p)
        elif depth > 0 and p.is_dir() and not p.name.startswith("."):
            out.extend(_scan_archives(p, depth - 1))
    return out


def _copy_bucc_members(archive: Path, folder: Path) -> int:
    """Copy the regular, BUCC-named files of ``archive`` into ``folder`` by base name; returns their count."""
    taken = 0
    try:
        with tarfile.open(archive, "r:bz2") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile() or not _TEXT_RE.match(name):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(folder / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                taken += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{archive}: cannot read the archive ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if taken == 0:
        raise InputError(f"{archive}: holds no BUCC files (xx-en.<split>.xx / .en / .gold)")
    return taken


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Extract the BUCC files of a ``bucc2018-xx-en.<split>[-gold].tar.bz2`` into the cache; reuse them later.

    Only regular files named like BUCC files are taken (by base name, so nothing can be written
    outside the target folder). The folder is keyed by the archive's identity (path, size, mtime),
    so the extracted files keep their identity too and their embeddings stay cached. It is built
    under a temporary name and published with one rename, marked by a ``.complete`` file.
    """
    key = hashlib.sha256(json.dumps(fs.file_identity(archive), sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "bucc2018" / f"{archive.name.removesuffix('.tar.bz2')}-{key}"
    if (out / ".complete").is_file():
        return out
    tmp = fs.temp_dir(out)
    try:
        _copy_bucc_members(archive, tmp)
        (tmp / ".complete").write_text(archive.name + "\n")  # inside the unpublished folder: no temp name needed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)  # an earlier extraction that never completed
    try:
        fs.publish_dir(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / ".complete").is_file():  # not a concurrent identical extraction
            raise
    return out


def find_bucc(data: str | Path, *, pairs: Iterable[str] | None = None, cache_dir: Path | None = None) -> dict[str, dict[str, BuccSplit]]:
    """Locate BUCC splits in ``data``: ``{pair: {split: BuccSplit}}``.

    ``data`` may hold the files directly, per-pair subfolders (``zh-en/``, also one level deeper,
    as the archives unpack: ``bucc2018/zh-en/``), or the distributed archives
    ``bucc2018-xx-en.<split>[-gold].tar.bz2``, which are extracted into ``cache_dir`` (default:
    :func:`bitextmine.fs.default_cache_dir`) on first use. Files found unpacked win over archives.
    ``pairs`` restricts the search (archives of other pairs are not opened); a named pair that is
    not found is an InputError.
    """
    root = Path(data)
    if not root.exists():
        raise InputError(f"{data}: no such folder")
    if not root.is_dir():
        raise InputError(f"{data}: is a file; {{param}} needs the folder holding the BUCC files or archives", param="data")
    wanted = None if pairs is None else [_norm_pair(p) for p in pairs]
    found = _scan_files(root, depth=2)
    archives = [a for a in _scan_archives(root, depth=2)
                if wanted is None or f"{_ARCHIVE_RE.match(a.name).group(1)}-en" in wanted]
    from_archive = _add_archives(found, archives, cache_dir) if archives else {}
    out: dict[str, dict[str, BuccSplit]] = {}
    for (pair, split), roles in sorted(found.items()):
        if "xx" in roles and "en" in roles:
            out.setdefault(pair, {})[split] = BuccSplit(pair, split, roles["xx"], roles["en"], roles.get("gold"), from_archive.get((pair, split)))
    if wanted is not None:
        missing = [p for p in wanted if p not in out]
        if missing:
            have = ", ".join(sorted(out)) or "none"
            raise InputError(f"pair {', '.join(missing)} not found in {data} (pairs found: {have})")
        out = {p: out[p] for p in wanted}
    if not out:
        raise InputError(
            f"{data}: no BUCC files found (expected xx-en.<split>.xx and xx-en.<split>.en files, "
            "per-pair folders such as zh-en/, or bucc2018-xx-en.<split>[-gold].tar.bz2 archives)"
        )
    return out


def _add_archives(found: dict[tuple[str, str], dict[str, Path]], archives: list[Path], cache_dir: Path | None) -> dict[tuple[str, str], Path]:
    """Extract the archives whose split is not already unpacked and add their files to ``found``.

    Returns ``{(pair, split): archive}`` for the splits that took a file from an archive.
    """
    cache_dir = fs.default_cache_dir() if cache_dir is None else cache_dir
    from_archive: dict[tuple[str, str], Path] = {}
    for a in archives:
        m = _ARCHIVE_RE.match(a.name)
        pair, split = f"{m.group(1)}-en", m.group(2)
        have = found.get((pair, split), {})
        if {"xx", "en"} <= have.keys() and ("gold" in have or not m.group(3)):
            continue  # already unpacked next to the archive
        folder = extract_archive(a, cache_dir)
        for key, roles in _scan_files(folder, depth=0).items():
            dest = found.setdefault(key, {})
            for role, path in roles.items():
                if role not in dest:
                    dest[role] = path
                    from_archive[key] = a
    return from_archive


def _norm_pair(p: str) -> str:
    p = p.strip().lower()
    if re.fullmatch(r"[a-z]{2,3}", p):
        p = f"{p}-en"
    if not re.fullmatch(r"[a-z]{2,3}-en", p):
        raise InputError(f"{{param}}: {p!r} is not a BUCC pair such as zh-en (English is always the second language)", param="pairs")
    return p


def read_gold(path: str | Path) -> set[Pair]:
    """Gold pairs from a ``xxid<TAB>enid`` file."""
    check_input(str(path))
    gold: set[Pair] = set()
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise InputError(f"{path}:{n}: expected 'xxid<TAB>enid'")
            gold.add((parts[0].strip(), parts[1].strip()))
    if not gold:
        raise InputError(f"{path}: no gold pairs")
    return gold


def ids_present(path: str | Path, wanted: set[str]) -> set[str]:
    """The ids of ``wanted`` that begin a line of ``path`` (``id<TAB>sentence``); read without embedding."""
    found: set[str] = set()
    try:
        with open_binary(str(path)) as fh:
            for raw in fh:
                ident = raw.split(b"\t", 1)[0].decode("utf-8", errors="surrogateescape").strip()
                if ident in wanted:
                    found.add(ident)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - OS errors and each decompressor's own error types
        raise InputError(f"{path}: cannot read: {e}") from None
    return found


def write_pairs_file(path: str | Path, pairs: Iterable[Pair]) -> int:
    """Write ``xxid<TAB>enid`` lines (the BUCC submission format), atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with fs.atomic_writer(path, "w") as fh:
        for s, t in pairs:
            fh.write(f"{s}\t{t}\n")
            n += 1
    return n
