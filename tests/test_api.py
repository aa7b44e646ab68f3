"""The flat public API: the README's Python snippet runs as written."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_api_snippet_runs(tmp_path, monkeypatch, capsys) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BITEXTMINE_CACHE", str(tmp_path / "cache"))
    exec(compile(readme_snippet(), "README.md", "exec"), {})
    rows = (tmp_path / "pairs.tsv").read_text().splitlines()
    assert len(rows) == 30  # the 30 hidden pairs of the example, as the README's mine tour shows
    assert "30 pairs written; threshold 1.4 (given)" in capsys.readouterr().out


def test_mine_dispatches_on_what_it_is_given(tiny_model, tmp_path) -> None:
    import numpy as np

    import bitextmine as bm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = bm.mine(x, x[::-1].copy(), k=2)
    assert sorted(zip(c.src.tolist(), c.tgt.tolist())) == [(i, 19 - i) for i in range(20)]
    enc = bm.load_encoder(bm.EncoderOptions(model=str(tiny_model)))
    texts = ["the cat", "der hund", "la maison", "кот собака"]
    (tmp_path / "a.txt").write_text("\n".join(texts) + "\n")
    bm.encode_corpus([str(tmp_path / "a.txt")], tmp_path / "ea", enc)
    s = bm.EmbeddingStore(tmp_path / "ea")
    res = bm.mine(s, s, k=2)
    assert isinstance(res, bm.MineResult) and len(res.pairs) == 4
    res2 = bm.mine(tmp_path / "ea", tmp_path / "ea", k=2)
    assert np.array_equal(res.pairs.src, res2.pairs.src) and np.array_equal(res.pairs.score, res2.pairs.score)
    emb = bm.encode(texts, enc)
    assert np.allclose(emb, s.embeddings(np.arange(4)), atol=2e-3)  # fp16 storage
