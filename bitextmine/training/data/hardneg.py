"""Hard negatives: English sentences the starting model places next to a source sentence that are not its translation.

In-batch negatives are random sentences of the training domain, so a model trained on them learns
"same domain, similar words" as much as "translation": near-misses of its own domain ("Play first
500 ms of selection" for "Letzte 500ms der Auswahl abspielen") then score above true pairs. For each
training pair this module mines, with the starting encoder and our own exact k-NN search
(:func:`bitextmine.knn.knn`), English sentences of the same language that are close to the source
sentence, and the ranking loss scores the source against them as extra candidates.

Per language, a pool of the first ``pool`` training pairs (the prepared order is a seeded shuffle)
is embedded on both sides; each source's nearest English sentences in the pool are walked in order
and a candidate is kept unless it is the same text as the pair's English after normalisation (case,
punctuation, accelerator marks: "Save As..." = "Save as") or the model already scores it at least
as high as the true translation (likely a paraphrase or a wrong pair rather than a near-miss).
``n`` negatives are drawn (seeded) from the first ``depth`` kept candidates. Training then samples
from the pools only (:func:`restrict`), since only they have negatives.

The result depends only on the data, the starting weights and the settings, so it is cached beside
the prepared data (one ``.npz`` per key, published atomically) and shared by runs that start from
the same model: a TR-only and a DAP run of an ablation train on the same negatives.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bitextmine import fs
from bitextmine.encoder import pool as pool_states
from bitextmine.training.data.batches import _pad
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout

VERSION = 1


def normalise(text: str) -> str:
    """Case-folded letters and digits only: strings that differ by punctuation, spacing or accelerators compare equal.

    Not :func:`bitextmine.filters.rules.normalise` (the dedup form), which maps every digit to 0: "Play first 500 ms"
    and "Play first 100 ms" are different translations, exactly the near-misses a hard negative should be."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def pool_size(data: PreparedData, lang: str, pool: int) -> int:
    return min(pool, len(data.langs[lang]))


@torch.no_grad()
def embed_ids(encoder: torch.nn.Module, pooling: str, layout: TokenLayout, seqs: Ragged, rows: np.ndarray,
              batch: int = 256) -> np.ndarray:
    """L2-normalised float32 sentence vectors of ``seqs[rows]`` (content ids with prefix) from ``encoder``,
    fed exactly as training feeds them (same specials, truncation and padding)."""
    was = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        order = sorted(range(len(rows)), key=lambda r: len(seqs[int(rows[r])]))  # similar lengths together: less padding
        out = np.empty((len(rows), int(encoder.config.hidden_size)), dtype=np.float32)
        for s in range(0, len(order), batch):
            part = order[s : s + batch]
            ids, mask = _pad([layout.wrap(seqs[int(rows[r])], with_prefix=False) for r in part], layout.pad_id)
            states = encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            vec = torch.nn.functional.normalize(pool_states(states.float(), mask.to(device), pooling), dim=-1)
            out[part] = vec.cpu().numpy()
        return out
    finally:
        encoder.train(was)


def choose(sims: np.ndarray, ids: np.ndarray, positive: np.ndarray, texts: list[str], n: int, depth: int,
           rng: np.random.Generator) -> np.ndarray:
    """Per query row i (whose translation is pool row i): ``n`` negatives drawn from the first ``depth``
    valid neighbours in ``ids[i]`` (not row i, not the same normalised text, scored below ``positive[i]``);
    rows with too few valid neighbours are topped up with random other rows. Returns (rows, n) int64."""
    rows = len(ids)
    out = np.empty((rows, n), dtype=np.int64)
    for i in range(rows):
        valid = [int(j) for j, s in zip(ids[i], sims[i])
                 if j >= 0 and j != i and s < positive[i] and texts[j] != texts[i]][:depth]
        while len(valid) < n:  # a tiny pool: any other row
            j = int(rng.integers(rows))
            if j != i and (rows <= n + 1 or j not in valid):
                valid.append(j)
        out[i] = rng.choice(valid, size=n, replace=False) if len(valid) > n else valid[:n]
    return out


def mine(data: PreparedData, embed: Callable[[Ragged, np.ndarray], np.ndarray], decode: Callable[[np.ndarray], str],
         n: int, pool: int, depth: int, seed: int, progress: Callable[[str, int], None] | None = None) -> dict[str, np.ndarray]:
    """Per language: (pool rows, n) indices of hard-negative English sentences within the language's pool."""
    from bitextmine.knn import knn

    out = {}
    for li, lang in enumerate(data.languages):
        d = data.langs[lang]
        rows = np.arange(pool_size(data, lang, pool))
        x, e = embed(d.src, rows), embed(d.tgt, rows)
        k = min(len(rows), 4 * depth + 8)
        sims, ids = knn(x, e, k, "flat")
        positive = np.einsum("ij,ij->i", x, e)
        texts = [normalise(decode(d.rtl[int(r)])) for r in rows]
        out[lang] = choose(sims, ids, positive, texts, n, depth, np.random.default_rng([seed, 11, li]))
        if progress is not None:
            progress(lang, len(rows))
    return out


def cache_key(data: PreparedData, base_fingerprint: str, n: int, pool: int, depth: int, seed: int) -> str:
    payload = {"v": VERSION, "data": data.fingerprint, "base": base_fingerprint, "n": n, "pool": pool, "depth": depth, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load(path: Path, data: PreparedData, n: int, pool: int) -> dict[str, np.ndarray] | None:
    """The cached negatives at ``path`` when they fit ``data`` (every language, right shapes), else None."""
    try:
        with np.load(path) as z:
            negs = {lang: z[lang] for lang in data.languages}
    except (OSError, KeyError, ValueError, EOFError):
        return None
    for lang, a in negs.items():
        m = pool_size(data, lang, pool)
        if a.shape != (m, n) or a.dtype != np.int64 or (m and (a.min() < 0 or a.max() >= m)):
            return None
    return negs


def save(path: Path, negs: dict[str, np.ndarray]) -> None:
    """Publish the negatives at ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with fs.atomic_writer(path, "wb", encoding=None) as fh:
        np.savez(fh, **negs)


def restrict(data: PreparedData, negs: dict[str, np.ndarray], pool: int) -> PreparedData:
    """``data`` with each language cut to its pool and carrying its negatives (``LangData.neg``)."""
    langs = {}
    for lang, d in data.langs.items():
        rows = range(pool_size(data, lang, pool))
        cut = {p: Ragged.from_lists([getattr(d, p)[i].tolist() for i in rows]) for p in ("src", "tgt", "rtl")}
        langs[lang] = LangData(cut["src"], cut["tgt"], cut["rtl"], d.dev, negs[lang])
    return PreparedData(langs, data.layout, data.report, data.fingerprint, data.files)
