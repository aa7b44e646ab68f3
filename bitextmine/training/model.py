"""The training-time model: a shared-weight dual encoder, the optional MLP, and the optional RTL head.

One forward pass encodes both sides of a batch with the same encoder, pools each sentence
(mean or [CLS], the recipe's), and — when RTL is on — runs the head on the source side's token
states. The ranking loss is computed outside (it needs the embeddings of every process); this
module returns what it needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bitextmine.encoder import pool
from bitextmine.training.data.batches import Batch
from bitextmine.training.losses import rtl_loss_sum
from bitextmine.training.rtl import RTLHead


@dataclass
class Outputs:
    src: torch.Tensor  # (b, d) source sentence vectors for the TR loss (after the MLP when on)
    tgt: torch.Tensor  # (b, d)
    rtl_sum: torch.Tensor | None  # summed token cross-entropy of the RTL head
    rtl_tokens: int
    neg: torch.Tensor | None = None  # (b * n, d) hard-negative English vectors, when the batch has them


class DualEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str, *, pad_id: int = 0, mlp: bool = False, head: RTLHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.pad_id = int(pad_id)
        hidden = int(encoder.config.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) if mlp else None
        self.head = head

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states (b, L, h), pooled (b, h) float32)."""
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return states, pool(states.float(), mask, self.pooling)

    def forward(self, batch: Batch) -> Outputs:
        # one encoder call over both sides (and the hard negatives): the same weights, and one larger matmul is faster
        blocks = [(batch.src_ids, batch.src_mask), (batch.tgt_ids, batch.tgt_mask)]
        if batch.neg_ids is not None:
            blocks.append((batch.neg_ids, batch.neg_mask))
        ls = batch.src_ids.shape[1]
        width = max(ids.shape[1] for ids, _ in blocks)
        ids = torch.cat([_pad_to(i, width, self.pad_id) for i, _ in blocks])
        mask = torch.cat([_pad_to(m, width, 0) for _, m in blocks])
        states, pooled = self.encode(ids, mask)
        b = batch.src_ids.shape[0]
        src, tgt, neg = pooled[:b], pooled[b : 2 * b], (pooled[2 * b :] if len(blocks) == 3 else None)
        if self.mlp is not None:
            src, tgt = self.mlp(src), self.mlp(tgt)
            neg = self.mlp(neg) if neg is not None else None
        rtl_sum, n = None, 0
        if self.head is not None:
            logits, targets = self.head(states[:b, :ls], batch.src_mask, batch.rtl_ids, batch.rtl_mask, batch.rtl_label_mask)
            rtl_sum, n = rtl_loss_sum(logits, targets)
        return Outputs(src, tgt, rtl_sum, n, neg)


def _pad_to(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if x.shape[1] == width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (modules and the config fields attention reads)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        cfg = getattr(m, "config", None)
        if cfg is not None:
            for k in list(vars(cfg)):
                if "dropout" in k and isinstance(getattr(cfg, k), float):
                    setattr(cfg, k, 0.0)
