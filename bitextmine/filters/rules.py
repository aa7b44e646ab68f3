"""The per-pair rules: text normalisation, lengths and their ratio, copies, numbers and URLs.

Each rule looks at one pair only, so its verdict does not depend on the order of the input.

* **Normalisation** (for dedup, per-sentence caps and copies): NFKC, case folded, every decimal
  digit (any script) → ``0``, punctuation (Unicode category P*) and control/format characters
  removed, whitespace runs → one space, stripped (stopes' ``normalize_for_dedup`` does the same
  for case, digits and punctuation).
* **Length** is counted in characters (code points) scaled by the language's factor
  (:data:`LENGTH_FACTORS`, as stopes does): English-equivalent characters, so that ``max_length``
  and the ratio mean the same for Chinese and German.
* **Numbers**: the digit runs of each side, read in any script, with single separators inside a
  number (``1,000`` ``1.000`` ``11:00`` ``1 000`` with a no-break space) joined and leading and
  trailing zeros dropped (``800 000`` and ``800 thousand`` agree). A pair disagrees when *each*
  side has a number that no number of the other side contains or is contained in: one side may
  add numbers (Chinese and Japanese write months and counters as digits where English uses
  words), and ``20世纪90年代`` agrees with ``1990s``.
* **URLs and e-mail addresses**: the same rule over the addresses, case folded.
"""
from __future__ import annotations

import functools
import re
import unicodedata

#: English characters per character of the language (chars(eng) / chars(lang) over the 1,004
#: Flores-200 sentences in ../shared/data/flores; ``benchmarks/filter.py factors`` recomputes
#: them). Keys are language groups (:mod:`bitextmine.filters.langs`); others count 1.0.
LENGTH_FACTORS: dict[str, float] = {
    "afr": 0.942, "ara": 1.116, "ben": 1.018, "bul": 0.950, "deu": 0.855, "ell": 0.832, "eng": 1.000,
    "est": 1.013, "eus": 0.932, "fas": 1.048, "fin": 0.933, "fra": 0.834, "heb": 1.276, "hin": 0.998,
    "hun": 0.946, "msa": 0.919, "ita": 0.842, "jav": 0.958, "jpn": 2.274, "kat": 0.901, "kaz": 0.967,
    "kor": 1.985, "mal": 0.880, "mar": 0.991, "nld": 0.895, "por": 0.917, "rus": 0.908, "spa": 0.839,
    "swa": 0.946, "tam": 0.854, "tel": 0.981, "tgl": 0.788, "tha": 1.037, "tur": 0.965, "urd": 1.003,
    "vie": 0.945, "zho": 2.975,
}

#: The Flores file behind each factor (``benchmarks/filter.py factors`` and the tests recompute them).
FLORES_FILES = {
    "afr": "afr_Latn", "ara": "arb_Arab", "ben": "ben_Beng", "bul": "bul_Cyrl", "deu": "deu_Latn", "ell": "ell_Grek",
    "eng": "eng_Latn", "est": "est_Latn", "eus": "eus_Latn", "fas": "pes_Arab", "fin": "fin_Latn", "fra": "fra_Latn",
    "heb": "heb_Hebr", "hin": "hin_Deva", "hun": "hun_Latn", "msa": "ind_Latn", "ita": "ita_Latn", "jav": "jav_Latn",
    "jpn": "jpn_Jpan", "kat": "kat_Geor", "kaz": "kaz_Cyrl", "kor": "kor_Hang", "mal": "mal_Mlym", "mar": "mar_Deva",
    "nld": "nld_Latn", "por": "por_Latn", "rus": "rus_Cyrl", "spa": "spa_Latn", "swa": "swh_Latn", "tam": "tam_Taml",
    "tel": "tel_Telu", "tgl": "tgl_Latn", "tha": "tha_Thai", "tur": "tur_Latn", "urd": "urd_Arab", "vie": "vie_Latn",
    "zho": "zho_Hans",
}


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[int, str | None], dict[int, str]]:
    """(normalisation table, digit → ASCII table), built once. Planes 4-13, 15 and 16 hold no
    assigned characters, so they are skipped."""
    norm: dict[int, str | None] = {}
    digits: dict[int, str] = {}
    for cp in (*range(0x34000), *range(0xE0000, 0xE1000)):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat == "Nd":
            norm[cp] = "0"
            digits[cp] = str(unicodedata.digit(ch))
        elif ch.isspace() or cat[0] == "Z":
            norm[cp] = " "
        elif cat[0] == "P" or cat in ("Cc", "Cf"):
            norm[cp] = None
    return norm, digits


