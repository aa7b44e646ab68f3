#!/usr/bin/env python3
"""Build human-translated ``<xx>-en.tsv`` pairs from Debian's gettext catalogs, for every language.

The method behind ``../shared/data/l10n`` (36 languages), for all languages the archive has:

1. **Packages.** By default every package whose files include a gettext catalog (``*.mo``), found in
   the archive's ``Contents-all.gz`` / ``Contents-amd64.gz`` indices (fetched once with apt's own
   downloader into ``--cache``), plus calibre (its catalogs sit in a zip). ``--packages`` (or
   ``--packages-file``) names them instead. Each is fetched with ``apt-get download`` into
   ``--cache/debs``; a package already there is not fetched again, so an interrupted run resumes.
2. **Catalogs.** Each ``.deb`` is read in pure Python (``ar`` + ``tar``: xz, gz, bz2, zstd, none);
   every ``.mo`` member (and ``.mo`` inside a ``locale*.zip``) is parsed by :func:`parse_mo`:
   msgid (English) -> msgstr, the charset from the catalog header, contexts dropped, plural entries
   give singular -> form 0 (and plural -> form 1 where the language has exactly two forms).
   The language comes from the path (the folder above ``LC_MESSAGES``, else a locale-shaped
   file or folder name), normalised by :func:`normalise_lang` (rule below).
   The package's ``/usr/share/doc/<pkg>/copyright`` is summarised into a license line.
3. **Cleaning** (:func:`clean_reason`, each drop counted under the first rule that fires, in this
   order): empty side, English not 6-60 words, bad encoding, newline, control character, placeholders (``%``, ``{..}``, ``$1``, ``$(ARG1)``, ``@VAR@``),
   markup, URLs/e-mail, code-like text, untranslated (ASCII translation in a non-Latin-script
   language, equal sides, >= 70 % word overlap), English side not English, length ratio.
   Menu accelerators (``_File``, ``&Open``, ``(_O)``) are removed first.
4. **Corpus.** Packages are merged in name order; per language the first occurrence of an English
   sentence wins (case and spacing folded); a seeded shuffle (``random.Random(f"{seed}:{lang}")``)
   and a cap of ``--cap`` pairs; languages with fewer than ``--min-pairs`` pairs are listed in
   STATS.md but not written. Output: ``<out>/<xx>-en.tsv`` (``xx<TAB>en``, UTF-8, no header) and
   ``<out>/STATS.md``, each written atomically.

Language codes (``normalise_lang``): drop the codeset (``.UTF-8``) and the territory (pt_BR -> pt,
es_MX -> es, de_CH -> de); a script is kept as ``_Script`` where it differs from the language's usual
one: zh_TW / zh_HK / zh_MO / zh_Hant -> ``zh_Hant`` (zh, zh_CN, zh_SG -> ``zh``), ``@latin`` /
``_Latn`` -> ``_Latn`` (sr@latin -> sr_Latn), ``@cyrillic`` -> ``_Cyrl``, ``@devanagari`` -> ``_Deva``,
pa_PK -> pa_Arab; other modifiers are dropped (ca@valencia -> ca, sr@ijekavian -> sr); old codes are
renamed (iw -> he, in -> id, ji -> yi, no -> nb, fil -> tl). English variants, ``C``/``POSIX`` and
anything not shaped like an ISO 639 code are skipped.

  python train/prepare_gettext.py --out /data/gettext --cache /data/gettext-cache --dry-run
  python train/prepare_gettext.py --out /data/gettext --cache /data/gettext-cache
  python train/prepare_gettext.py --out x --cache c --packages libreoffice-l10n-de,vlc-l10n --langs de
"""
from __future__ import annotations

import argparse
import bz2
import collections
import gzip
import io
import json
import lzma
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bitextmine.fs import atomic_writer

DEFAULT_CAP = 25393
DEFAULT_MIN_PAIRS = 500
CACHE_VERSION = 3  # bump when parsing or cleaning changes: parsed per-package results are keyed by it
MIRROR = "http://deb.debian.org/debian"
# packages whose catalogs the Contents indices do not show (inside a zip)
EXTRA_PACKAGES = ("calibre",)

# ----------------------------------------------------------------------------------------------
# language codes

# ISO 639-1: a two-letter code must be one of these (after the aliases below)
ISO639_1 = frozenset(["aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bh", "bi", "bm", "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da", "de", "dv", "dz", "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr", "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz", "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka", "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln", "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb", "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi", "pl", "ps", "pt", "qu", "rm", "rn", "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "sh", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk", "ur", "uz", "ve", "vi", "vo", "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu"])
# old, wrong or three-letter spellings of languages that have a code here
_LANG_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "no": "nb", "fil": "tl", "jw": "jv", "mo": "ro",
                 "ua": "uk", "dk": "da", "kz": "kk", "jp": "ja", "cz": "cs", "gr": "el", "nld": "nl",
                 "hye": "hy", "ibo": "ig", "cmn": "zh", "chs": "zh", "cht": "zh_Hant", "gug": "gn"}
_ODD_3 = frozenset({"mul", "und", "zxx", "mis", "art", "the"})  # not languages of a translation
_SCRIPT_MODS = {"latin": "Latn", "latn": "Latn", "cyrillic": "Cyrl", "cyrl": "Cyrl", "devanagari": "Deva",
                "deva": "Deva", "arabic": "Arab", "arab": "Arab", "hant": "Hant", "hans": "Hans"}
