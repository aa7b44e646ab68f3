"""Tokenised training data: how the tokenizer wraps a sentence, and flat int32 (ragged) arrays.

:func:`token_layout` probes the model's tokenizer once for its special tokens and the recipe
prefix's ids, so preparation can store sentence *content* only and batches add the specials
back (:meth:`TokenLayout.wrap`). A language's pairs are three :class:`Ragged` arrays (source,
target, RTL labels) in a :class:`LangData`; :class:`PreparedData` is every language plus the
layout, the filter report and the fingerprint that names its cache folder.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bitextmine.errors import ConfigError, InputError


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


@dataclass
class LangData:
    """One language's training pairs (encoder inputs without specials; English RTL targets) and dev pairs."""

    src: Ragged  # xx content ids with prefix, truncated to the content budget
    tgt: Ragged  # en content ids with prefix, truncated likewise
    rtl: Ragged  # en content ids without prefix: the RTL labels (same truncation as tgt)
    dev: list[tuple[str, str]]  # held-out (xx, en) pairs (text)
    neg: np.ndarray | None = None  # (pairs, n) hard-negative English rows per pair (objective.hard_negatives), else None

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class PreparedData:
    langs: dict[str, LangData]
    layout: TokenLayout
    report: dict  # per language: counts of read / dropped by reason / kept / train / dev
    fingerprint: str
    files: dict[str, list[str]] = field(default_factory=dict)  # per language: the TSV files read (absolute paths)

    @property
    def languages(self) -> list[str]:
        return list(self.langs)

    def english_vocab(self) -> np.ndarray:
        """Sorted token ids occurring in the RTL targets (English side) of the training pairs."""
        ids = np.unique(np.concatenate([d.rtl.flat for d in self.langs.values()]))
        return ids.astype(np.int64)

    def content_digests(self) -> dict[str, str]:
        """Per language, a digest of what training reads (token arrays, dev pairs) and of the layout:
        equal digests mean equal training data, whatever the files' names or modification times."""
        lay = repr(self.layout).encode()
        out = {}
        for lang, d in self.langs.items():
            h = hashlib.blake2b(lay, digest_size=16)
            for r in (d.src, d.tgt, d.rtl):
                for a in (r.flat, r.offsets):
                    h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
            for x, e in d.dev:
                h.update(x.encode("utf-8", "surrogatepass") + b"\t" + e.encode("utf-8", "surrogatepass") + b"\n")
            out[lang] = h.hexdigest()
        return out
