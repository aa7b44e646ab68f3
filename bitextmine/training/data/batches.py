"""Language-balanced sampling and padded micro-batches.

Batches are drawn by :class:`Sampler`: each sample picks a language with probability
proportional to ``pairs ** alpha`` from a generator seeded by (seed, step, micro-batch), then the
next pair of that language's current epoch permutation. Its whole state is one cursor per
language, saved in checkpoints, so a resumed run draws exactly the batches an uninterrupted one
would. :func:`make_batch` turns the drawn samples into padded tensors (:class:`Batch`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from bitextmine.training.data.tokens import PreparedData


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
    neg_ids: torch.Tensor | None = None  # (b * n, Ln) hard-negative English sentences, n per pair in pair order
    neg_mask: torch.Tensor | None = None
    neg_key: torch.Tensor | None = None  # (b * n,) int64 hashes

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
    """Tensors for ``samples`` [(language index, pair index)], padded to the longest in the batch;
    with the pairs' hard-negative English sentences when the data carries them (``LangData.neg``)."""
    lay = data.layout
    langs = data.languages
    src, tgt, rtl, sk, tk, names, neg = [], [], [], [], [], [], []
    for li, i in samples:
        d = data.langs[langs[li]]
        s, t, r = d.src[i], d.tgt[i], d.rtl[i]
        src.append(lay.wrap(s, with_prefix=False))
        tgt.append(lay.wrap(t, with_prefix=False))
        rtl.append(lay.wrap(r, with_prefix=False))
        sk.append(_key(s))
        tk.append(_key(t))
        names.append(langs[li])
        if d.neg is not None:
            neg.extend(d.tgt[int(j)] for j in d.neg[i])
    src_ids, src_mask = _pad(src, lay.pad_id)
    tgt_ids, tgt_mask = _pad(tgt, lay.pad_id)
    rtl_ids, rtl_mask = _pad(rtl, lay.pad_id)
    label = torch.zeros_like(rtl_mask, dtype=torch.bool)
    h = len(lay.head)
    for row, (li, i) in enumerate(samples):
        n = len(data.langs[langs[li]].rtl[i])
        label[row, h : h + n] = True
    batch = Batch(src_ids, src_mask, tgt_ids, tgt_mask, rtl_ids, rtl_mask, label,
                  torch.tensor(sk, dtype=torch.long), torch.tensor(tk, dtype=torch.long), names)
    if neg:
        batch.neg_ids, batch.neg_mask = _pad([lay.wrap(t, with_prefix=False) for t in neg], lay.pad_id)
        batch.neg_key = torch.tensor([_key(t) for t in neg], dtype=torch.long)
    return batch