# script implied by a language code's default writing; a kept _Script suffix must differ from it
_DEFAULT_SCRIPT = {"zh": "Hans", "sr": "Cyrl", "uz": "Latn", "pa": "Guru", "be": "Cyrl", "ks": "Arab",
                   "sd": "Arab", "az": "Latn", "mn": "Cyrl", "bs": "Latn", "tt": "Cyrl", "ku": "Latn"}
_TERRITORY_SCRIPT = {("zh", "TW"): "Hant", ("zh", "HK"): "Hant", ("zh", "MO"): "Hant", ("pa", "PK"): "Arab"}
_LOCALE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[_-]([A-Za-z]{4}))?(?:[_-]([A-Za-z]{2}|\d{3}))?(?:\.[\w-]+)?(?:@(\w+))?$")

# languages not written in the Latin script: an all-ASCII translation there is untranslated
NON_LATIN = frozenset({
    "am", "ar", "as", "ba", "be", "bg", "bn", "bo", "ckb", "cv", "dv", "dz", "el", "fa", "gu", "he", "hi", "hy",
    "iu", "ja", "ka", "kk", "km", "kn", "ko", "ky", "lo", "mai", "mk", "ml", "mn", "mr", "my", "ne", "or", "os",
    "pa", "ps", "ru", "sa", "sat", "sd", "si", "sr", "ta", "te", "tg", "th", "ti", "tt", "ug", "uk", "ur", "yi",
    "zh", "zh_Hant", "sr_Cyrl", "uz_Cyrl", "pa_Arab", "ks"})
_CJK = {"zh", "zh_Hant", "ja", "ko", "yue"}


def normalise_lang(locale: str) -> str | None:
    """A gettext locale name (``pt_BR``, ``sr@latin``, ``zh_TW.UTF-8``) -> corpus code, or None (skip)."""
    m = _LOCALE_RE.match(locale.strip())
    if not m:
        return None
    lang, script, territory, modifier = m.group(1).lower(), m.group(2), m.group(3), (m.group(4) or "").lower()
    lang = _LANG_ALIASES.get(lang, lang)
    if lang == "zh_Hant":
        return lang
    if lang == "en" or (len(lang) == 2 and lang not in ISO639_1) or lang in _ODD_3:
        return None
    if script:
        script = script.title()
    elif modifier in _SCRIPT_MODS:
        script = _SCRIPT_MODS[modifier]
    elif modifier == "ijekavianlatin":
        script = "Latn"
    elif territory:
        script = _TERRITORY_SCRIPT.get((lang, territory.upper()))
    if lang == "zh" and script in (None, "Hans"):
        return "zh"
    if script and script != _DEFAULT_SCRIPT.get(lang, "Latn"):
        return f"{lang}_{script}"
    return lang


_LC_DIR = re.compile(r"^LC_[A-Z]+$")
_MO_NAME_LANG = re.compile(r"(?:^|[-_.])([a-z]{2,3}(?:_[A-Z]{2}|_[A-Z][a-z]{3})?(?:@[a-z]+)?)\.mo$")
_SKIP_PATH = re.compile(r"(?:^|/)(?:testdata|test_cases|tests?|examples?)/|^\.?/?usr/share/doc/")


