"""The one embedding cache: a text file is embedded once per model and reading options."""
from __future__ import annotations

import pytest

from bitextmine.embed_cache import EmbeddingCache, cache_folder, is_embedding_folder
from bitextmine.errors import InputError, StoreError
from conftest import make_sentences



def test_text_file_is_embedded_once(enc, tmp_path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("\n".join(make_sentences(12, seed=1)) + "\n")
    cache = EmbeddingCache(enc, tmp_path / "c")
    s1 = cache.open(p)
    assert len(s1) == 12 and cache.encoded == [str(p)]
    s2 = EmbeddingCache(enc, tmp_path / "c").open(p)  # a new cache object finds it
    assert s2.folder == s1.folder and is_embedding_folder(s1.folder)
    ids = EmbeddingCache(enc, tmp_path / "c", id_column=True)
    with pytest.raises(InputError, match="id<TAB>sentence"):  # other reading options: another folder, embedded anew
        ids.open(p)
    assert cache_folder(str(p), enc.lm.fingerprint, True, cache.errors, tmp_path / "c") != s1.folder


def test_folders_pass_through_and_misses_need_a_model(enc, tmp_path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("one sentence\n")
    store = EmbeddingCache(enc, tmp_path / "c").open(p)
    assert EmbeddingCache(None, tmp_path / "other").open(store.folder).folder == store.folder
    with pytest.raises(StoreError, match="needs a model"):
        EmbeddingCache(None, tmp_path / "other").open(p)
    with pytest.raises(StoreError, match="no model to embed it"):
        EmbeddingCache(None, tmp_path / "other", fingerprint="f" * 16).open(p)
    with pytest.raises(InputError, match="is a directory without manifest.json"):
        EmbeddingCache(enc, tmp_path / "c").open(tmp_path)
