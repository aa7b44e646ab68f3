"""Scoring given pairs (LASER's score mode): brute-force numpy reference, agreement with mine, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine import scoring
from bitextmine.cli import app
from bitextmine.encode_job import encode_corpus
from bitextmine.errors import InputError, MismatchError
from bitextmine.mining import MineOptions, mine_files, mine_stores
from bitextmine.output import PairsOutput
from bitextmine.scoring import (
    ScoreOptions,
    check_aligned,
    reference_rows,
    score_files,
    score_pairs,
    score_stores,
)
from bitextmine.store import EmbeddingStore

runner = CliRunner()


def run(*args, ok: bool = True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def pairs_arrays(n: int = 60, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and noisy translations of them (some far off), both L2-normalised."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    noise = rng.standard_normal((n, dim)) * np.linspace(0.1, 3.0, n)[:, None]
    return unit(x), unit(x + noise)


def brute_force(x, y, k, margin, xr=None, yr=None, sample=None) -> np.ndarray:
    """LASER's score mode in float64 numpy: full similarity matrices, top-k means, the margin.

    ``xr``/``yr``: other neighbourhood sets; ``sample``: rows of x and y that, with each pair's own
    partner, make the neighbourhood sets (the reference-sample mode)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    xr = x if xr is None else xr.astype(np.float64)
    yr = y if yr is None else yr.astype(np.float64)
    a = (x * y).sum(axis=1)
    if sample is None:
        x2y = np.sort(x @ yr.T, axis=1)[:, ::-1][:, :k].mean(axis=1)
        y2x = np.sort(y @ xr.T, axis=1)[:, ::-1][:, :k].mean(axis=1)
    else:
        def hood(q, db, i):  # the k best similarities of q[i] over the sampled rows and the partner db[i]
            rows = sorted(set(sample.tolist()) | {i})
            return np.sort(db[rows] @ q[i])[::-1][:k].mean()

        x2y = np.array([hood(x, y, i) for i in range(len(x))])
        y2x = np.array([hood(y, x, i) for i in range(len(x))])
    b = (x2y + y2x) / 2
    return {"ratio": a / b, "distance": a - b, "absolute": a}[margin]


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
@pytest.mark.parametrize("k", [1, 4])
def test_score_pairs_equals_brute_force(margin, k) -> None:
    x, y = pairs_arrays()
    got = score_pairs(x, y, k, margin, index="flat")
    np.testing.assert_allclose(got, brute_force(x, y, k, margin), rtol=0, atol=1e-6)
    assert got.dtype == np.float64 and got.shape == (60,)


def test_score_pairs_reads_block_sources_and_fp16() -> None:
    """Stores are read block by block (blocks of both sides need not line up) and fp16 rows are upcast."""
    from bitextmine.knn import ArrayBlocks

    x, y = pairs_arrays(n=50)
    x16, y16 = x.astype(np.float16), y.astype(np.float16)

    class Uneven(ArrayBlocks):
        def iter_blocks(self, rows):
            cuts = [0, 3, 17, 18, 41, len(self)]
            for a, b in zip(cuts[:-1], cuts[1:]):
                yield self.array[a:b].astype(np.float32)

    got = score_pairs(Uneven(x16), y16, 3, index="flat", block_rows=8)
    np.testing.assert_allclose(got, brute_force(x16.astype(np.float32), y16.astype(np.float32), 3, "ratio"), atol=1e-6)


def test_reference_sample_equals_brute_force_on_that_sample() -> None:
    x, y = pairs_arrays(n=80)
    got = score_pairs(x, y, 4, reference_size=25, seed=3, index="flat")
    rows = reference_rows(80, 25, seed=3)
    assert len(rows) == 25 and len(set(rows.tolist())) == 25
    np.testing.assert_allclose(got, brute_force(x, y, 4, "ratio", sample=rows), atol=1e-6)
    # a sample of every row is the full mode, exactly
    np.testing.assert_array_equal(score_pairs(x, y, 4, reference_size=80, index="flat"), score_pairs(x, y, 4, index="flat"))
    # the approximation: fewer rows to choose neighbours from lowers the means, so ratio scores go up on average
    assert got.mean() > score_pairs(x, y, 4, index="flat").mean()