def lang_of_path(path: str) -> str | None:
    """The raw locale name of a catalog path (not normalised), or None when it cannot be told."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if len(parts) >= 3 and _LC_DIR.match(parts[-2]):
        return parts[-3]
    # elsewhere a locale-shaped file name (wordpress: admin-de_DE.mo) or, for a path of two parts
    # (calibre's zip: de/messages.mo), folder; only codes Python's locale tables or ISO 639-1 know
    name = parts[-1] if parts else ""
    m = _MO_NAME_LANG.search(name)
    cand = m.group(1) if m else parts[0] if len(parts) == 2 else None
    if cand and _LOCALE_RE.match(cand) and re.split(r"[_@.-]", cand)[0].lower() in _known_codes():
        return cand
    return None


def _known_codes() -> frozenset[str]:
    global _KNOWN
    if _KNOWN is None:
        import locale

        _KNOWN = ISO639_1 | {k.split("_")[0].split(".")[0].split("@")[0] for k in locale.locale_alias
                             if re.fullmatch(r"[a-z]{3}", k.split("_")[0].split(".")[0].split("@")[0])}
        _KNOWN -= _ODD_3 | {"iso", "eng"}
    return _KNOWN


_KNOWN: frozenset[str] | None = None


# ----------------------------------------------------------------------------------------------
# .mo catalogs


class MoError(ValueError):
    pass


_CHARSET = re.compile(r"charset\s*=\s*([\w.:-]+)", re.IGNORECASE)
_NPLURALS = re.compile(r"nplurals\s*=\s*(\d+)", re.IGNORECASE)


def parse_mo(data: bytes) -> dict[str, Any]:
    """Parse a GNU .mo file without gettext's lookup layer.

    Returns ``{"header": str, "charset": str, "nplurals": int|None, "entries": [(msgid, plural|None,
    [msgstr, ...]), ...], "bad_encoding": n}`` with contexts dropped; entries whose bytes do not
    decode in the header's charset are counted in ``bad_encoding`` and left out. Raises
    :class:`MoError` for a file that is not a .mo catalog.
    """
    if len(data) < 28:
        raise MoError("too short for a .mo header")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        e = "<"
    elif magic == 0xDE120495:
        e = ">"
    else:
        raise MoError("bad magic number")
    _rev, n, o_ids, o_strs = struct.unpack(e + "4I", data[4:20])
    if o_ids + 8 * n > len(data) or o_strs + 8 * n > len(data):
        raise MoError("truncated string tables")
    ids = struct.unpack_from(f"{e}{2 * n}I", data, o_ids)
    strs = struct.unpack_from(f"{e}{2 * n}I", data, o_strs)
    raw: list[tuple[bytes, bytes]] = []
    size = len(data)
    for i in range(0, 2 * n, 2):
        ln1, off1, ln2, off2 = ids[i], ids[i + 1], strs[i], strs[i + 1]
        if off1 + ln1 > size or off2 + ln2 > size:
            raise MoError("string outside the file")
        raw.append((data[off1:off1 + ln1], data[off2:off2 + ln2]))
    header = ""
    for k, v in raw:
        if k == b"":
            header = v.decode("utf-8", "replace")
    m = _CHARSET.search(header)
    charset = m.group(1) if m else "utf-8"
    if charset.upper() in ("CHARSET", "ASCII", "US-ASCII", "ANSI_X3.4-1968"):
        charset = "utf-8"  # an unfilled template header: UTF-8 is what such catalogs carry in practice
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    m = _NPLURALS.search(header)
    nplurals = int(m.group(1)) if m else None
    entries: list[tuple[str, str | None, list[str]]] = []
    bad = 0
    for k, v in raw:
        if k == b"":
            continue
        try:
            key = k.decode(charset)
            val = v.decode(charset)
        except UnicodeDecodeError:
            bad += 1
            continue
        if "\x04" in key:  # msgctxt EOT msgid
            key = key.split("\x04", 1)[1]
        msgid, _, plural = key.partition("\x00")
        entries.append((msgid, plural if _ else None, val.split("\x00")))
    return {"header": header, "charset": charset, "nplurals": nplurals, "entries": entries, "bad_encoding": bad}


def catalog_pairs(cat: dict[str, Any]) -> list[tuple[str, str]]:
    """(English, translation) candidates of a parsed catalog: singular -> msgstr[0]; for plural
    entries also plural -> msgstr[1] when the language has exactly two forms."""
    out = []
    for msgid, plural, strs in cat["entries"]:
        out.append((msgid, strs[0]))
        if plural is not None and cat["nplurals"] == 2 and len(strs) >= 2:
            out.append((plural, strs[1]))
    return out


# ----------------------------------------------------------------------------------------------
# .deb reading (ar + tar, no dpkg needed)


def iter_ar(data: bytes) -> Iterator[tuple[str, bytes]]:
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        yield name, data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)


def _tar_bytes(name: str, blob: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(blob)
    if name.endswith(".gz"):
        return gzip.decompress(blob)
    if name.endswith(".bz2"):
        return bz2.decompress(blob)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def read_deb(path: str | Path, want) -> dict[str, Any]:
    """Members of a .deb's data archive for which ``want(name)`` is true: ``{name: bytes}``, plus
    ``{name: ("link", target)}`` for symlinks (``want`` decides for those too)."""
    data = Path(path).read_bytes()
    for name, blob in iter_ar(data):
        if name.startswith("data.tar"):
            tar_data = _tar_bytes(name, blob)
            break
    else:
        raise ValueError(f"{path}: no data.tar member")
    out: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_data), mode="r:") as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if not want(name):
                continue
            if m.issym():
                out[name] = ("link", m.linkname)
            elif m.isfile():
                fh = tf.extractfile(m)
                if fh is not None:
                    out[name] = fh.read()
    return out


def _is_catalog_member(name: str) -> bool:
    if _SKIP_PATH.search(name):
        return False
    return name.endswith(".mo") or (name.endswith(".zip") and "locale" in name.lower())


def license_summary(text: str | None, link: str | None = None) -> str:
    """One line: the DEP-5 license of ``Files: *`` (others as "also: ..."), else keywords."""
    if link is not None:
        return f"(doc dir links to {link})"
    if not text:
        return "?"
    if text.lstrip().lower().startswith("format:"):
        main, others = None, []
        for para in re.split(r"\n\s*\n", text):
            fm = re.search(r"^Files:\s*(.*)$", para, re.MULTILINE)
            lm = re.search(r"^License:\s*(.*)$", para, re.MULTILINE)
            if not fm or not lm:
                continue
            lic = lm.group(1).strip()
            if fm.group(1).strip() == "*" and main is None:
                main = lic
            elif lic and lic not in others:
                others.append(lic)
        others = [o for o in others if o != main][:5]
        s = main or "?"
        return f"{s} (also: {', '.join(others)})" if others else s
    found = []
    checks = [("LGPL", r"\bLGPL|Lesser General Public|Library General Public"),
              ("GPL", r"(?<!L)GPL\b|(?<!Lesser )(?<!Library )General Public License"),
              ("MPL", r"\bMPL\b|Mozilla Public"), ("Apache", r"Apache"), ("BSD", r"\bBSD\b"),
              ("MIT", r"\bMIT\b"), ("Artistic", r"Artistic"), ("public domain", r"public domain")]
    for label, pat in checks:
        if re.search(pat, text, re.IGNORECASE if label == "public domain" else 0):
            found.append(label)
    return "non-DEP-5; mentions " + ", ".join(found) if found else "non-DEP-5"


# ----------------------------------------------------------------------------------------------
# cleaning

_ACCEL_EN = re.compile(r"(?<![\w&])[_&](?=[^\W_])")
_ACCEL_CJK = re.compile(r"\s*[(（][_&]?[A-Za-z0-9][)）]")
_ACCEL_ANY = re.compile(r"(?<![\w&])[_&](?=[^\W_])|(?<=\w)_(?=\w)")
_PLACEHOLDER = re.compile(r"%|\{[^{}]*\}|\$\d|\$[{(]|\$[A-Za-z_]\w*|@[A-Za-z_]+@")
_MARKUP = re.compile(r"<[A-Za-z/!?][^<>]*>|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
_URL = re.compile(r"(?:https?|ftp|file)://|\bwww\.\w")
_EMAIL = re.compile(r"[\w.+-]@[\w-]+\.[A-Za-z]{2,}")
_CODE = re.compile(r"`|::|->|=>|==|!=|&&|\|\||[{}]|\w\(\)|[A-Za-z0-9]_[A-Za-z0-9]|(?:^|[\s\"'(])~?/\w[\w.-]*/|\\[ntr\\]|;\s*$|\w;\w")
_WORD = re.compile(r"\w+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc (tab included)
_MOJIBAKE = re.compile(r"Ã[\x80-\xbf©¨ª«¼½¶¤§¯±²³´]|â€|Â[\xa0-\xbf]")
_EN_STOP = frozenset(["a", "an", "the", "to", "of", "in", "on", "for", "and", "or", "is", "are", "be", "was", "not", "no", "with", "this", "that", "it", "its", "from", "by", "at", "as", "you", "your", "can", "will", "do", "does", "if", "all", "any", "has", "have", "should", "must", "may", "cannot", "could", "would", "which", "when", "what", "there", "their", "into", "more", "than", "only", "use", "using", "new", "select", "file", "files"])
# the order clean_reason applies them (bad_encoding also counts entries that do not decode at all);
# dup_english is counted when languages are merged
REASONS = ("empty", "en_words_not_6_60", "bad_encoding", "newline", "control_char", "placeholder", "markup",
           "url", "code_like", "untranslated_ascii", "untranslated_equal", "untranslated_overlap",
           "en_not_english", "length_ratio", "dup_english")


def strip_accelerators(en: str, xx: str) -> tuple[str, str]:
    """Remove menu mnemonics: ``_File``/``&Open`` in English; in the translation the CJK form
    ``(_O)`` and, when the English had one, the first ``_``/``&`` marker."""
    had = bool(_ACCEL_EN.search(en))
    en = _ACCEL_EN.sub("", en).replace("&&", "&")
    xx = _ACCEL_CJK.sub("", xx)
    if had:
        xx = _ACCEL_ANY.sub("", xx, count=1)
    return en, xx.replace("&&", "&")


def _langid_not_english(text: str) -> bool:
    try:
        import py3langid
    except ImportError:  # pragma: no cover - a dependency of bitextmine
        return False
    return py3langid.classify(text)[0] != "en"


def clean_reason(en: str, xx: str, lang: str) -> str | None:
    """Why (en, xx) is dropped, or None to keep it. Inputs are accelerator-free and stripped."""
    if not en or not xx:
        return "empty"
    words = en.split()
    if not 6 <= len(words) <= 60:
        return "en_words_not_6_60"
    both = en + xx
    if "\ufffd" in both or _MOJIBAKE.search(both):
        return "bad_encoding"
    if "\n" in both or "\r" in both or "\u2028" in both:
        return "newline"
    if _CONTROL.search(both):
        return "control_char"
    if _PLACEHOLDER.search(both):
        return "placeholder"
    if _MARKUP.search(both):
        return "markup"
    if _URL.search(both) or ("@" in both and _EMAIL.search(both)):
        return "url"
    if _CODE.search(en) or _CODE.search(xx):
        return "code_like"
    if (lang.split("_")[0] in NON_LATIN or lang in NON_LATIN) and xx.isascii():
        return "untranslated_ascii"
    if " ".join(en.casefold().split()) == " ".join(xx.casefold().split()):
        return "untranslated_equal"
    en_tok = set(_WORD.findall(en.casefold()))
    xx_tok = set(_WORD.findall(xx.casefold()))
    if len(xx_tok) >= 3 and len(xx_tok & en_tok) >= 0.7 * len(xx_tok):
        return "untranslated_overlap"
    accented = 0
    if not en.isascii():
        letters = [c for c in en if c.isalpha()]
        accented = sum(not c.isascii() for c in letters)
        if accented > 0.1 * len(letters):
            return "en_not_english"
    if not any(c.isalpha() for c in en):
        return "en_not_english"
    # language ID only where doubt is cheap to raise: accented letters, or no English function word
    if (accented or not any(w.strip(".,:;!?()\"'").lower() in _EN_STOP for w in words)) and _langid_not_english(en):
        return "en_not_english"
    r = len(xx) / len(en)
    lo = 0.08 if lang in _CJK else 0.2
    if not lo <= r <= 4.0:
        return "length_ratio"
    return None


_SPACES = re.compile(r" {2,}")


def normalise_space(s: str) -> str:
    """Runs of spaces -> one space (newlines and tabs stay visible to the cleaning rules)."""
    return _SPACES.sub(" ", s.strip())


def clean_pairs(cands: Iterable[tuple[str, str]], lang: str, drops: collections.Counter) -> list[tuple[str, str]]:
    """Clean (en, xx) candidates; returns kept (xx, en) pairs (TSV order), counting drops."""
    kept = []
    for en, xx in cands:
        en, xx = en.strip(), xx.strip()
        if not en or not xx:
            drops["empty"] += 1
            continue
        if not 6 <= len(en.split()) <= 60:  # most entries end here: decide before any other work
            drops["en_words_not_6_60"] += 1
            continue
        en, xx = strip_accelerators(en, xx)
        en, xx = normalise_space(en), normalise_space(xx)
        why = clean_reason(en, xx, lang)
        if why:
            drops[why] += 1
        else:
            kept.append((xx, en))
    return kept


# ----------------------------------------------------------------------------------------------
# one package


def _iter_catalog_blobs(members: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    for name in sorted(members):
        blob = members[name]
        if isinstance(blob, tuple):
            continue
        if name.endswith(".mo"):
            yield name, blob
        elif name.endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(blob)) as z:
                    for inner in sorted(z.namelist()):
                        if inner.endswith(".mo"):
                            yield f"{name}!{inner}", z.read(inner)
            except zipfile.BadZipFile:
                continue


def process_deb(deb: str | Path, pkg: str) -> dict[str, Any]:
    """Parse and clean every catalog of one .deb. Result (JSON-able): ``{"package", "license",
    "raw": {lang: n}, "drops": {lang: {reason: n}}, "pairs": {lang: [[xx, en], ...]}, "catalogs": n,
    "errors": [..]}``."""
    doc = f"usr/share/doc/{pkg}"

    def want(name: str) -> bool:
        return _is_catalog_member(name) or name in (doc, f"{doc}/copyright")

    members = read_deb(deb, want)
    link = members.get(doc)
    cp = members.get(f"{doc}/copyright")
    lic = license_summary(cp.decode("utf-8", "replace") if isinstance(cp, bytes) else None,
                          Path(link[1]).name if isinstance(link, tuple) else None)
    raw: dict[str, int] = collections.Counter()
    drops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    pairs: dict[str, list] = collections.defaultdict(list)
    errors, ncat = [], 0
    for name, blob in _iter_catalog_blobs(members):
        loc = lang_of_path(name.split("!")[-1])
        lang = normalise_lang(loc) if loc else None
        if lang is None:
            continue
        try:
            cat = parse_mo(blob)
        except MoError as exc:
            errors.append(f"{name}: {exc}")
            continue
        ncat += 1
        cands = catalog_pairs(cat)
        raw[lang] += len(cands) + cat["bad_encoding"]
        if cat["bad_encoding"]:
            drops[lang]["bad_encoding"] += cat["bad_encoding"]
        pairs[lang].extend(clean_pairs(cands, lang, drops[lang]))
    return {"package": pkg, "license": lic, "raw": dict(raw), "drops": {k: dict(v) for k, v in drops.items()},
            "pairs": dict(pairs), "catalogs": ncat, "errors": errors[:20]}


def process_cached(args: tuple[str, str, str]) -> dict[str, Any]:
    """:func:`process_deb` with its result cached as ``<parsed>/<deb name>.v<N>.json.gz``."""
    deb, pkg, parsed_dir = args
    cache = Path(parsed_dir) / f"{Path(deb).name}.v{CACHE_VERSION}.json.gz"
    if cache.is_file():
        with gzip.open(cache, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    try:
        res = process_deb(deb, pkg)
    except Exception as exc:  # noqa: BLE001 - a broken .deb costs its package, not the run
        return {"package": pkg, "license": "?", "raw": {}, "drops": {}, "pairs": {}, "catalogs": 0,
                "errors": [f"{type(exc).__name__}: {exc}"]}
    with atomic_writer(cache, "wb") as fh:
        fh.write(gzip.compress(json.dumps(res, ensure_ascii=False).encode("utf-8"), 3))
    return res


# ----------------------------------------------------------------------------------------------
# corpus


def build_corpus(results: Iterable[dict[str, Any]], *, cap: int = DEFAULT_CAP, seed: int = 0,
                 langs: set[str] | None = None) -> dict[str, Any]:
    """Merge per-package results (in the given order): English dedup per language (first wins),
    seeded shuffle, cap. Returns per-language rows ``[(xx, en, pkg)]`` and the counts for STATS.md."""
    rows: dict[str, list] = collections.defaultdict(list)
    seen: dict[str, set] = collections.defaultdict(set)
    raw: collections.Counter = collections.Counter()
    drops: collections.Counter = collections.Counter()
    licenses: dict[str, str] = {}
    pkg_order: list[str] = []
    for res in results:
        pkg = res["package"]
        if pkg not in licenses:
            pkg_order.append(pkg)
        licenses[pkg] = res["license"]
        for lang, n in res["raw"].items():
            if langs is None or lang in langs:
                raw[lang] += n
        for lang, d in res["drops"].items():
            if langs is None or lang in langs:
                drops.update(d)
        for lang, prs in res["pairs"].items():
            if langs is not None and lang not in langs:
                continue
            s = seen[lang]
            for xx, en in prs:
                key = " ".join(en.casefold().split())
                if key in s:
                    drops["dup_english"] += 1
                    continue
                s.add(key)
                rows[lang].append((xx, en, pkg))
    available = {lang: len(r) for lang, r in rows.items()}
    for lang, r in rows.items():
        random.Random(f"{seed}:{lang}").shuffle(r)
        del r[cap:]
    return {"rows": dict(rows), "available": available, "raw": dict(raw), "drops": dict(drops),
            "licenses": licenses, "packages": pkg_order}


def write_outputs(out: Path, corpus: dict[str, Any], *, min_pairs: int, cap: int, seed: int,
                  command: str = "", extra: str = "") -> list[str]:
    """``<lang>-en.tsv`` for every language with >= min_pairs pairs, and STATS.md. Returns the languages written."""
    out.mkdir(parents=True, exist_ok=True)
    rows, avail, raw = corpus["rows"], corpus["available"], corpus["raw"]
    written = sorted(lang for lang, r in rows.items() if len(r) >= min_pairs)
    for lang in written:
        with atomic_writer(out / f"{lang}-en.tsv") as fh:
            for xx, en, _ in rows[lang]:
                fh.write(f"{xx}\t{en}\n")
    pkg_pairs: collections.Counter = collections.Counter()
    intro = (f"Built by `train/prepare_gettext.py` (seed {seed}, cap {cap}/language, languages with at least "
             f"{min_pairs} pairs written). Format: `<xx>-en.tsv` = `<xx sentence>\\t<en sentence>`, UTF-8, "
             "no header, shuffled.")
    licence = ("Texts are human translations of free-software user-interface strings shipped in Debian "
               "packages. They inherit the licenses of the translated programs (mostly GPL-2+/GPL-3+/LGPL, "
               "LibreOffice MPL-2.0, WordPress GPL-2+, calibre GPL-3); see the per-package table. Fine for "
               "research use; redistribution must respect those terms.")
    codes = ("Language codes: territory dropped (pt_BR -> pt), script kept where it is not the usual one "
             "(zh_Hant, sr_Latn, uz_Cyrl, pa_Arab), other modifiers dropped (ca@valencia -> ca).")
    lines = ["# l10n parallel corpus (Debian gettext catalogs), all languages — statistics", "", intro, ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [licence, "", codes, "",
              "`available` = cleaned, English-deduplicated pairs before the cap; `pairs` = written.", "",
              "| lang | pairs | available | raw catalog entries | top source packages (pairs) |",
              "|---|---:|---:|---:|---|"]
    tot_p = tot_a = 0
    for lang in written:
        c = collections.Counter(p for _, _, p in rows[lang])
        pkg_pairs.update(c)
        top = ", ".join(f"{p} ({n})" for p, n in c.most_common(5))
        lines.append(f"| {lang} | {len(rows[lang])} | {avail[lang]} | {raw.get(lang, 0)} | {top} |")
        tot_p += len(rows[lang])
        tot_a += avail[lang]
    lines += [f"| **total** | **{tot_p}** | **{tot_a}** | | |", ""]
    sizes = [len(rows[lg]) for lg in written]
    summary = (f"Languages written: {len(written)} (>= 2,000 pairs: {sum(k >= 2000 for k in sizes)}, "
               f">= 10,000: {sum(k >= 10000 for k in sizes)}, at the cap: {sum(k >= cap for k in sizes)}).")
    lines += [summary, ""]
    below = sorted((lg for lg in rows if lg not in written), key=lambda lg: (-avail[lg], lg))
    if below:
        lines += [f"Below {min_pairs} pairs (not written): " + ", ".join(f"{lg} ({avail[lg]})" for lg in below), ""]
    lines += ["## Filter counts (all languages, before cap)", "",
              "Rules in the order applied (a pair counts under the first that drops it): " + ", ".join(REASONS) + ".",
              "", "| reason | dropped |", "|---|---:|"]
    for reason, k in sorted(corpus["drops"].items(), key=lambda kv: (-kv[1], kv[0])):
        if k:
            lines.append(f"| {reason} | {k} |")
    lines += ["", "## Packages used (pairs contributed after dedup/cap; license from debian/copyright)", "",
              "| package | pairs | license (Files: * / others) |", "|---|---:|---|"]
    for pkg in sorted(pkg_pairs, key=lambda p: (-pkg_pairs[p], p)):
        lic = corpus["licenses"].get(pkg, "?").replace("|", "/")
        lines.append(f"| {pkg} | {pkg_pairs[pkg]} | {lic} |")
    if extra:
        lines += ["", extra]
    with atomic_writer(out / "STATS.md") as fh:
        fh.write("\n".join(lines) + "\n")
    return written


# ----------------------------------------------------------------------------------------------
# apt


class AptError(RuntimeError):
    pass


def need_apt() -> None:
    for tool in ("apt-get", "apt-cache"):
        if shutil.which(tool) is None:
            raise AptError(f"{tool} not found: this step needs a Debian/Ubuntu machine with apt "
                           "(or put the .deb files in --cache/debs and pass --offline)")


def fetch_contents(cache: Path, mirror: str, suite: str) -> list[Path]:
    """Contents-all.gz and Contents-amd64.gz of ``suite``'s main component, fetched once with apt's
    downloader (``apt-helper download-file``), else urllib."""
    out = []
    for arch in ("all", "amd64"):
        dest = cache / f"Contents-{suite}-{arch}.gz"
        if not dest.is_file():
            url = f"{mirror}/dists/{suite}/main/Contents-{arch}.gz"
            part = dest.with_name(dest.name + ".part")
            helper = "/usr/lib/apt/apt-helper"
            if Path(helper).is_file():
                r = subprocess.run([helper, "download-file", url, str(part)], capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    raise AptError(f"could not fetch {url}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            else:
                import urllib.request

                urllib.request.urlretrieve(url, part)
            os.replace(part, dest)
        out.append(dest)
    return out


def packages_from_contents(paths: Iterable[Path]) -> dict[str, set[str]]:
    """package -> languages of its catalogs, from Contents indices (``path<spaces>section/pkg,...``)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for p in paths:
        with gzip.open(p, "rt", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if ".mo" not in line:
                    continue
                path, _, locs = line.rstrip("\n").rpartition(" ")
                path = path.strip()
                if not path.endswith(".mo") or _SKIP_PATH.search(path):
                    continue
                loc = lang_of_path(path)
                lang = normalise_lang(loc) if loc else None
                if lang is None:
                    continue
                for loc_ in locs.split(","):
                    found[loc_.rsplit("/", 1)[-1]].add(lang)
    return dict(found)


def package_sizes(pkgs: list[str]) -> dict[str, int]:
    """Download size of each package's candidate version (``apt-cache show``); absent = unknown."""
    sizes: dict[str, int] = {}
    for i in range(0, len(pkgs), 200):
        r = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs[i:i + 200]],
                           capture_output=True, text=True, check=False)
        cur = None
        for line in r.stdout.splitlines():
            if line.startswith("Package:"):
                cur = line.split(":", 1)[1].strip()
            elif line.startswith("Size:") and cur:
                sizes[cur] = int(line.split(":", 1)[1])
    return sizes


