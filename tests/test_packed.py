"""The unpadded BERT-family forward: which models it takes and where their positions start.

(Its outputs against the models' own forward, on CPU and GPU, are in ``test_scale`` and ``test_gpu``.)
"""
from __future__ import annotations

import torch

from bitextmine.models.loader import load_model
from bitextmine.packed import PackedForward


def test_builds_for_bert_and_xlmr_with_their_position_offsets(tiny_model, tmp_path) -> None:
    from test_scale import _xlmr_tiny

    bert = PackedForward.build(load_model(str(tiny_model)).model)
    xlmr_model = load_model(str(_xlmr_tiny(tmp_path / "xlmr"))).model
    xlmr = PackedForward.build(xlmr_model)
    assert bert is not None and bert.position_offset == 0
    assert xlmr is not None and xlmr.position_offset == xlmr_model.embeddings.padding_idx + 1 == 2


def test_refuses_what_it_does_not_reproduce(tiny_model) -> None:
    model = load_model(str(tiny_model)).model
    assert PackedForward.build(torch.nn.Linear(2, 2)) is None
    model.config.position_embedding_type = "relative_key"
    assert PackedForward.build(model) is None
    model.config.position_embedding_type = "absolute"
    model.config.hidden_act = "mish"
    assert PackedForward.build(model) is None
    model.config.hidden_act = "gelu"
    model.config.model_type = "gpt2"
    assert PackedForward.build(model) is None


def test_padded_pooling_mean_over_real_tokens_or_first() -> None:
    from bitextmine import encoder
    from bitextmine.packed import pool

    assert encoder.pool is pool  # still importable from its old home
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [6.0, 7.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
