"""Shared fixtures: tiny transformer models built here (fast, offline) and paths to real data."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORDS = (
    "the cat dog house tree river mountain city car train book paper water fire light night day sun moon "
    "star green red blue small large old new open close read write run walk eat drink see hear speak "
    "der die das haus baum fluss stadt auto buch wasser licht nacht tag sonne mond "
    "le la les maison arbre rivière ville voiture livre eau feu lumière nuit jour soleil lune "
    "кот собака дом дерево река город машина книга вода огонь свет ночь день солнце луна "
    "猫 狗 房子 树 河 城市 汽车 书 水 火 光 夜 日 太阳 月亮"
).split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct pseudo-sentences of 3-12 words drawn from a small multilingual vocabulary."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def build_tiny_model(folder: Path, *, seed: int = 0, hidden: int = 32, recipe: dict | None = None, sentence_transformers: bool = False) -> Path:
    """A 2-layer BERT with a Unigram tokenizer trained on :data:`WORDS`, saved like a real model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.train_from_iterator(make_sentences(400, seed=1) + WORDS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>"))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=64)
    tf_dir = folder / "0_Transformer" if sentence_transformers else folder
    fast.save_pretrained(str(tf_dir))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tk.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64, pad_token_id=1)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(tf_dir))
    if sentence_transformers:
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        (tf_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
        (folder / "2_Normalize").mkdir()
    elif recipe is not None:
        (folder / "bitextmine_recipe.json").write_text(json.dumps(recipe))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), recipe={"pooling": "mean", "prefix": "", "max_tokens": 32, "normalize": True, "name": "tiny"})


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different fingerprint."""
    return build_tiny_model(tmp_path_factory.mktemp("tinyb"), seed=1, recipe={"pooling": "mean", "prefix": "", "max_tokens": 32, "normalize": True, "name": "tiny-b"})


def need_shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (the project's ../shared/data folder); skipping")
    return p


@pytest.fixture(scope="session")
def enc(tiny_model):
    """An fp32 encoder over :func:`tiny_model` (shared by the tests of the pipeline)."""
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    return Encoder(load_model(str(tiny_model)), precision="fp32")


@pytest.fixture
def corpus(tmp_path):
    """A 230-sentence text file with blank lines every 50 sentences: (path, sentences)."""
    p = tmp_path / "corpus.txt"
    sents = make_sentences(230, seed=5)
    lines = []
    for i, s in enumerate(sents):
        lines.append(s)
        if i % 50 == 0:
            lines.append("")  # blank lines must not shift line numbers
    p.write_text("\n".join(lines) + "\n")
    return p, sents


def one_line_error(res) -> str:
    """A failed CLI run (typer's CliRunner result): a single 'error:' line, no traceback, a non-zero
    exit code other than 1 (1 is an uncaught exception). Returns the line."""
    assert res.exit_code not in (0, 1), res.output + repr(res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]