def cached_deb(debs: Path, pkg: str) -> Path | None:
    hits = sorted(debs.glob(f"{pkg}_*.deb"))
    return hits[-1] if hits else None


def download(pkgs: list[str], debs: Path, log=print) -> list[str]:
    """``apt-get download`` what is not in ``debs`` yet (batches; a failing batch is retried one by
    one). Returns the packages that could not be fetched."""
    debs.mkdir(parents=True, exist_ok=True)
    todo = [p for p in pkgs if cached_deb(debs, p) is None]
    failed: list[str] = []
    t0 = time.time()
    for i in range(0, len(todo), 50):
        batch = todo[i:i + 50]
        r = subprocess.run(["apt-get", "download", "-q", *batch], cwd=debs, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            for p in batch:
                if cached_deb(debs, p) is None:
                    r1 = subprocess.run(["apt-get", "download", "-q", p], cwd=debs, capture_output=True, text=True, check=False)
                    if r1.returncode != 0:
                        failed.append(p)
        log(f"downloaded {min(i + 50, len(todo))}/{len(todo)} packages ({time.time() - t0:.0f} s)")
    return failed


def default_suite() -> str:
    try:
        txt = Path("/etc/os-release").read_text()
        m = re.search(r"^VERSION_CODENAME=(\w+)", txt, re.MULTILINE)
        if m:
            return m.group(1)
    except OSError:
        pass
    return "bookworm"


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for <xx>-en.tsv and STATS.md")
    ap.add_argument("--cache", required=True, type=Path, help="folder for Contents indices, .deb files and parsed results")
    ap.add_argument("--packages", help="comma-separated packages instead of the Contents-based selection")
    ap.add_argument("--packages-file", type=Path, help="packages, one per line (# comments)")
    ap.add_argument("--langs", help="comma-separated corpus codes to keep (after normalisation, e.g. pt,zh_Hant)")
    ap.add_argument("--cap", type=int, default=DEFAULT_CAP, help=f"pairs per language at most (default {DEFAULT_CAP})")
    ap.add_argument("--min-pairs", type=int, default=DEFAULT_MIN_PAIRS, help="write languages with at least this many pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-package-mb", type=float, default=0, help="skip packages larger than this (0 = no limit)")
    ap.add_argument("--suite", default=None, help="Debian suite of the Contents indices (default: this system's)")
    ap.add_argument("--mirror", default=MIRROR)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="processes parsing .deb files")
    ap.add_argument("--offline", action="store_true", help="use only the .deb files in --cache/debs (no apt)")
    ap.add_argument("--dry-run", action="store_true", help="list the packages and download size, then exit")
    ap.add_argument("--download-only", action="store_true", help="fetch the .deb files, then exit")
    return ap.parse_args(argv)


