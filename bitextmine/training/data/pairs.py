"""Training pair files: finding them, reading ``xx<TAB>en`` lines, and the paper's filters.

Input files are ``xx<TAB>en`` lines (``../shared/data/l10n/<xx>-en.tsv``, or what
``train/prepare_opus.py`` writes), one language per file, optionally compressed; the language is
the ``xx`` of the file name. :func:`filter_reason` is the DAP data script's filter, one reason per
dropped pair; :data:`FILTER_REASONS` lists them in report order (``duplicate`` is decided by
preparation, which sees every pair of a language).
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from bitextmine.corpus import open_binary
from bitextmine.errors import InputError

FILTER_REASONS = ("url_or_at", "too_short", "length_ratio", "too_long", "identical", "overlap", "duplicate")
_LANG_FILE = re.compile(r"^(?P<lang>[A-Za-z]{2,3}(?:[_-][A-Za-z]{4})?)-en(?:[._-].*)?\.tsv(?:\.(?:gz|xz|bz2|zst))?$")


def find_train_files(patterns: list[str], languages: list[str] | None = None) -> dict[str, list[Path]]:
    """Expand globs into {language: files}; the language is the ``xx`` of ``xx-en*.tsv``."""
    out: dict[str, list[Path]] = {}
    for pat in patterns:
        paths = sorted(glob.glob(os.path.expanduser(pat))) if any(c in pat for c in "*?[") else [os.path.expanduser(pat)]
        if not paths:
            raise InputError(f"data.train: {pat} matches no file")
        for p in map(Path, paths):
            if not p.is_file():
                raise InputError(f"data.train: {p}: no such file")
            m = _LANG_FILE.match(p.name)
            if not m:
                raise InputError(f"data.train: {p.name}: expected a name like xx-en.tsv (xx = language code)")
            out.setdefault(m.group("lang"), []).append(p)
    if languages:
        missing = [lang for lang in languages if lang not in out]
        if missing:
            raise InputError(f"data.languages: no training file for {', '.join(missing)}")
        out = {lang: out[lang] for lang in languages}
    return dict(sorted(out.items()))


def read_tsv(path: Path, counts: dict[str, int]) -> list[tuple[str, str]]:
    """Read ``xx<TAB>en`` pairs; lines without exactly one tab or not UTF-8 are counted and skipped."""
    pairs = []
    with open_binary(str(path)) as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                counts["bad_encoding"] = counts.get("bad_encoding", 0) + 1
                continue
            if not line.strip():
                counts["blank"] = counts.get("blank", 0) + 1
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                counts["malformed"] = counts.get("malformed", 0) + 1
                continue
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def filter_reason(xx: str, en: str, xx_tokens: list[int], en_tokens: list[int]) -> str | None:
    """The DAP data script's filters (``data/gen_sent_pair.py``); None keeps the pair.

    Token counts are the model tokenizer's (the script used mBERT's): drop pairs with '@' or
    'http', with <= 3 tokens on a side, whose longer side exceeds max(2 x shorter, 32) tokens, whose
    shorter side exceeds 64 tokens, identical sides, or (both sides over 5 tokens) where at least
    half of either side's tokens also occur on the other side.
    """
    if "@" in xx or "@" in en or "http" in xx or "http" in en:
        return "url_or_at"
    l1, l2 = len(xx_tokens), len(en_tokens)
    if l1 <= 3 or l2 <= 3:
        return "too_short"
    if max(l1, l2) > max(2 * min(l1, l2), 32):
        return "length_ratio"
    if min(l1, l2) > 64:
        return "too_long"
    if xx == en:
        return "identical"
    if l1 <= 5 or l2 <= 5:
        return None
    s1, s2 = set(xx_tokens), set(en_tokens)
    if 2 * sum(t in s2 for t in xx_tokens) >= l1 or 2 * sum(t in s1 for t in en_tokens) >= l2:
        return "overlap"
    return None
