"""The unpadded forward of BERT-family encoders (BERT, XLM-R, RoBERTa with absolute positions).

The linear layers, which hold nearly all the FLOPs, see only real tokens; only attention works on
padded slots, several short sentences sharing one slot row (block-diagonal mask) because batched
products of tiny matrices are slow on CPUs. :class:`bitextmine.encoder.Encoder` uses it wherever
:meth:`PackedForward.build` accepts the model and runs the model's own padded forward otherwise.
(:func:`pool` pools that padded forward's token states.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bitextmine.models import arch

_ACTIVATIONS = {
    "gelu": lambda x: torch.nn.functional.gelu(x),
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
    "swish": torch.nn.functional.silu,
}
#: Attention rows shorter than this hold several sentences (batched tiny matrix products are slow).
ATTENTION_ROW = 16
#: Token counts of the packed matrix are rounded up to a multiple of this (few distinct shapes).
ROW_BUCKET = 32


@dataclass
class _Layer:
    q: torch.nn.Linear
    k: torch.nn.Linear
    v: torch.nn.Linear
    o: torch.nn.Linear
    ln1: torch.nn.LayerNorm
    up: torch.nn.Linear
    down: torch.nn.Linear
    ln2: torch.nn.LayerNorm


class PackedForward:
    """The forward pass of a BERT-family encoder on real tokens only, with pooling.

    Token states are kept as one (tokens, hidden) matrix for the embeddings, every linear layer,
    the layer norms and the activation, so padding costs nothing there. Attention scatters the
    tokens into rows of ``G x longest`` slots, ``G = ceil(16 / longest)`` sentences per row with
    a block-diagonal mask (one sentence per row once sentences have 16 tokens or more); scaling,
    mask and softmax are in float32. Row counts are rounded up (tokens to a multiple of
    :data:`ROW_BUCKET`, attention rows to a multiple of 8) with empty rows that no real token
    sees, so that the kernels meet few distinct shapes. On the CPU, attention is batched matrix
    products with an additive float32 mask; on an accelerator it is PyTorch's fused
    scaled-dot-product attention with a boolean mask broadcast over heads. The module's weights are used in place
    (no copies), so a model that keeps training is always seen as it is now.

    :meth:`build` returns None for anything it does not reproduce exactly (other architectures,
    relative positions, decoders, unknown activations); the caller then runs the model's own
    forward on padded batches.
    """

    def __init__(self, model: torch.nn.Module, act, position_offset: int) -> None:
        cfg = model.config
        emb = model.embeddings
        self.word, self.position, self.token_type = emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings
        self.ln0 = emb.LayerNorm
        self.position_offset = position_offset
        self.heads = int(cfg.num_attention_heads)
        self.hidden = int(cfg.hidden_size)
        self.head_dim = self.hidden // self.heads
        self.act = act
        self.layers = [
            _Layer(l.attention.self.query, l.attention.self.key, l.attention.self.value, l.attention.output.dense,
                   l.attention.output.LayerNorm, l.intermediate.dense, l.output.dense, l.output.LayerNorm)
            for l in model.encoder.layer
        ]

    @classmethod
    def build(cls, model: torch.nn.Module) -> "PackedForward | None":
        cfg = getattr(model, "config", None)
        if cfg is None or not arch.is_bert_family(cfg):
            return None
        if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
            return None
        if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
            return None
        act = _ACTIVATIONS.get(getattr(cfg, "hidden_act", None)) if isinstance(getattr(cfg, "hidden_act", None), str) else None
        if act is None or cfg.hidden_size % cfg.num_attention_heads:
            return None
        try:
            built = cls(model, act, arch.position_offset(cfg))
        except (AttributeError, TypeError):
            return None
        for layer in built.layers:
            for lin in (layer.q, layer.k, layer.v, layer.o, layer.up, layer.down):
                if not isinstance(lin, torch.nn.Linear):
                    return None
            for ln in (layer.ln1, layer.ln2):
                if not isinstance(ln, torch.nn.LayerNorm):
                    return None
        if not isinstance(built.ln0, torch.nn.LayerNorm) or built.head_dim * built.heads != built.hidden:
            return None
        return built

    def __call__(self, seqs: list[list[int]], pooling: str, device: torch.device) -> torch.Tensor:
        """(len(seqs), hidden) float32 pooled states of the token id lists ``seqs``."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        n, total = len(seqs), int(lengths.sum())
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        seg = np.repeat(np.arange(n), lengths)  # sentence of each token
        local = np.arange(total) - starts[seg]  # position of each token in its sentence
        ids = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=total)

        longest = int(lengths.max())
        group = 1 if longest >= ATTENTION_ROW else -(-ATTENTION_ROW // longest)
        rows = -(-n // group)
        rows, width = -(-rows // 8) * 8, group * longest  # rows rounded up to a multiple of 8: few distinct shapes
        slot = (seg // group) * width + (seg % group) * longest + local  # token -> attention slot
        owner = np.full(rows * width, -1, dtype=np.int64)
        owner[slot] = seg
        owner = owner.reshape(rows, width)

        as_t = torch.from_numpy
        ids_t, pos_t, slot_t = as_t(ids), as_t(local + self.position_offset), as_t(slot)
        on_cpu = device.type == "cpu"
        if on_cpu:  # additive float32 mask, one copy per head (bmm path below)
            allowed = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0)
            mask = torch.zeros(allowed.shape, dtype=torch.float32)
            mask.masked_fill_(~as_t(allowed), torch.finfo(torch.float32).min)
            mask = mask.unsqueeze(1).expand(rows, self.heads, width, width).reshape(rows * self.heads, width, width)
        else:  # boolean (rows, 1, width, width) mask built on the device, broadcast over heads by SDPA
            ids_t, pos_t, slot_t, owner_t = (t.to(device, non_blocking=True) for t in (ids_t, pos_t, slot_t, as_t(owner)))
            mask = ((owner_t[:, :, None] == owner_t[:, None, :]) & (owner_t[:, None, :] >= 0)).unsqueeze(1)
        if rows * width == total:  # no empty slot: tokens are already in slot order
            slot_t = None
        attention = self._attention if on_cpu else self._attention_sdpa

        F = torch.nn.functional
        x = self.word(ids_t) + self.position(pos_t) + self.token_type.weight[0]
        x = F.layer_norm(x, self.ln0.normalized_shape, self.ln0.weight, self.ln0.bias, self.ln0.eps)
        # Round the token count up to a multiple of ROW_BUCKET with empty rows: the linear layers then
        # see few distinct shapes (oneDNN keeps kernels per shape; an unbounded variety of shapes grew
        # memory by ~0.4 MB per thousand sentences in bf16).
        padded = -(-total // ROW_BUCKET) * ROW_BUCKET
        if padded != total:
            x = F.pad(x, (0, 0, 0, padded - total))
        scale = self.head_dim ** -0.5
        for L in self.layers:
            q, k, v = L.q(x), L.k(x), L.v(x)
            ctx = attention(q[:total], k[:total], v[:total], slot_t, rows, width, mask, scale)
            if padded != total:
                ctx = F.pad(ctx, (0, 0, 0, padded - total))
            a = L.o(ctx).add_(x)
            x = F.layer_norm(a, L.ln1.normalized_shape, L.ln1.weight, L.ln1.bias, L.ln1.eps)
            y = L.down(self.act(L.up(x))).add_(x)
            x = F.layer_norm(y, L.ln2.normalized_shape, L.ln2.weight, L.ln2.bias, L.ln2.eps)

        x = x[:total].float()
        if pooling == "cls":
            return x[as_t(starts).to(device)]
        # Mean pooling as a sum over each sentence's own slots (sentence s owns slots s*longest ..
        # s*longest+longest-1): deterministic, unlike index_add_ with CUDA atomics, so a resumed
        # job writes the same bytes as an uninterrupted one on a GPU too.
        sums = self._scatter(x, slot_t, rows, width).view(rows * group, longest, self.hidden)[:n].sum(1)
        return sums / as_t(lengths).to(device=device, dtype=torch.float32).unsqueeze(1)

    def _scatter(self, t: torch.Tensor, slot, rows: int, width: int) -> torch.Tensor:
        """(tokens, hidden) -> (rows, width, hidden) attention slots, zeros where no token sits."""
        if slot is None:  # every slot holds a token, in order: no scatter needed
            return t.view(rows, width, self.hidden)
        buf = t.new_zeros((rows * width, self.hidden))
        buf.index_copy_(0, slot, t)
        return buf.view(rows, width, self.hidden)

    def _attention_sdpa(self, q, k, v, slot, rows, width, mask, scale) -> torch.Tensor:
        """Accelerator attention: PyTorch's fused scaled-dot-product kernels with the boolean block mask."""
        h, d = self.heads, self.head_dim

        def heads(t: torch.Tensor) -> torch.Tensor:  # (tokens, hidden) -> (rows, heads, width, d)
            return self._scatter(t, slot, rows, width).view(rows, width, h, d).transpose(1, 2)

        ctx = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask, scale=scale)
        ctx = ctx.transpose(1, 2).reshape(rows * width, self.hidden)
        return ctx if slot is None else ctx.index_select(0, slot)

    def _attention(self, q, k, v, slot, rows, width, mask, scale) -> torch.Tensor:
        """Multi-head attention of packed (tokens, hidden) q, k, v within each sentence (CPU)."""
        h, d, hid = self.heads, self.head_dim, self.hidden

        def heads(t: torch.Tensor, dtype) -> torch.Tensor:  # (tokens, hidden) -> (rows*heads, width, d)
            return self._scatter(t.to(dtype), slot, rows, width).view(rows, width, h, d).transpose(1, 2).reshape(rows * h, width, d)

        if q.dtype == torch.float32:
            scores = torch.baddbmm(mask, heads(q, q.dtype), heads(k, k.dtype).transpose(1, 2), alpha=scale)
        else:  # products in the compute dtype (fp32 accumulation), scaling, mask and softmax in fp32
            scores = torch.bmm(heads(q, q.dtype), heads(k, k.dtype).transpose(1, 2)).float().mul_(scale).add_(mask)
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        ctx = torch.bmm(probs, heads(v, v.dtype))  # (rows*heads, width, d)
        ctx = ctx.view(rows, h, width, d).transpose(1, 2).reshape(rows * width, hid)
        return ctx if slot is None else ctx.index_select(0, slot)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Padded (batch, len, hidden) token states -> (batch, hidden) by mean over real tokens or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