def test_explicit_reference_and_chunked_queries(monkeypatch) -> None:
    x, y = pairs_arrays(n=70)
    xr, yr = pairs_arrays(n=40, seed=9)
    whole = score_pairs(x, y, 3, reference=(xr, yr), index="flat")
    np.testing.assert_allclose(whole, brute_force(x, y, 3, "ratio", xr=xr, yr=yr), atol=1e-6)
    monkeypatch.setattr(scoring, "QUERY_CHUNK_ROWS", 9)  # 8 chunks, the last one short
    np.testing.assert_allclose(score_pairs(x, y, 3, reference=(xr, yr), index="flat"), whole, rtol=0, atol=1e-6)


def test_bad_arguments() -> None:
    x, y = pairs_arrays(n=10)
    with pytest.raises(InputError, match="as many source rows as target rows, got 10 and 9"):
        score_pairs(x, y[:9])
    with pytest.raises(MismatchError, match="dimension 16 but target rows 8"):
        score_pairs(x, y[:, :8])
    with pytest.raises(InputError, match="k must be at least 1"):
        score_pairs(x, y, 0)
    with pytest.raises(InputError, match="reference_size must be at least 1"):
        ScoreOptions(reference_size=0)
    with pytest.raises(InputError, match="not both"):
        score_pairs(x, y, reference=(x, y), reference_size=3)
    assert score_pairs(x[:0], y[:0]).shape == (0,)


@pytest.fixture
def stores(enc, tmp_path):
    common = make_sentences(30, seed=31)
    src = common + make_sentences(20, seed=32)
    tgt = list(reversed(common)) + make_sentences(12, seed=33)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    encode_corpus([str(tmp_path / "s.txt")], tmp_path / "es", enc)
    encode_corpus([str(tmp_path / "t.txt")], tmp_path / "et", enc)
    return EmbeddingStore(tmp_path / "es"), EmbeddingStore(tmp_path / "et")


@pytest.mark.parametrize("margin", ["ratio", "distance"])
def test_score_agrees_with_mine(stores, margin) -> None:
    """Every pair mine selects (max strategy) scores the same when scored as a given pair with the
    neighbourhoods of the same two sides (exact search, same k and margin)."""
    s, t = stores
    mined = mine_stores(s, t, MineOptions(k=3, margin=margin, strategy="max", index="flat")).pairs
    assert len(mined) > 30
    got = score_pairs(s.embeddings(mined.src), t.embeddings(mined.tgt), 3, margin, reference=(s, t), index="flat")
    np.testing.assert_allclose(got, mined.score, rtol=0, atol=1e-6)


def test_score_cli_agrees_with_mine_cli(tiny_model, tmp_path) -> None:
    """mine (max strategy) pairs every sentence here; its pairs written as two line-aligned files and
    scored with `bitextmine score` get mine's scores (the files hold the same sentences, so the
    neighbourhoods are the same), and score_files agrees with mine_files at full precision."""
    src = make_sentences(40, seed=41)
    tgt = [s + " " + w for s, w in zip(src, ["light", "eau", "день", "猫"] * 10)]
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    opts = ("-k", 3, "--margin", "ratio", "--index", "flat", "--model", tiny_model, "--cache", tmp_path / "c")
    run("mine", tmp_path / "s.txt", tmp_path / "t.txt", "--out", tmp_path / "pairs.tsv", "--strategy", "max", *opts)
    rows = [ln.split("\t") for ln in (tmp_path / "pairs.tsv").read_text().splitlines()]
    assert len(rows) == 40  # a one-to-one pairing of all sentences: the aligned files hold the same sets
    (tmp_path / "as.txt").write_text("".join(r[1] + "\n" for r in rows))
    (tmp_path / "at.txt").write_text("".join(r[2] + "\n" for r in rows))
    res = run("score", tmp_path / "as.txt", tmp_path / "at.txt", "--out", tmp_path / "scores.tsv", *opts)
    assert "40" in res.output and "the same files" in res.output
    scored = [ln.split("\t") for ln in (tmp_path / "scores.tsv").read_text().splitlines()]
    assert [r[1:] for r in scored] == [r[1:] for r in rows]  # input order, mine's columns
    np.testing.assert_allclose([float(r[0]) for r in scored], [float(r[0]) for r in rows], rtol=0, atol=1.01e-6)

    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    enc = Encoder(load_model(str(tiny_model)), precision="fp32")
    mined = mine_files(tmp_path / "s.txt", tmp_path / "t.txt", MineOptions(k=3, index="flat"), encoder=enc, cache_dir=tmp_path / "c2")
    res = score_files(tmp_path / "as.txt", tmp_path / "at.txt", ScoreOptions(k=3, index="flat"), encoder=enc, cache_dir=tmp_path / "c2")
    # matched by pair, not by position: the CLI's encoder may run in bf16 (AVX512-BF16 / AMX CPUs),
    # which can order pairs of nearly equal scores differently from this fp32 one
    by_pair = {(src[i], tgt[j]): sc for i, j, sc in zip(mined.pairs.src.tolist(), mined.pairs.tgt.tolist(), mined.pairs.score.tolist())}
    np.testing.assert_allclose(res.scores, [by_pair[(r[1], r[2])] for r in rows], rtol=0, atol=1e-6)


