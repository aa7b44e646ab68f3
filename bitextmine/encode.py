"""Texts to embeddings: token-budget batches of length-sorted sentences, order restored.

Sorting by length before batching means each batch pads to a similar length, so little compute
is spent on padding; a token budget (rather than a fixed batch size) keeps each batch's memory
and latency similar whether sentences are short or long.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from bitextmine.models.loader import LoadedModel

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 pays off."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``precision`` on ``device`` ("auto": bf16/fp16 on CUDA, bf16 on CPUs that support it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class EncodeStats:
    sentences: int = 0
    tokens: int = 0  # real tokens fed to the model, special tokens included
    padded_tokens: int = 0  # tokens including padding
    truncated: int = 0  # sentences cut at max_tokens


class Encoder:
    """Embeds lists of sentences with a loaded model and its recipe.

    ``token_budget`` bounds batch size x padded length; ``precision`` picks the autocast dtype.
    Output: float32 (n, dim), L2-normalised when the recipe says so, in input order.
    """

    def __init__(self, lm: LoadedModel, *, precision: str = "auto", token_budget: int | None = None) -> None:
        self.lm = lm
        self.device = next(lm.model.parameters()).device
        self.dtype = resolve_precision(precision, self.device)
        self.token_budget = token_budget or (65536 if self.device.type == "cuda" else 8192)
        self.stats = EncodeStats()
        tok = lm.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    @property
    def dim(self) -> int:
        return self.lm.dim

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text with the recipe's prefix and special tokens, truncated to max_tokens.

        Tokenising one token past the limit tells truncated sentences apart from ones that fit
        exactly; a truncated sentence keeps its final special token.
        """
        r = self.lm.recipe
        texts = [r.prefix + t for t in texts] if r.prefix else texts
        ids = self.lm.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=r.max_tokens + 1,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        out = []
        for seq in ids:
            if len(seq) > r.max_tokens:
                seq = seq[: r.max_tokens - 1] + seq[-1:]
                self.stats.truncated += 1
            out.append(seq)
        return out

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Split indices, sorted by length (longest first), into batches within the token budget."""
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            size = max(1, self.token_budget // max(longest, 1))
            out.append(order[start : start + size])
            start += size
        return out

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: float32 array (len(texts), dim) in the same order."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids))
        for idx in self.batches(lengths):
            out[idx] = self._forward([ids[i] for i in idx])
        self.stats.sentences += len(texts)
        self.stats.tokens += int(lengths.sum())
        return out

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, : len(s)] = 1
        self.stats.padded_tokens += input_ids.numel()
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            hidden = self.lm.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        emb = pool(hidden.float(), mask, self.lm.recipe.pooling)
        if self.lm.head is not None:
            emb = self.lm.head(emb)
        if self.lm.recipe.normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu().numpy()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, len, hidden) token states -> (batch, hidden) by mean over real tokens or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def encode_texts(lm: LoadedModel, texts: list[str], **kw) -> np.ndarray:
    """Convenience: embed a list of sentences with ``lm`` (see :class:`Encoder`)."""
    return Encoder(lm, **kw).encode(texts)
