"""Training data: parallel TSV files, the paper's filters, a dev split, language-balanced batches.

Input files are ``xx<TAB>en`` lines (``../shared/data/l10n/<xx>-en.tsv``, or what
``train/prepare_opus.py`` writes), one language per file, optionally compressed. Preparation
tokenises every pair once with the model's tokenizer, applies the filters of the DAP data script
(and counts each reason), removes duplicate pairs, shuffles, holds out a dev split per language
and caps the rest; the result is cached as flat int32 arrays keyed by a fingerprint of the files,
the tokenizer and the settings, so a resumed or repeated run skips the work.

Batches are drawn by :class:`Sampler`: each sample picks a language with probability
proportional to ``pairs ** alpha`` from a generator seeded by (seed, step, micro-batch), then the
next pair of that language's current epoch permutation. Its whole state is one cursor per
language, saved in checkpoints, so a resumed run draws exactly the batches an uninterrupted one
would.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bitextmine.corpus import open_binary
from bitextmine.errors import InputError
from bitextmine.training.config import ConfigError, DataConfig

FORMAT_VERSION = 1

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

FILTER_REASONS = ("url_or_at", "too_short", "length_ratio", "too_long", "identical", "overlap", "duplicate")
_LANG_FILE = re.compile(r"^(?P<lang>[A-Za-z]{2,3}(?:[_-][A-Za-z]{4})?)-en(?:[._-].*)?\.tsv(?:\.(?:gz|xz|bz2|zst))?$")


# ------------------------------------------------------------------ files


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


# ------------------------------------------------------------------ filters


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


# ------------------------------------------------------------------ token layout


@dataclass(frozen=True)
class TokenLayout:
    """How the model's tokenizer wraps a sentence: special ids before/after, prefix ids, pad and mask ids."""

    head: tuple[int, ...]  # e.g. (<s>,)
    tail: tuple[int, ...]  # e.g. (</s>,)
    prefix: tuple[int, ...]  # the recipe prefix tokenised in context ("query: " -> ▁que ry :)
    pad_id: int
    mask_id: int | None
    max_length: int
    prefix_text: str = ""
    prefix_stable: bool = True  # tokenise(prefix + s) == prefix ids + tokenise(s) on a sample

    @property
    def content_budget(self) -> int:
        """Tokens of sentence content that fit (max_length minus specials and prefix)."""
        return self.max_length - len(self.head) - len(self.tail) - len(self.prefix)

    def wrap(self, content: list[int] | np.ndarray, with_prefix: bool = True) -> list[int]:
        pre = list(self.prefix) if with_prefix else []
        return list(self.head) + pre + [int(t) for t in content] + list(self.tail)


