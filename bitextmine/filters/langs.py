"""Language codes: what users type (ISO 639-3, ISO 639-1, Flores-200) mapped to the labels of the
language identifier (:mod:`bitextmine.filters.lid`, py3langid's 140 labels).

Every label has an ISO 639-3 code and a *group*: its ISO 639 macrolanguage where it has one
(Arabic ``ara`` = ``ar`` + ``arz`` + ``ary``; Chinese ``zho`` = ``zh`` + ``wuu`` + ``yue``; Malay
``msa`` = ``ms`` + ``id``; Serbo-Croatian ``hbs`` = ``sr`` + ``hr`` + ``bs``; Norwegian ``nor`` =
``no`` + ``nn``; Kurdish, Uzbek, Latvian...), else the label alone. The filter accepts a sentence
when its group is the expected one: identifiers confuse the members of a macrolanguage, and for
bitext a Cantonese or Wu sentence on a Chinese side is not noise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bitextmine.errors import InputError

#: label → (ISO 639-3 code, macrolanguage or "", English name)
LABELS: dict[str, tuple[str, str, str]] = {
    "ace": ("ace", "", "Acehnese"), "af": ("afr", "", "Afrikaans"), "am": ("amh", "", "Amharic"),
    "an": ("arg", "", "Aragonese"), "ar": ("arb", "ara", "Arabic"), "ary": ("ary", "ara", "Moroccan Arabic"),
    "arz": ("arz", "ara", "Egyptian Arabic"), "as": ("asm", "", "Assamese"), "az": ("azj", "aze", "Azerbaijani"),
    "ba": ("bak", "", "Bashkir"), "bcl": ("bcl", "bik", "Central Bikol"), "be": ("bel", "", "Belarusian"),
    "bg": ("bul", "", "Bulgarian"), "bn": ("ben", "", "Bengali"), "br": ("bre", "", "Breton"),
    "bs": ("bos", "hbs", "Bosnian"), "ca": ("cat", "", "Catalan"), "crh": ("crh", "", "Crimean Tatar"),
    "cs": ("ces", "", "Czech"), "cy": ("cym", "", "Welsh"), "da": ("dan", "", "Danish"),
    "de": ("deu", "", "German"), "dz": ("dzo", "", "Dzongkha"), "el": ("ell", "", "Greek"),
    "en": ("eng", "", "English"), "eo": ("epo", "", "Esperanto"), "es": ("spa", "", "Spanish"),
    "et": ("ekk", "est", "Estonian"), "eu": ("eus", "", "Basque"), "ext": ("ext", "", "Extremaduran"),
    "fa": ("pes", "fas", "Persian"), "fi": ("fin", "", "Finnish"), "fo": ("fao", "", "Faroese"),
    "fr": ("fra", "", "French"), "fuv": ("fuv", "ful", "Nigerian Fulfulde"), "fy": ("fry", "", "Western Frisian"),
    "ga": ("gle", "", "Irish"), "gcf": ("gcf", "", "Guadeloupean Creole"), "gcr": ("gcr", "", "Guianese Creole"),
    "gd": ("gla", "", "Scottish Gaelic"), "gl": ("glg", "", "Galician"), "gom": ("gom", "kok", "Goan Konkani"),
    "grc": ("grc", "", "Ancient Greek"), "gu": ("guj", "", "Gujarati"), "gug": ("gug", "grn", "Paraguayan Guarani"),
    "guw": ("guw", "", "Gun"), "ha": ("hau", "", "Hausa"), "hbo": ("hbo", "", "Ancient Hebrew"),
    "he": ("heb", "", "Hebrew"), "hi": ("hin", "", "Hindi"), "hr": ("hrv", "hbs", "Croatian"),
    "ht": ("hat", "", "Haitian Creole"), "hu": ("hun", "", "Hungarian"), "hy": ("hye", "", "Armenian"),
    "id": ("ind", "msa", "Indonesian"), "ig": ("ibo", "", "Igbo"), "is": ("isl", "", "Icelandic"),
    "it": ("ita", "", "Italian"), "ja": ("jpn", "", "Japanese"), "jv": ("jav", "", "Javanese"),
    "ka": ("kat", "", "Georgian"), "kab": ("kab", "", "Kabyle"), "kik": ("kik", "", "Kikuyu"),
    "kk": ("kaz", "", "Kazakh"), "km": ("khm", "", "Khmer"), "kn": ("kan", "", "Kannada"),
    "ko": ("kor", "", "Korean"), "ku": ("kmr", "kur", "Kurdish"), "ky": ("kir", "", "Kyrgyz"),
    "la": ("lat", "", "Latin"), "lb": ("ltz", "", "Luxembourgish"), "lg": ("lug", "", "Ganda"),
    "lij": ("lij", "", "Ligurian"), "ln": ("lin", "", "Lingala"), "lo": ("lao", "", "Lao"),
    "lt": ("lit", "", "Lithuanian"), "ltg": ("ltg", "lav", "Latgalian"), "lv": ("lvs", "lav", "Latvian"),
    "mg": ("plt", "mlg", "Malagasy"), "mk": ("mkd", "", "Macedonian"), "ml": ("mal", "", "Malayalam"),
    "mn": ("khk", "mon", "Mongolian"), "mr": ("mar", "", "Marathi"), "ms": ("zsm", "msa", "Malay"),
    "mt": ("mlt", "", "Maltese"), "my": ("mya", "", "Burmese"), "ne": ("npi", "nep", "Nepali"),
    "nl": ("nld", "", "Dutch"), "nn": ("nno", "nor", "Norwegian Nynorsk"), "no": ("nob", "nor", "Norwegian"),
    "nso": ("nso", "", "Northern Sotho"), "oc": ("oci", "", "Occitan"), "om": ("gaz", "orm", "Oromo"),
    "or": ("ory", "ori", "Odia"), "pa": ("pan", "", "Punjabi"), "pcm": ("pcm", "", "Nigerian Pidgin"),
    "pl": ("pol", "", "Polish"), "ps": ("pbt", "pus", "Pashto"), "pt": ("por", "", "Portuguese"),
    "qu": ("quy", "que", "Quechua"), "ro": ("ron", "", "Romanian"), "ru": ("rus", "", "Russian"),
    "rw": ("kin", "", "Kinyarwanda"), "sa": ("san", "", "Sanskrit"), "sdh": ("sdh", "kur", "Southern Kurdish"),
    "se": ("sme", "", "Northern Sami"), "si": ("sin", "", "Sinhala"), "sk": ("slk", "", "Slovak"),
    "sl": ("slv", "", "Slovenian"), "sn": ("sna", "", "Shona"), "so": ("som", "", "Somali"),
    "sq": ("als", "sqi", "Albanian"), "sr": ("srp", "hbs", "Serbian"), "st": ("sot", "", "Southern Sotho"),
    "sv": ("swe", "", "Swedish"), "sw": ("swh", "swa", "Swahili"), "ta": ("tam", "", "Tamil"),
    "te": ("tel", "", "Telugu"), "tg": ("tgk", "", "Tajik"), "th": ("tha", "", "Thai"),
    "tk": ("tuk", "", "Turkmen"), "tl": ("tgl", "", "Tagalog"), "tr": ("tur", "", "Turkish"),
    "tt": ("tat", "", "Tatar"), "ug": ("uig", "", "Uyghur"), "uk": ("ukr", "", "Ukrainian"),
    "ur": ("urd", "", "Urdu"), "uz": ("uzn", "uzb", "Uzbek"), "uzs": ("uzs", "uzb", "Southern Uzbek"),
    "vec": ("vec", "", "Venetian"), "vi": ("vie", "", "Vietnamese"), "vo": ("vol", "", "Volapük"),
    "wa": ("wln", "", "Walloon"), "wuu": ("wuu", "zho", "Wu Chinese"), "xh": ("xho", "", "Xhosa"),
    "yo": ("yor", "", "Yoruba"), "yue": ("yue", "zho", "Cantonese"), "zh": ("cmn", "zho", "Chinese"),
    "zu": ("zul", "", "Zulu"), "zxx": ("zxx", "", "no linguistic content"),
}

#: Common codes that are neither a label, its ISO 639-3 code nor its macrolanguage.
_ALIASES = {"fil": "tl", "tgl": "tl", "zsm": "ms", "nob": "no", "nb": "no", "prs": "fa", "swc": "sw", "lvs": "lv",
            "ekk": "et", "est": "et", "azb": "az", "aze": "az", "khk": "mn", "npi": "ne", "ory": "or", "plt": "mg",
            "quy": "qu", "gaz": "om", "pbt": "ps", "als": "sq", "uzn": "uz", "kmr": "ku", "ckb": "ku"}

#: Names of the macrolanguage groups.
MACRO_NAMES = {"ara": "Arabic", "aze": "Azerbaijani", "bik": "Bikol", "est": "Estonian", "fas": "Persian", "ful": "Fula",
               "grn": "Guarani", "hbs": "Serbo-Croatian (Serbian, Croatian, Bosnian)", "kok": "Konkani",
               "kur": "Kurdish", "lav": "Latvian", "mlg": "Malagasy", "mon": "Mongolian",
               "msa": "Malay (Malay, Indonesian)", "nep": "Nepali", "nor": "Norwegian", "ori": "Odia", "orm": "Oromo",
               "pus": "Pashto", "que": "Quechua", "sqi": "Albanian", "swa": "Swahili", "uzb": "Uzbek",
               "zho": "Chinese (Mandarin, Cantonese, Wu)"}

_FLORES = re.compile(r"^([a-z]{2,3})_[A-Z][a-z]{3}$")


def group_of(label: str) -> str:
    """The group a label counts for: its macrolanguage, else its ISO 639-3 code."""
    iso, macro, _ = LABELS[label]
    return macro or iso


@dataclass(frozen=True)
class Language:
    """An expected language: ``group`` (what the identifier must find) and a name for people."""

    code: str  # as the user gave it
    group: str  # ISO 639-3 macrolanguage or individual code
    name: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(lab for lab in LABELS if group_of(lab) == self.group)


def _index() -> dict[str, str]:
    idx: dict[str, str] = {}
    for lab, (iso, macro, _) in LABELS.items():
        idx.setdefault(lab, lab)
        idx.setdefault(iso, lab)
        if macro:
            idx.setdefault(macro, lab)
    for alias, lab in _ALIASES.items():
        idx.setdefault(alias, lab)
    return idx


_INDEX = _index()
HELP = ("use an ISO 639-3 code (deu), a Flores-200 code (deu_Latn) or an ISO 639-1 code (de); "
        "'bitextmine filter --list-languages' lists the languages the identifier knows")


def parse_language(code: str, param: str = "lang") -> Language:
    """The language a code names; InputError (naming ``param``) for codes the identifier does not know."""
    raw = (code or "").strip()
    m = _FLORES.match(raw)
    key = m.group(1) if m else raw.lower()
    lab = _INDEX.get(key)
    if lab is None or lab == "zxx":
        raise InputError(f"{{param}}: unknown language code {raw!r}; {HELP}", param=param)
    group = group_of(lab)
    return Language(raw, group, _group_name(group))


def language_of_group(group: str) -> Language:
    """The :class:`Language` of a group found by the identifier (language inference)."""
    return Language(group, group, _group_name(group))


def _group_name(group: str) -> str:
    if group in MACRO_NAMES:
        return MACRO_NAMES[group]
    names = [LABELS[lab][2] for lab in LABELS if group_of(lab) == group]
    return names[0] if names else group


def language_table() -> list[tuple[str, str, str, str]]:
    """(group, ISO 639-1/identifier labels, ISO 639-3 members, name) for every group, sorted by name."""
    rows: dict[str, list[str]] = {}
    for lab in LABELS:
        if lab != "zxx":
            rows.setdefault(group_of(lab), []).append(lab)
    out = [(g, ",".join(labs), ",".join(LABELS[lab][0] for lab in labs), _group_name(g)) for g, labs in rows.items()]
    return sorted(out, key=lambda r: r[3])