def test_folders_and_text_files_give_the_same_scores(enc, tmp_path) -> None:
    src, tgt = make_sentences(25, seed=51), make_sentences(25, seed=52)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    encode_corpus([str(tmp_path / "s.txt")], tmp_path / "es", enc)
    encode_corpus([str(tmp_path / "t.txt")], tmp_path / "et", enc)
    a = score_files(tmp_path / "s.txt", tmp_path / "t.txt", encoder=enc, cache_dir=tmp_path / "c")
    b = score_files(tmp_path / "es", tmp_path / "et")
    np.testing.assert_array_equal(a.scores, b.scores)
    s, t = EmbeddingStore(tmp_path / "es"), EmbeddingStore(tmp_path / "et")
    np.testing.assert_allclose(b.scores, brute_force(s.embeddings(np.arange(25)), t.embeddings(np.arange(25)), 4, "ratio"), atol=1e-6)


def test_blank_lines_on_both_sides_are_skipped_and_numbered(tiny_model, tmp_path) -> None:
    src, tgt = make_sentences(12, seed=61), make_sentences(12, seed=62)
    src_lines, tgt_lines = src[:4] + ["", "  "] + src[4:] + [""], tgt[:4] + ["", ""] + tgt[4:]
    (tmp_path / "s.txt").write_text("\n".join(src_lines) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt_lines) + "\n")
    out = tmp_path / "scores.jsonl"
    res = run("score", tmp_path / "s.txt", tmp_path / "t.txt", "--out", out, "--format", "jsonl", "--with-lines",
              "--model", tiny_model, "--cache", tmp_path / "c")
    assert "blank on both sides" in res.output and "2 lines" in res.output
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["src"] for r in rows] == src and [r["tgt"] for r in rows] == tgt
    assert [r["src_line"] for r in rows] == [r["tgt_line"] for r in rows] == [1, 2, 3, 4] + list(range(7, 15))
    assert all(isinstance(r["score"], float) for r in rows)


def test_misaligned_files_are_refused_before_the_model_loads(tmp_path) -> None:
    src, tgt = make_sentences(6, seed=71), make_sentences(6, seed=72)
    (tmp_path / "s.txt").write_text("\n".join(src[:3] + [""] + src[3:]) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt[:3] + ["x"] + tgt[3:]) + "\n")
    (tmp_path / "short.txt").write_text("\n".join(tgt[:5]) + "\n")
    out = tmp_path / "scores.tsv"
    # the model does not exist: the checks must come first
    line = one_line_error(run("score", tmp_path / "s.txt", tmp_path / "t.txt", "--out", out, "--model", tmp_path / "nomodel", ok=False))
    assert f"{tmp_path / 's.txt'}: line 4 is blank or was skipped, but line 4 of {tmp_path / 't.txt'} is a sentence" in line
    line = one_line_error(run("score", tmp_path / "t.txt", tmp_path / "short.txt", "--out", out, "--model", tmp_path / "nomodel", ok=False))
    assert "has 7 sentences and" in line and "has 5;" in line and "line-aligned" in line
    line = one_line_error(run("score", tmp_path / "s.txt", tmp_path / "s.txt", "--out", tmp_path / "no" / "x.tsv", ok=False))
    assert "no such folder" in line and "--out" in line
    line = one_line_error(run("score", tmp_path / "s.txt", tmp_path / "s.txt", "--out", out, "--reference-size", 0, ok=False))
    assert "--reference-size must be at least 1" in line
    assert not out.exists() and not (tmp_path / "no").exists()
    assert not list(tmp_path.glob(".scores.tsv*"))  # no temporary or lock file left


