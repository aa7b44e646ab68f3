"""The two DAP losses as pure functions on tensors, and the learning-rate schedule.

* Translation ranking (TR): in-batch softmax over cosine similarities divided by a temperature,
  the positive being the aligned translation; optional additive margin on the positive's cosine
  (LaBSE's AMS; the released DAP code subtracts its margin after the temperature scaling instead,
  and sets it to 0). Candidates can be gathered from every process, so each query row is scored
  against the whole global batch; ``offset`` says where the local rows sit in it.
* Representation translation learning (RTL): token-level cross-entropy of the head's predictions
  against the English token ids, returned as a sum and a count so that processes and
  micro-batches can be averaged over tokens exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(queries: torch.Tensor, candidates: torch.Tensor, *, temperature: float = 0.05, margin: float = 0.0,
                 offset: int = 0, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each query against all candidates; query i's positive is candidate offset + i.

    queries (b, d), candidates (n, d), n >= offset + b; vectors need not be normalised (cosine is
    used). ``exclude`` (b, n) bool marks candidates that are not negatives (e.g. another copy of
    the same sentence); they are removed from the softmax. The positive is never excluded.
    """
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    cos = q @ c.T  # (b, n)
    rows = torch.arange(q.shape[0], device=q.device)
    labels = rows + offset
    if margin:
        cos = cos - margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
    logits = cos / temperature
    if exclude is not None:
        exclude = exclude.clone()
        exclude[rows, labels] = False
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, labels)


def translation_ranking_loss(src: torch.Tensor, tgt: torch.Tensor, *, temperature: float = 0.05, margin: float = 0.0,
                             direction: str = "forward", all_src: torch.Tensor | None = None, all_tgt: torch.Tensor | None = None,
                             offset: int = 0, src_keys: torch.Tensor | None = None, tgt_keys: torch.Tensor | None = None,
                             all_src_keys: torch.Tensor | None = None, all_tgt_keys: torch.Tensor | None = None) -> torch.Tensor:
    """TR loss of local pairs (src[i], tgt[i]) against the global batch.

    ``forward``: each source (xx) sentence retrieves its translation among all targets (en);
    ``both``: the mean of that and the reverse. ``all_src``/``all_tgt`` are the embeddings of the
    whole global batch (default: the local ones), with the local rows at ``offset``. When keys
    (one int64 per sentence) are given, candidates whose key equals the query pair's own
    candidate key are duplicates of the positive and are not counted as negatives.
    """
    all_src = src if all_src is None else all_src
    all_tgt = tgt if all_tgt is None else all_tgt
    ex_f = ex_b = None
    if tgt_keys is not None:
        all_tgt_keys = tgt_keys if all_tgt_keys is None else all_tgt_keys
        ex_f = tgt_keys[:, None] == all_tgt_keys[None, :]
    if src_keys is not None:
        all_src_keys = src_keys if all_src_keys is None else all_src_keys
        ex_b = src_keys[:, None] == all_src_keys[None, :]
    loss = ranking_loss(src, all_tgt, temperature=temperature, margin=margin, offset=offset, exclude=ex_f)
    if direction == "forward":
        return loss
    if direction == "both":
        back = ranking_loss(tgt, all_src, temperature=temperature, margin=margin, offset=offset, exclude=ex_b)
        return (loss + back) / 2
    raise ValueError(f"direction must be forward or both, not {direction!r}")


def rtl_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies, number of tokens) for logits (t, V) and target indices (t,) in [0, V)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The learning-rate schedule: linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
