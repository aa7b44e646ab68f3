"""Facts about transformer architectures that several modules rely on, in one place.

The BERT family (BERT, XLM-R, RoBERTa, CamemBERT) shares one layout: ``embeddings`` (word, position,
token type, LayerNorm) and ``encoder.layer`` blocks. RoBERTa-style models number positions from
``padding_idx + 1``, so they have two fewer usable positions than ``max_position_embeddings``.
"""
from __future__ import annotations

from typing import Any

#: ``config.model_type`` values with the BERT layout (the unpadded forward, the RTL head and
#: ``add_pooling_layer=False`` all rely on it).
BERT_FAMILY = ("bert", "xlm-roberta", "roberta", "camembert")
#: The BERT-family members whose positions start after the padding index.
ROBERTA_LIKE = ("xlm-roberta", "roberta", "camembert")


def model_type(config: Any) -> str:
    return str(getattr(config, "model_type", "") or "")


def is_bert_family(config_or_type: Any) -> bool:
    """True for a config (or a ``model_type`` string) of the BERT family."""
    mt = config_or_type if isinstance(config_or_type, str) else model_type(config_or_type)
    return mt in BERT_FAMILY


def position_offset(config: Any) -> int:
    """Index of the first position embedding a sentence uses (RoBERTa-family models start after padding)."""
    return int(config.pad_token_id) + 1 if model_type(config) in ROBERTA_LIKE else 0


def max_positions(config: Any) -> int | None:
    """How many tokens a sentence may have, from ``max_position_embeddings`` less the position offset."""
    n = getattr(config, "max_position_embeddings", None)
    if not n:
        return None
    return int(n) - (2 if model_type(config) in ROBERTA_LIKE else 0)
