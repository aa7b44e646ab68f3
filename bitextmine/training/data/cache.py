"""The prepared-data cache: one folder per data fingerprint, shared safely between runs.

A folder holds ``arrays.npz`` (every language's flat int32 arrays and offsets), ``meta.json``
(format version, layout, filter report) and ``dev.jsonl`` (the held-out pairs as text). It is
written under a unique temporary name (:func:`bitextmine.fs.temp_dir`) and published with one
rename, so several runs may share ``data.cache_dir``: none ever deletes another's work in
progress, and when two prepare the same fingerprint at once the first folder published is kept
(same inputs, same content) and the other run drops its copy. A folder that fails to load is
treated as missing and replaced.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bitextmine import fs
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout

FORMAT_VERSION = 1
PARTS = ("src", "tgt", "rtl")


def _write(data: PreparedData, folder: Path) -> None:
    arrays = {}
    for lang, d in data.langs.items():
        for part in PARTS:
            r: Ragged = getattr(d, part)
            arrays[f"{lang}.{part}.flat"] = r.flat
            arrays[f"{lang}.{part}.offsets"] = r.offsets
    np.savez(folder / "arrays.npz", **arrays)
    meta = {"v": FORMAT_VERSION, "fingerprint": data.fingerprint, "layout": asdict(data.layout), "report": data.report,
            "languages": list(data.langs)}
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    with open(folder / "dev.jsonl", "w", encoding="utf-8") as fh:
        for lang, d in data.langs.items():
            for x, e in d.dev:
                fh.write(json.dumps([lang, x, e], ensure_ascii=False) + "\n")
    for name in ("arrays.npz", "meta.json", "dev.jsonl"):
        fs.fsync_file(folder / name)


def save_cache(data: PreparedData, folder: Path) -> None:
    """Publish ``data`` as ``folder``, unless another run published that folder first (then keep theirs)."""
    tmp = fs.temp_dir(folder)
    try:
        _write(data, tmp)
        try:
            fs.publish_dir(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            # another run with the same fingerprint published it while we prepared: keep that one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when published


def discard(folder: Path) -> None:
    """Remove a cache folder that does not load, moving it aside first so readers never see half of it."""
    aside = fs.temp_name(folder)
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return  # another run discarded it already
    shutil.rmtree(aside, ignore_errors=True)


def load_cache(folder: Path) -> PreparedData | None:
    """The prepared data in ``folder``, or None if it is missing, of another format version, or damaged."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("v") != FORMAT_VERSION:
            return None
        arrays = np.load(folder / "arrays.npz")
        dev: dict[str, list[tuple[str, str]]] = {lang: [] for lang in meta["languages"]}
        with open(folder / "dev.jsonl", encoding="utf-8") as fh:
            for line in fh:
                lang, x, e = json.loads(line)
                dev[lang].append((x, e))
        langs = {}
        for lang in meta["languages"]:
            parts = {p: Ragged(arrays[f"{lang}.{p}.flat"], arrays[f"{lang}.{p}.offsets"]) for p in PARTS}
            langs[lang] = LangData(parts["src"], parts["tgt"], parts["rtl"], dev[lang])
        lay = meta["layout"]
        layout = TokenLayout(**{**lay, "head": tuple(lay["head"]), "tail": tuple(lay["tail"]), "prefix": tuple(lay["prefix"])})
        return PreparedData(langs, layout, meta["report"], meta["fingerprint"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged (e.g. truncated) cache is rebuilt