def normalise(text: str) -> str:
    """The dedup form of ``text``: see the module docstring."""
    t = unicodedata.normalize("NFKC", text).casefold().translate(_tables()[0])
    return " ".join(t.split())


def length_factor(group: str | None, factors: dict[str, float] | None = None) -> float:
    table = LENGTH_FACTORS if factors is None else factors
    return table.get(group or "", 1.0)


def length_ratio(src_len: float, tgt_len: float) -> float:
    """Longer over shorter (lengths floored at 1, as stopes does)."""
    a, b = max(1.0, src_len), max(1.0, tgt_len)
    return a / b if a >= b else b / a


def _grams(s: str, n: int = 3) -> set[str]:
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def overlap(norm_src: str, norm_tgt: str) -> float:
    """Jaccard similarity of the character trigram sets of two normalised texts (1.0 when equal)."""
    if norm_src == norm_tgt:
        return 1.0
    a, b = _grams(norm_src), _grams(norm_tgt)
    return len(a & b) / len(a | b)


def overlap_reaches(norm_src: str, norm_tgt: str, limit: float) -> float | None:
    """:func:`overlap` when it is at least ``limit``, else None; most pairs are answered after a few
    substring tests instead of building two trigram sets.

    Jaccard ≥ limit needs |A ∩ B| ≥ limit·|A ∪ B| ≥ limit·|A|: at most (1 - limit)·|A| of the source's
    trigrams may be absent from the target. The source's trigrams are tested in order with ``in``
    (a trigram of A is in B exactly when it is a substring of the target); once more distinct ones
    are missing than (1 - limit) times the number of trigram positions (≥ |A|), the answer is None."""
    a, b = (norm_src, norm_tgt) if len(norm_src) <= len(norm_tgt) else (norm_tgt, norm_src)
    positions = max(1, len(a) - 2)
    allowed = (1.0 - limit) * positions
    missing: set[str] = set()
    for i in range(positions):
        g = a[i:i + 3]
        if g not in b and g not in missing:
            missing.add(g)
            if len(missing) > allowed:
                return None
    ov = overlap(norm_src, norm_tgt)
    return ov if ov >= limit else None


_SEP = re.compile(r"(?<=\d)[,.:'’\u00a0\u202f\u2009\u066b\u066c](?=\d)")
_DIGITS = re.compile(r"\d+")


_ANY_DIGIT = re.compile(r"\d")  # Unicode Nd: the only characters the digit table maps, so no match, no number


def numbers(text: str) -> frozenset[str]:
    """The numbers in ``text`` as ASCII digit strings without leading or trailing zeros."""
    if _ANY_DIGIT.search(text) is None:
        return frozenset()
    t = _SEP.sub("", text).translate(_tables()[1])
    return frozenset((m.strip("0") or "0") for m in _DIGITS.findall(t))


_NUMBER = re.compile(r"\d+(?:[,.:'’\u00a0\u202f\u2009\u066b\u066c]\d+)*")


def number_strings(text: str) -> list[str]:
    """The numbers of ``text`` as written (for messages)."""
    return _NUMBER.findall(text)


_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)[^\s<>\"']+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)


def urls(text: str) -> frozenset[str]:
    """URLs and e-mail addresses in ``text``, case folded, without trailing punctuation."""
    if "@" not in text and "www." not in text.lower() and "://" not in text:
        return frozenset()
    return frozenset(m.casefold().rstrip(".,;:!?)]}'\"") for m in _URL.findall(text))


def disagree(a: frozenset[str], b: frozenset[str]) -> bool:
    """Each side has an item the other lacks (one side may have more)."""
    return bool(a - b) and bool(b - a)


def numbers_disagree(a: frozenset[str], b: frozenset[str]) -> bool:
    """Each side has a number that no number of the other side contains or is contained in
    (``90`` and ``1990``: Chinese writes the 1990s as 20世纪90年代; ``15`` and ``1 5``)."""
    if not (a - b and b - a):
        return False

    def alone(x: frozenset[str], y: frozenset[str]) -> bool:
        return any(not any(n in m or m in n for m in y) for n in x - y)

    return alone(a, b) and alone(b, a)