def choose_packages(args: argparse.Namespace, log) -> tuple[list[str], str]:
    if args.packages or args.packages_file:
        pkgs = [p.strip() for p in (args.packages or "").split(",") if p.strip()]
        if args.packages_file:
            for line in args.packages_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    pkgs.append(line)
        return sorted(set(pkgs)), "given"
    if args.offline:
        return sorted({p.name.split("_", 1)[0] for p in (args.cache / "debs").glob("*.deb")}), "cache"
    need_apt()
    contents = fetch_contents(args.cache, args.mirror, args.suite or default_suite())
    found = packages_from_contents(contents)
    if args.langs:
        want = set(args.langs.split(","))
        found = {p: ls for p, ls in found.items() if ls & want}
    pkgs = sorted(set(found) | set(EXTRA_PACKAGES))
    log(f"{len(pkgs)} packages ship gettext catalogs ({len(set().union(*found.values())) if found else 0} language codes in their paths)")
    return pkgs, "contents"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    args.cache.mkdir(parents=True, exist_ok=True)
    debs = args.cache / "debs"
    t0 = time.time()
    try:
        pkgs, how = choose_packages(args, log)
        sizes: dict[str, int] = {}
        if not args.offline and shutil.which("apt-cache"):
            sizes = package_sizes(pkgs)
            unknown = [p for p in pkgs if p not in sizes and cached_deb(debs, p) is None]
            if unknown:
                log(f"not in apt's package lists (skipped): {', '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''}")
                pkgs = [p for p in pkgs if p not in unknown]
        if args.max_package_mb > 0:
            big = [p for p in pkgs if sizes.get(p, 0) > args.max_package_mb * 1e6]
            if big:
                log(f"skipped as larger than {args.max_package_mb:g} MB: {', '.join(big)}")
            pkgs = [p for p in pkgs if p not in big]
        have = [p for p in pkgs if cached_deb(debs, p) is not None]
        need = [p for p in pkgs if p not in have]
        mb = sum(sizes.get(p, 0) for p in need) / 1e6
        if args.dry_run:
            for p in pkgs:
                print(f"{p}\t{sizes.get(p, 0) / 1e6:.1f} MB\t{'cached' if p in have else 'download'}")
            log(f"{len(pkgs)} packages ({how}): {len(have)} cached, {len(need)} to download, "
                f"{mb:.0f} MB (all: {sum(sizes.get(p, 0) for p in pkgs) / 1e6:.0f} MB)")
            return 0
        if need and not args.offline:
            need_apt()
            log(f"downloading {len(need)} packages, {mb:.0f} MB, into {debs}")
            failed = download(need, debs, log)
            if failed:
                log(f"could not download {len(failed)}: {', '.join(failed[:20])}")
    except AptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t_dl = time.time() - t0
    if args.download_only:
        log(f"downloaded in {t_dl:.0f} s")
        return 0
    jobs = [(str(cached_deb(debs, p)), p, str(args.cache / "parsed")) for p in pkgs if cached_deb(debs, p)]
    (args.cache / "parsed").mkdir(parents=True, exist_ok=True)
    dl_bytes = sum(Path(j[0]).stat().st_size for j in jobs)
    log(f"parsing {len(jobs)} packages ({dl_bytes / 1e9:.2f} GB of .deb) with {args.jobs} process(es)")
    t1 = time.time()
    langs = set(args.langs.split(",")) if args.langs else None
    errors: list[str] = []

    def results() -> Iterator[dict[str, Any]]:
        if args.jobs > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(args.jobs) as pool:
                for i, res in enumerate(pool.imap(process_cached, jobs, chunksize=1), 1):
                    errors.extend(f"{res['package']}: {e}" for e in res.get("errors", []))
                    if i % 100 == 0 or i == len(jobs):
                        log(f"parsed {i}/{len(jobs)} packages ({time.time() - t1:.0f} s)")
                    yield res
        else:
            for i, j in enumerate(jobs, 1):
                res = process_cached(j)
                errors.extend(f"{res['package']}: {e}" for e in res.get("errors", []))
                if i % 100 == 0 or i == len(jobs):
                    log(f"parsed {i}/{len(jobs)} packages ({time.time() - t1:.0f} s)")
                yield res

    corpus = build_corpus(results(), cap=args.cap, seed=args.seed, langs=langs)
    t_parse = time.time() - t1
    cmd = "python train/prepare_gettext.py " + " ".join(argv if argv is not None else sys.argv[1:])
    extra = (f"Packages: {len(jobs)} ({how} selection), {dl_bytes / 1e9:.2f} GB of .deb files; "
             f"catalog errors: {len(errors)}.")
    written = write_outputs(args.out, corpus, min_pairs=args.min_pairs, cap=args.cap, seed=args.seed,
                            command=cmd, extra=extra)
    stale = sorted(p.name for p in args.out.glob("*-en.tsv") if p.name[:-len("-en.tsv")] not in written)
    if stale:
        log(f"note: {len(stale)} older file(s) in {args.out} were not written by this run: {', '.join(stale[:10])}")
    counts = [len(corpus["rows"][lg]) for lg in written]
    log(f"wrote {len(written)} languages, {sum(counts)} pairs to {args.out} "
        f"(>= 2,000: {sum(c >= 2000 for c in counts)}, >= 10,000: {sum(c >= 10000 for c in counts)}); "
        f"download {t_dl:.0f} s, parse {t_parse:.0f} s")
    if errors:
        log(f"{len(errors)} catalog errors, e.g. {errors[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
