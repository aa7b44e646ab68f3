"""The Arrow embedding store: round trip, zero-copy reads, corrupt shards, model mismatches."""

import numpy as np
import pytest

from bitextmine.encode_job import EncodeOptions, encode_corpus
from bitextmine.encoder import Encoder
from bitextmine.errors import MismatchError, StoreError
from bitextmine.models.loader import load_model
from bitextmine.store import EmbeddingStore, check_same_model


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


def test_folders_of_two_versions_of_default_say_why(tmp_path):
    """A folder embedded by the pre-0.2 'default' (the untouched base) next to one of today's default: the message
    says that 'default' changed and how to go on, instead of only 'different models'."""
    import json

    import numpy as np
    from test_scale import write_store

    stores = []
    for name, fp in (("old", "base-fp"), ("new", "dap-fp")):
        s = write_store(tmp_path / name, np.eye(4, dtype=np.float32), [4], fingerprint=fp)
        m = json.loads((s.folder / "manifest.json").read_text())
        (s.folder / "manifest.json").write_text(json.dumps({**m, "model": "default"}))
        stores.append(EmbeddingStore(s.folder))
    with pytest.raises(MismatchError, match="different versions of it.*e5-small"):
        check_same_model(*stores)


def test_resuming_a_folder_of_the_earlier_default_names_e5_small(tmp_path):
    from bitextmine.encode_job import _check_resumable

    old = {"fingerprint": "base-fp", "model": "default", "dim": 384}
    with pytest.raises(MismatchError, match="another version of --model default.*e5-small"):
        _check_resumable(old, {**old, "fingerprint": "dap-fp"}, tmp_path)
    with pytest.raises(MismatchError, match="another model or recipe"):
        _check_resumable(old, {**old, "fingerprint": "x", "model": "other"}, tmp_path)
