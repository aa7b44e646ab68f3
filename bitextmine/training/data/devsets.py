"""Dev sets: Flores-200 (checkpoint selection), the held-out split, and report-only Tatoeba folders.

Each set is line-aligned (xx, English) text per language; training's evaluation embeds both
sides and scores retrieval (:mod:`bitextmine.training.evaluate`). Language codes are the ISO
639-1 codes of the training files; :data:`FLORES` and :data:`TATOEBA` map them to file names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitextmine.errors import InputError
from bitextmine.training.data.tokens import PreparedData

# The 36 DAP/XTREME languages: ISO 639-1 code -> Flores-200 file stem, Tatoeba code.
FLORES = {
    "af": "afr_Latn", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng", "de": "deu_Latn", "el": "ell_Grek",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "ko": "kor_Hang", "ml": "mal_Mlym", "mr": "mar_Deva",
    "nl": "nld_Latn", "pt": "por_Latn", "ru": "rus_Cyrl", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn", "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}
TATOEBA = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est", "eu": "eus",
    "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn",
    "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld", "pt": "por", "ru": "rus",
    "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}


@dataclass
class DevSet:
    name: str  # "flores", "split", or a report folder's name
    lang: str
    src: list[str]  # xx sentences
    tgt: list[str]  # aligned English sentences


def _unquote(s: str) -> str:
    """Undo the CSV quoting some Flores lines kept ("...""..."" ..." -> ..."..."...)."""
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1].replace('""', '"')
    return s


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read ({e})") from None


def flores_dev(folder: str | Path, langs: list[str], max_pairs: int) -> list[DevSet]:
    """Line-aligned Flores-200 dev pairs (xx, eng_Latn) for each language code in ``langs``."""
    folder = Path(folder)
    eng = folder / "eng_Latn.txt"
    if not eng.is_file():
        raise InputError(f"eval.flores_dir: {eng} not found")
    en = [_unquote(s) for s in _read_lines(eng)]
    out = []
    for lang in langs:
        stem = FLORES.get(lang, lang)
        p = folder / f"{stem}.txt"
        if not p.is_file():
            raise InputError(f"eval.flores_dir: no Flores file for language {lang} ({p.name})")
        xx = [_unquote(s) for s in _read_lines(p)]
        if len(xx) != len(en):
            raise InputError(f"{p}: {len(xx)} lines, but {eng.name} has {len(en)}; files must be line-aligned")
        keep = [(x, e) for x, e in zip(xx, en) if x.strip() and e.strip()][:max_pairs]
        out.append(DevSet("flores", lang, [k[0] for k in keep], [k[1] for k in keep]))
    return out


def tatoeba_dev(folder: str | Path, langs: list[str], max_pairs: int) -> list[DevSet]:
    """Report-only sets from ``tatoeba.xxx-eng.{xxx,eng}`` files (never used to pick checkpoints)."""
    folder = Path(folder)
    out = []
    for lang in langs:
        code = TATOEBA.get(lang, lang)
        a, b = folder / f"tatoeba.{code}-eng.{code}", folder / f"tatoeba.{code}-eng.eng"
        if not (a.is_file() and b.is_file()):
            continue
        xx, en = _read_lines(a), _read_lines(b)
        n = min(len(xx), len(en), max_pairs)
        out.append(DevSet(folder.name, lang, xx[:n], en[:n]))
    return out


def split_dev(data: PreparedData, langs: list[str], max_pairs: int) -> list[DevSet]:
    return [DevSet("split", lang, [p[0] for p in data.langs[lang].dev[:max_pairs]], [p[1] for p in data.langs[lang].dev[:max_pairs]])
            for lang in langs if len(data.langs[lang].dev) >= 2]
