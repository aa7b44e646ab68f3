"""Data preparation: read, filter, split and tokenise every language once, or load it from the cache.

Preparation tokenises every pair once with the model's tokenizer, applies the filters of the DAP
data script (and counts each reason), removes duplicate pairs, shuffles, holds out a dev split per
language and caps the rest; the result is cached as flat int32 arrays keyed by a fingerprint of
the files, the tokenizer and the settings, so a resumed or repeated run skips the work.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bitextmine.errors import InputError
from bitextmine.events import Listener, emit
from bitextmine.fs import file_identity
from bitextmine.training.config import DataConfig
from bitextmine.training.data.cache import FORMAT_VERSION, discard, load_cache, save_cache
from bitextmine.training.data.pairs import filter_reason, find_train_files, read_tsv
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout, token_layout


def data_fingerprint(files: dict[str, list[Path]], cfg: DataConfig, tokenizer_id: str, prefix: str, seed: int) -> str:
    payload = {
        "v": FORMAT_VERSION,
        "files": {lang: [file_identity(p) for p in ps] for lang, ps in files.items()},
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
    """Filter, deduplicate, shuffle, split and tokenise one language's pairs (``counts`` is updated in place)."""
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
                 progress: Listener | None = None) -> PreparedData:
    """Read, filter, split and tokenise the training files (or load them from ``cache_dir``).

    Emits one ``data`` event per language: ``lang`` and that language's counts (``read``, each
    drop reason that occurred, ``kept``, ``dev``, ``train``).
    """
    files = find_train_files(cfg.train, cfg.languages)
    fp = data_fingerprint(files, cfg, tokenizer_id, prefix, seed)
    sources = {lang: [str(Path(p).resolve()) for p in ps] for lang, ps in files.items()}
    use_cache = cache_dir is not None and cfg.cache
    if use_cache:
        existed = (cache_dir / fp).exists()
        cached = load_cache(cache_dir / fp)
        if cached is not None:
            cached.files = sources
            return cached
        if existed:
            discard(cache_dir / fp)  # damaged: rebuilt below
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
        emit(progress, "data", lang=lang, **counts)
    assert layout is not None
    empty = [lang for lang, d in langs.items() if len(d) == 0]
    if empty:
        raise InputError(f"data: no training pairs left after filtering for {', '.join(empty)}")
    data = PreparedData(langs, layout, report, fp, sources)
    if use_cache:
        save_cache(data, cache_dir / fp)
    return data