def test_misaligned_folders_and_counts(enc, tmp_path) -> None:
    a, b = make_sentences(5, seed=81), make_sentences(5, seed=82)
    (tmp_path / "a.txt").write_text("\n".join(a) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(b[:2] + [""] + b[2:]) + "\n")
    encode_corpus([str(tmp_path / "a.txt")], tmp_path / "ea", enc)
    encode_corpus([str(tmp_path / "b.txt")], tmp_path / "eb", enc)
    with pytest.raises(InputError, match=r"b.txt: line 3 is blank or was skipped, but line 3 of .*a.txt is a sentence"):
        score_stores(EmbeddingStore(tmp_path / "ea"), EmbeddingStore(tmp_path / "eb"))
    assert check_aligned(iter([(0, 2), (0, 5), (1, 2)]), iter([(0, 2), (0, 5), (1, 2)]), ["x"], ["y"]) == 1 + 2 + 1
    with pytest.raises(InputError, match="x has 3 sentences and y has 2"):
        check_aligned(iter([(0, 1), (0, 2), (0, 3)]), iter([(0, 1), (0, 2)]), ["x"], ["y"])
    with pytest.raises(InputError, match="x has 2 sentences and y has 4"):
        check_aligned([(0, 1), (0, 2)], [(0, 1), (0, 2), (0, 3), (0, 4)], ["x"], ["y"])


def test_models_must_match(enc, tiny_model_b, tmp_path) -> None:
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    (tmp_path / "a.txt").write_text("\n".join(make_sentences(5, seed=91)) + "\n")
    encode_corpus([str(tmp_path / "a.txt")], tmp_path / "ea", enc)
    encode_corpus([str(tmp_path / "a.txt")], tmp_path / "eb", Encoder(load_model(str(tiny_model_b)), precision="fp32"))
    with pytest.raises(MismatchError, match="different models"):
        score_files(tmp_path / "ea", tmp_path / "eb")


def test_reference_size_through_the_cli(tiny_model, tmp_path) -> None:
    src, tgt = make_sentences(60, seed=95), make_sentences(60, seed=96)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    out = tmp_path / "scores.tsv"
    common = ("--model", tiny_model, "--cache", tmp_path / "c", "--index", "flat")
    res = run("score", tmp_path / "s.txt", tmp_path / "t.txt", "--out", out, "--reference-size", 20, "--seed", 4, *common)
    assert "sample of 20 a side + partners, seed 4 (approximate)" in " ".join(res.output.split())
    got = np.array([float(ln.split("\t")[0]) for ln in out.read_text().splitlines()])
    s, t = (EmbeddingStore(next(p for p in (tmp_path / "c" / "embeddings").iterdir() if EmbeddingStore(p).manifest["inputs"][0]["path"].endswith(name)))
            for name in ("s.txt", "t.txt"))
    x, y = s.embeddings(np.arange(60)), t.embeddings(np.arange(60))
    rows = reference_rows(60, 20, seed=4)
    np.testing.assert_allclose(got, brute_force(x, y, 4, "ratio", sample=rows), atol=1.01e-6)


def test_absolute_margin_is_the_cosine_and_stdout(enc, tmp_path, capsys) -> None:
    src, tgt = make_sentences(8, seed=97), make_sentences(8, seed=98)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    res = score_files(tmp_path / "s.txt", tmp_path / "t.txt", ScoreOptions(margin="absolute"), encoder=enc, cache_dir=tmp_path / "c",
                      output=PairsOutput("-"))
    x, y = enc.encode(src), enc.encode(tgt)
    np.testing.assert_allclose(res.scores, (x.astype(np.float64) * y).sum(axis=1), atol=2e-3)  # the store holds fp16
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 8 and [ln.split("\t")[1] for ln in printed] == src
