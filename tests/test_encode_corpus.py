"""The resumable encode job and the Arrow store it writes."""
import json

import numpy as np
import pytest

from bitextmine.encode import Encoder
from bitextmine.encode_corpus import EncodeOptions, encode_corpus
from bitextmine.errors import InputError, MismatchError, StoreError
from bitextmine.models.loader import load_model
from bitextmine.store import EmbeddingStore, check_same_model
from conftest import make_sentences


@pytest.fixture(scope="module")
def enc(tiny_model):
    return Encoder(load_model(str(tiny_model)), precision="fp32")


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    sents = make_sentences(230, seed=5)
    lines = []
    for i, s in enumerate(sents):
        lines.append(s)
        if i % 50 == 0:
            lines.append("")  # blank lines must not shift line numbers
    p.write_text("\n".join(lines) + "\n")
    return p, sents


def test_store_roundtrip(enc, corpus, tmp_path):
    p, sents = corpus
    s = encode_corpus([str(p)], tmp_path / "emb", enc, EncodeOptions(shard_size=100, chunk_size=32))
    assert s.sentences == 230 and s.shards == 3 and s.read["blank"] == 5
    st = EmbeddingStore(tmp_path / "emb")
    assert len(st) == 230 and st.dim == 32
    rows = np.arange(230)
    assert st.column("text", rows) == sents
    # line numbers refer to the original file, blank lines included
    raw = p.read_text().split("\n")
    for row, line in zip(rows, st.column("line", rows)):
        assert raw[line - 1] == sents[row]
    # embeddings equal direct encoding (stored as fp16)
    direct = enc.encode(sents)
    got = np.concatenate(list(st.iter_blocks(7)))
    assert np.abs(got - direct).max() < 2e-3
    assert np.abs(st.embeddings(np.array([229, 0, 150])) - direct[[229, 0, 150]]).max() < 2e-3


def test_zero_copy_memory_map(enc, corpus, tmp_path):
    p, _ = corpus
    encode_corpus([str(p)], tmp_path / "emb", enc)
    st = EmbeddingStore(tmp_path / "emb")
    view = st._chunks[0].emb
    assert view.dtype == np.float16 and not view.flags.owndata and not view.flags.writeable


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
    assert not list((tmp_path / "part").glob("*.tmp"))  # the shard in progress was discarded
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


def test_rerun_refuses_changed_input_or_model(enc, tiny_model_b, corpus, tmp_path):
    p, sents = corpus
    out = tmp_path / "emb"
    encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    p.write_text("\n".join(reversed(sents)) + "\n")
    with pytest.raises(MismatchError, match="changed"):
        encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    other = Encoder(load_model(str(tiny_model_b)), precision="fp32")
    with pytest.raises(MismatchError, match="another model"):
        encode_corpus([str(p)], out, other, EncodeOptions(shard_size=100))
    with pytest.raises(MismatchError, match="shard_size"):
        encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=50))
    s = encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100, overwrite=True))
    assert EmbeddingStore(out).column("text", np.array([0]))[0] == sents[-1] and s.resumed_shards == 0


def test_corrupt_and_truncated_shards(enc, corpus, tmp_path):
    p, _ = corpus
    out = tmp_path / "emb"
    encode_corpus([str(p)], out, enc, EncodeOptions(shard_size=100))
    shard = out / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupted"):
        EmbeddingStore(out)
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(StoreError, match="truncated"):
        EmbeddingStore(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        EmbeddingStore(out)


def test_different_models_refuse_to_compare(enc, tiny_model_b, corpus, tmp_path):
    p, _ = corpus
    encode_corpus([str(p)], tmp_path / "a", enc)
    encode_corpus([str(p)], tmp_path / "b", Encoder(load_model(str(tiny_model_b)), precision="fp32"))
    with pytest.raises(MismatchError, match="different models"):
        check_same_model(EmbeddingStore(tmp_path / "a"), EmbeddingStore(tmp_path / "b"))


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


def test_encode_stream_reads_one_chunk_ahead_in_order(enc):
    """encode_stream: same embeddings as encode, in order; chunks are pulled and tokenised on the background thread."""
    import threading

    chunks = [make_sentences(n, seed=n) for n in (5, 17, 1, 0, 30)]
    pulled = []

    def source():
        for c in chunks:
            pulled.append(threading.current_thread().name)
            yield c

    out = list(enc.encode_stream(source()))
    assert [c for c, _ in out] == chunks
    for c, e in out:
        assert e.shape == (len(c), enc.dim)
        if c:
            np.testing.assert_allclose(e, enc.encode(c), atol=1e-6)
    assert pulled and all(name.startswith("bitextmine-tokenize") for name in pulled)

    def failing():
        yield chunks[0]
        raise InputError("bad line")

    it = enc.encode_stream(failing())
    assert next(it)[0] == chunks[0]
    with pytest.raises(InputError, match="bad line"):
        next(it)


def test_fast_tokenizer_path_equals_the_transformers_wrapper(enc):
    texts = make_sentences(300, seed=2) + ["word " * 400, "", "x"]  # one past max_tokens, empty, single char
    fast = enc.tokenize(texts)
    assert enc._fast is not None
    saved, enc._fast = enc._fast, None  # None: the wrapper path
    try:
        assert enc.tokenize(texts) == fast
    finally:
        enc._fast = saved
