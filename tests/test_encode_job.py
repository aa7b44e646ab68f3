"""The resumable encode job and the Arrow store it writes."""
import json

import numpy as np
import pytest
from conftest import make_sentences

from bitextmine.encode_job import EncodeOptions, encode_corpus
from bitextmine.encoder import Encoder
from bitextmine.errors import InputError, MismatchError, StoreError
from bitextmine.models.loader import load_model
from bitextmine.store import EmbeddingStore


def test_interrupted_encode_resumes_identically(enc, corpus, tmp_path, monkeypatch):
    p, _ = corpus
    opts = EncodeOptions(shard_size=60, chunk_size=16)
    encode_corpus([str(p)], tmp_path / "full", enc, opts)

    calls = {"n": 0}
    real = enc.encode_ids

    def crash_on_10th(ids):
        calls["n"] += 1
        if calls["n"] == 10:  # in the middle of the third shard
            raise KeyboardInterrupt
        return real(ids)

    monkeypatch.setattr(enc, "encode_ids", crash_on_10th)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus([str(p)], tmp_path / "part", enc, opts)
    m = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert not m["complete"] and len(m["shards"]) == 2
    assert not [p for p in (tmp_path / "part").iterdir() if ".tmp" in p.name]  # the shard in progress was discarded
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore(tmp_path / "part")
    monkeypatch.setattr(enc, "encode_ids", real)
    s = encode_corpus([str(p)], tmp_path / "part", enc, opts)
    assert s.resumed_shards == 2 and s.encoded == 230 - 120
    for f in sorted((tmp_path / "full").glob("shard-*.arrow")):
        assert f.read_bytes() == (tmp_path / "part" / f.name).read_bytes()
    a = json.loads((tmp_path / "full" / "manifest.json").read_text())
    b = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert a["shards"] == b["shards"] and a["count"] == b["count"]


def _same_folder(a, b) -> None:
    """Two embedding folders hold byte-identical shards and the same manifest (but for the inputs' identity)."""
    names = sorted(f.name for f in a.iterdir())
    assert names == sorted(f.name for f in b.iterdir())
    for n in names:
        if n != "manifest.json":
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    ma, mb = (json.loads((x / "manifest.json").read_text()) for x in (a, b))
    ma.pop("inputs"), mb.pop("inputs")
    assert ma == mb


def test_rerun_after_an_edit_reencodes_from_the_first_changed_shard(enc, corpus, tmp_path):
    p, sents = corpus
    out = tmp_path / "emb"
    encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    p.write_text(p.read_text().replace(sents[150], "an edited sentence"))  # in the second shard
    s = encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    assert (s.resumed_shards, s.reencoded_from, s.encoded) == (1, 1, 130) and "changed" in s.reencode_reason
    encode_corpus([str(p)], tmp_path / "fresh", enc, EncodeOptions(shard_size=100))
    _same_folder(out, tmp_path / "fresh")
    p.write_text("\n".join(reversed(sents)) + "\n")  # everything changed: nothing is kept
    s = encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    assert (s.resumed_shards, s.reencoded_from, s.encoded) == (0, 0, 230)
    assert EmbeddingStore(out).column("text", np.array([0]))[0] == sents[-1]


def test_rerun_refuses_another_model_layout_or_file(enc, tiny_model_b, corpus, tmp_path):
    p, sents = corpus
    out = tmp_path / "emb"
    encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    other = Encoder(load_model(str(tiny_model_b)), precision="fp32")
    with pytest.raises(MismatchError, match="another model") as e:
        encode_corpus([str(p)], out, other, EncodeOptions(shard_size=100))
    assert "{model}" in e.value.template and "tiny" in str(e.value)
    with pytest.raises(MismatchError, match="shard_size=100, this run has shard_size=50; rerun with shard_size 100"):
        encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=50))
    with pytest.raises(MismatchError, match="id_column=false.*rerun without id_column"):
        encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100, id_column=True))
    q = tmp_path / "other.txt"
    q.write_text("\n".join(reversed(sents)) + "\n")
    with pytest.raises(MismatchError, match="was encoded from .*corpus.txt, this run reads .*other.txt"):
        encode_corpus([str(q)], out, enc, EncodeOptions(shard_size=100))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # refusals change nothing
    s = encode_corpus([str(q)], out, enc, EncodeOptions(shard_size=100, overwrite=True))
    assert EmbeddingStore(out).column("text", np.array([0]))[0] == sents[-1] and s.resumed_shards == 0


def test_only_blank_lines(enc, tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text("\n \n\n")
    with pytest.raises(InputError, match="no sentences"):
        encode_corpus([str(p)], tmp_path / "emb", enc)


def test_memory_stays_bounded_by_chunk(enc, tmp_path, monkeypatch):
    """The job never asks the encoder for more than one chunk, whatever the corpus size."""
    p = tmp_path / "big.txt"
    p.write_text("\n".join(make_sentences(500, seed=9)) + "\n")
    sizes = []
    real = enc.encode_ids
    monkeypatch.setattr(enc, "encode_ids", lambda ids: sizes.append(len(ids)) or real(ids))
    encode_corpus([str(p)], tmp_path / "emb", enc, EncodeOptions(shard_size=1000, chunk_size=64))
    assert max(sizes) == 64 and sum(sizes) == 500



def test_resume_refuses_vectors_computed_another_way(enc, tiny_model, corpus, tmp_path):
    """Precision (and device, batch budget, forward) change the bits: a resume never mixes them."""
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    p, _ = corpus
    opts = EncodeOptions(shard_size=50)
    encode_corpus([str(p)], tmp_path / "e", enc, opts)
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert m["numerics"]["dtype"] == "float32"
    other = Encoder(load_model(str(tiny_model)), precision="fp32", token_budget=64)
    with pytest.raises(MismatchError, match="64-token batches"):
        encode_corpus([str(p)], tmp_path / "e", other, opts)