def token_layout(tokenizer, prefix: str, max_length: int, sample: list[str] | None = None) -> TokenLayout:
    """Work out the tokenizer's special tokens and the prefix's ids as they appear before a sentence."""
    probe = "Hello world"
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    raw = tokenizer(probe, add_special_tokens=False)["input_ids"]
    i = next((i for i in range(len(full) - len(raw) + 1) if full[i : i + len(raw)] == raw), None)
    if i is None:
        raise InputError("the model's tokenizer changes a sentence when adding special tokens; cannot train with it")
    head, tail = tuple(full[:i]), tuple(full[i + len(raw) :])
    pre: tuple[int, ...] = ()
    stable = True
    if prefix:
        with_pre = tokenizer(prefix + probe, add_special_tokens=False)["input_ids"]
        if with_pre[-len(raw) :] == raw:
            pre = tuple(with_pre[: len(with_pre) - len(raw)])
        else:
            stable = False
        for s in sample or []:
            a = tokenizer(prefix + s, add_special_tokens=False)["input_ids"]
            b = tokenizer(s, add_special_tokens=False)["input_ids"]
            if not stable or a != list(pre) + b:
                stable = False
                break
        if not stable:
            pre = tuple(tokenizer(prefix.rstrip(), add_special_tokens=False)["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lay = TokenLayout(head, tail, pre, int(pad), tokenizer.mask_token_id, int(max_length), prefix, stable)
    if lay.content_budget < 4:
        raise ConfigError(f"data.max_length {max_length} leaves {lay.content_budget} tokens for the sentence after specials and prefix")
    return lay


# ------------------------------------------------------------------ ragged arrays


@dataclass
class Ragged:
    """Variable-length int32 sequences stored flat with offsets (len n+1)."""

    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, seqs: list[list[int]]) -> "Ragged":
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def take(self, idx: np.ndarray) -> "Ragged":
        return Ragged.from_lists([self[int(i)].tolist() for i in idx])


@dataclass
class LangData:
    """One language's training pairs (encoder inputs without specials; English RTL targets) and dev pairs."""

    src: Ragged  # xx content ids with prefix, truncated to the content budget
    tgt: Ragged  # en content ids with prefix, truncated likewise
    rtl: Ragged  # en content ids without prefix: the RTL labels (same truncation as tgt)
    dev: list[tuple[str, str]]  # held-out (xx, en) pairs (text)

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class PreparedData:
    langs: dict[str, LangData]
    layout: TokenLayout
    report: dict  # per language: counts of read / dropped by reason / kept / train / dev
    fingerprint: str

    @property
    def languages(self) -> list[str]:
        return list(self.langs)

    def english_vocab(self) -> np.ndarray:
        """Sorted token ids occurring in the RTL targets (English side) of the training pairs."""
        ids = np.unique(np.concatenate([d.rtl.flat for d in self.langs.values()]))
        return ids.astype(np.int64)


# ------------------------------------------------------------------ preparation


def _file_identity(p: Path) -> dict:
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def data_fingerprint(files: dict[str, list[Path]], cfg: DataConfig, tokenizer_id: str, prefix: str, seed: int) -> str:
    payload = {
        "v": FORMAT_VERSION,
        "files": {lang: [_file_identity(p) for p in ps] for lang, ps in files.items()},
        "cfg": {k: v for k, v in asdict(cfg).items() if k not in ("train", "languages", "sampling_alpha", "cache", "cache_dir")},
        "tokenizer": tokenizer_id,
        "prefix": prefix,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _tokenize(tokenizer, texts: list[str], chunk: int = 8192) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        out.extend(tokenizer(texts[i : i + chunk], add_special_tokens=False, truncation=False)["input_ids"])
    return out


def prepare_language(pairs: list[tuple[str, str]], tokenizer, layout: TokenLayout, cfg: DataConfig, seed: int, lang_index: int,
                     counts: dict[str, int]) -> LangData:
    """Filter, deduplicate, shuffle, split and truncate one language's pairs (counts updated in place)."""
    counts["read"] = counts.get("read", 0) + len(pairs)
    xs = _tokenize(tokenizer, [p[0] for p in pairs])
    es = _tokenize(tokenizer, [p[1] for p in pairs])
    keep: list[int] = []
    seen: set[tuple[str, str]] = set()
    for i, (x, e) in enumerate(pairs):
        reason = filter_reason(x, e, xs[i], es[i]) if cfg.filters else None
        if reason is None:
            if (x, e) in seen:
                reason = "duplicate"
            else:
                seen.add((x, e))
        if reason is None:
            keep.append(i)
        else:
            counts[reason] = counts.get(reason, 0) + 1
    counts["kept"] = counts.get("kept", 0) + len(keep)
    order = np.random.default_rng([seed, 7, lang_index]).permutation(len(keep))
    kept = [keep[j] for j in order]
    n_dev = min(cfg.dev_max, int(cfg.dev_fraction * len(kept)))
    dev_idx, train_idx = kept[:n_dev], kept[n_dev : n_dev + cfg.max_pairs_per_language]
    counts["dev"] = counts.get("dev", 0) + len(dev_idx)
    counts["train"] = counts.get("train", 0) + len(train_idx)
    budget = layout.content_budget
    pre = list(layout.prefix)
    if layout.prefix and not layout.prefix_stable:
        # the prefix merges with sentence starts for this tokenizer: tokenise the prefixed text itself
        xin = _tokenize(tokenizer, [layout.prefix_text + pairs[i][0] for i in train_idx])
        ein = _tokenize(tokenizer, [layout.prefix_text + pairs[i][1] for i in train_idx])
        src = [s[: budget + len(pre)] for s in xin]
        tgt = [s[: budget + len(pre)] for s in ein]
    else:
        src = [pre + xs[i][:budget] for i in train_idx]
        tgt = [pre + es[i][:budget] for i in train_idx]
    rtl = [es[i][:budget] for i in train_idx]
    dev = [pairs[i] for i in dev_idx]
    return LangData(Ragged.from_lists(src), Ragged.from_lists(tgt), Ragged.from_lists(rtl), dev)


def prepare_data(cfg: DataConfig, tokenizer, tokenizer_id: str, prefix: str, seed: int, cache_dir: Path | None,
                 progress=None) -> PreparedData:
    """Read, filter, split and tokenise the training files (or load them from ``cache_dir``)."""
    files = find_train_files(cfg.train, cfg.languages)
    fp = data_fingerprint(files, cfg, tokenizer_id, prefix, seed)
    if cache_dir is not None and cfg.cache:
        cached = load_cache(cache_dir / fp)
        if cached is not None:
            return cached
    layout: TokenLayout | None = None
    langs: dict[str, LangData] = {}
    report: dict[str, dict[str, int]] = {}
    for li, (lang, paths) in enumerate(files.items()):
        counts: dict[str, int] = {}
        pairs: list[tuple[str, str]] = []
        for p in paths:
            pairs.extend(read_tsv(p, counts))
        if layout is None:
            layout = token_layout(tokenizer, prefix, cfg.max_length, [p[1] for p in pairs[:64]] + [p[0] for p in pairs[:64]])
        if not pairs:
            raise InputError(f"data.train: {', '.join(map(str, paths))}: no 'xx<TAB>en' lines")
        langs[lang] = prepare_language(pairs, tokenizer, layout, cfg, seed, li, counts)
        report[lang] = counts
        if progress:
            progress({"event": "data", "lang": lang, **counts})
    assert layout is not None
    empty = [lang for lang, d in langs.items() if len(d) == 0]
    if empty:
        raise InputError(f"data: no training pairs left after filtering for {', '.join(empty)}")
    data = PreparedData(langs, layout, report, fp)
    if cache_dir is not None and cfg.cache:
        save_cache(data, cache_dir / fp)
    return data


def save_cache(data: PreparedData, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    arrays = {}
    for lang, d in data.langs.items():
        for part in ("src", "tgt", "rtl"):
            r: Ragged = getattr(d, part)
            arrays[f"{lang}.{part}.flat"] = r.flat
            arrays[f"{lang}.{part}.offsets"] = r.offsets
    np.savez(tmp / "arrays.npz", **arrays)
    meta = {"v": FORMAT_VERSION, "fingerprint": data.fingerprint, "layout": asdict(data.layout), "report": data.report,
            "languages": list(data.langs)}
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
    with open(tmp / "dev.jsonl", "w", encoding="utf-8") as fh:
        for lang, d in data.langs.items():
            for x, e in d.dev:
                fh.write(json.dumps([lang, x, e], ensure_ascii=False) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def load_cache(folder: Path) -> PreparedData | None:
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
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
            parts = {p: Ragged(arrays[f"{lang}.{p}.flat"], arrays[f"{lang}.{p}.offsets"]) for p in ("src", "tgt", "rtl")}
            langs[lang] = LangData(parts["src"], parts["tgt"], parts["rtl"], dev[lang])
        lay = meta["layout"]
        layout = TokenLayout(**{**lay, "head": tuple(lay["head"]), "tail": tuple(lay["tail"]), "prefix": tuple(lay["prefix"])})
        return PreparedData(langs, layout, meta["report"], meta["fingerprint"])
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt


# ------------------------------------------------------------------ sampling


class Sampler:
    """Language-balanced sampling with an explicit, checkpointable position (one cursor per language)."""

    def __init__(self, sizes: list[int], alpha: float, seed: int) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        w = self.sizes.astype(np.float64) ** alpha
        self.probs = w / w.sum()
        self.seed = seed
        self.cursors = np.zeros(len(sizes), dtype=np.int64)
        self._perm: dict[int, tuple[int, np.ndarray]] = {}

    def _permutation(self, lang: int, epoch: int) -> np.ndarray:
        cached = self._perm.get(lang)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, 1, lang, epoch]).permutation(int(self.sizes[lang])))
            self._perm[lang] = cached
        return cached[1]

    def draw(self, step: int, micro: int, n: int) -> list[tuple[int, int]]:
        """The ``n`` (language, pair index) samples of micro-batch ``micro`` of ``step``; advances the cursors."""
        langs = np.random.default_rng([self.seed, 0, step, micro]).choice(len(self.sizes), size=n, p=self.probs)
        out = []
        for lang in langs.tolist():
            c = int(self.cursors[lang])
            size = int(self.sizes[lang])
            out.append((lang, int(self._permutation(lang, c // size)[c % size])))
            self.cursors[lang] = c + 1
        return out

    def state_dict(self) -> dict:
        return {"cursors": self.cursors.tolist(), "sizes": self.sizes.tolist(), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["sizes"] != self.sizes.tolist() or state["seed"] != self.seed:
            raise ValueError("sampler state does not match the data")
        self.cursors = np.asarray(state["cursors"], dtype=np.int64)


# ------------------------------------------------------------------ batches


@dataclass
class Batch:
    """Padded tensors for one micro-batch on one process."""

    src_ids: torch.Tensor  # (b, Ls) xx encoder input
    src_mask: torch.Tensor  # (b, Ls) 1 = real token
    tgt_ids: torch.Tensor  # (b, Lt) en encoder input
    tgt_mask: torch.Tensor
    rtl_ids: torch.Tensor  # (b, Lr) head + en content (no prefix) + tail: the RTL target sequence
    rtl_mask: torch.Tensor  # (b, Lr) 1 = a position of the target sequence (specials included)
    rtl_label_mask: torch.Tensor  # (b, Lr) True = an English content token to predict
    src_key: torch.Tensor  # (b,) int64 hash of the xx sentence (duplicates are not negatives)
    tgt_key: torch.Tensor  # (b,) int64 hash of the en sentence
    langs: list[str] = field(default_factory=list)

    def to(self, device: torch.device) -> "Batch":
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Batch(**kw)


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _key(a: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(a.tobytes(), digest_size=8).digest(), "little", signed=True)


def make_batch(data: PreparedData, samples: list[tuple[int, int]]) -> Batch:
    """Tensors for ``samples`` [(language index, pair index)], padded to the longest in the batch."""
    lay = data.layout
    langs = data.languages
    src, tgt, rtl, sk, tk, names = [], [], [], [], [], []
    for li, i in samples:
        d = data.langs[langs[li]]
        s, t, r = d.src[i], d.tgt[i], d.rtl[i]
        src.append(lay.wrap(s, with_prefix=False))
        tgt.append(lay.wrap(t, with_prefix=False))
        rtl.append(lay.wrap(r, with_prefix=False))
        sk.append(_key(s))
        tk.append(_key(t))
        names.append(langs[li])
    src_ids, src_mask = _pad(src, lay.pad_id)
    tgt_ids, tgt_mask = _pad(tgt, lay.pad_id)
    rtl_ids, rtl_mask = _pad(rtl, lay.pad_id)
    label = torch.zeros_like(rtl_mask, dtype=torch.bool)
    h = len(lay.head)
    for row, (li, i) in enumerate(samples):
        n = len(data.langs[langs[li]].rtl[i])
        label[row, h : h + n] = True
    return Batch(src_ids, src_mask, tgt_ids, tgt_mask, rtl_ids, rtl_mask, label,
                 torch.tensor(sk, dtype=torch.long), torch.tensor(tk, dtype=torch.long), names)


# ------------------------------------------------------------------ dev sets


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
