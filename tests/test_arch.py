"""Architecture facts: the BERT family, where positions start, how many tokens fit."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bitextmine.models import arch


@pytest.mark.parametrize("mt", ["bert", "xlm-roberta", "roberta", "camembert"])
def test_bert_family_from_a_config_or_its_type(mt) -> None:
    assert arch.is_bert_family(mt)
    assert arch.is_bert_family(SimpleNamespace(model_type=mt))


@pytest.mark.parametrize("thing", ["gpt2", "distilbert", "", SimpleNamespace(), SimpleNamespace(model_type=None), None])
def test_other_architectures_are_not_bert_family(thing) -> None:
    assert not arch.is_bert_family(thing)


def test_position_offset_and_max_positions() -> None:
    bert = SimpleNamespace(model_type="bert", pad_token_id=0, max_position_embeddings=512)
    xlmr = SimpleNamespace(model_type="xlm-roberta", pad_token_id=1, max_position_embeddings=514)
    assert (arch.position_offset(bert), arch.max_positions(bert)) == (0, 512)
    assert (arch.position_offset(xlmr), arch.max_positions(xlmr)) == (2, 512)  # positions 2..513
    assert arch.max_positions(SimpleNamespace(model_type="gpt2")) is None


def test_matches_real_transformers_configs() -> None:
    from transformers import BertConfig, XLMRobertaConfig

    assert arch.position_offset(BertConfig()) == 0 and arch.max_positions(BertConfig()) == 512
    x = XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert arch.is_bert_family(x) and arch.position_offset(x) == 2 and arch.max_positions(x) == 512
