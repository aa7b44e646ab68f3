"""Every command end to end through the CLI runner, on tiny models built in the test."""
import gzip
import json
import random

import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app

runner = CliRunner()


def run(*args: str, ok: bool = True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




@pytest.fixture
def sides(tmp_path):
    """A source file and a target file sharing 40 sentences (in shuffled order) among noise."""
    common = make_sentences(40, seed=11)
    noise = make_sentences(90, seed=12)
    src = common + noise[:30]
    tgt = common + noise[30:90]
    rng = random.Random(0)
    rng.shuffle(src)
    rng.shuffle(tgt)
    (tmp_path / "src.txt").write_text("\n".join(src) + "\n")
    with gzip.open(tmp_path / "tgt.txt.gz", "wt") as fh:
        fh.write("\n".join(tgt) + "\n")
    return tmp_path / "src.txt", tmp_path / "tgt.txt.gz", set(common), src, tgt


def test_version():
    assert "bitextmine" in run("--version").output


def test_encode_then_mine_folders(tiny_model, sides, tmp_path):
    src, tgt, common, src_lines, tgt_lines = sides
    res = run("encode", "corpus", src, "--out", tmp_path / "es", "--model", tiny_model, "--shard-size", 25)
    assert "sentences" in res.output and "70" in res.output
    run("encode", "corpus", tgt, "--out", tmp_path / "et", "--model", tiny_model)
    out = tmp_path / "pairs.tsv"
    res = run("mine", tmp_path / "es", tmp_path / "et", "--out", out, "--with-lines", "--top", 40)
    rows = [ln.split("\t") for ln in out.read_text().splitlines()]
    assert len(rows) == 40
    # identical sentences have cosine 1, so the 40 shared sentences are the 40 best pairs
    assert {r[1] for r in rows} == common and all(r[1] == r[2] for r in rows)
    for score, s, t, sl, tl in rows:
        assert src_lines[int(sl) - 1] == s and tgt_lines[int(tl) - 1] == t
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_mine_text_files_uses_cache(tiny_model, sides, tmp_path):
    src, tgt, common, *_ = sides
    cache = tmp_path / "cache"
    out = tmp_path / "pairs.jsonl"
    run("mine", src, tgt, "--out", out, "--model", tiny_model, "--cache", cache, "--format", "jsonl", "--threshold", "1.0")
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert {r["src"] for r in rows if r["src"] == r["tgt"]} == common
    assert all(r["score"] >= 1.0 for r in rows)
    folders = sorted((cache / "embeddings").iterdir())
    assert len(folders) == 2
    stamp = [f.stat().st_mtime_ns for f in sorted((cache / "embeddings").rglob("*.arrow"))]
    run("mine", src, tgt, "--out", out, "--model", tiny_model, "--cache", cache, "--strategy", "intersect", "--margin", "distance")
    assert stamp == [f.stat().st_mtime_ns for f in sorted((cache / "embeddings").rglob("*.arrow"))]  # not re-encoded


def test_dedup_and_ids(tiny_model, tmp_path):
    sents = make_sentences(20, seed=3)
    (tmp_path / "a.tsv").write_text("".join(f"a{i}\t{s}\n" for i, s in enumerate(sents + sents[:5])))
    (tmp_path / "b.tsv").write_text("".join(f"b{i}\t{s}\n" for i, s in enumerate(reversed(sents))))
    out = tmp_path / "p.tsv"
    run("mine", tmp_path / "a.tsv", tmp_path / "b.tsv", "--out", out, "--model", tiny_model, "--cache", tmp_path / "c",
        "--id-column", "--with-ids", "--dedup")
    rows = [ln.split("\t") for ln in out.read_text().splitlines()]
    assert len(rows) == 20  # 25 source lines, 20 unique
    for _, s, t, sid, tid in rows:
        assert s == t and sid == f"a{sents.index(s)}" and tid == f"b{19 - sents.index(s)}"


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,expect", [
    (lambda d: d / "missing.txt", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: write(d / "empty.txt", b""), "file is empty"),
    (lambda d: write(d / "bad.txt", b"ok\n\xff\xfe\n"), "bad.txt:2: invalid UTF-8"),
])
def test_encode_bad_input(tiny_model, tmp_path, make, expect):
    res = run("encode", "corpus", make(tmp_path), "--out", tmp_path / "out", "--model", tiny_model, ok=False)
    assert expect in one_line_error(res)


def test_mine_bad_inputs(tiny_model, tiny_model_b, sides, tmp_path):
    src, tgt, *_ = sides
    res = run("mine", src, tmp_path / "nope.txt", "--out", tmp_path / "p.tsv", "--model", tiny_model, ok=False)
    assert "no such file" in one_line_error(res)
    run("encode", "corpus", src, "--out", tmp_path / "a", "--model", tiny_model)
    run("encode", "corpus", tgt, "--out", tmp_path / "b", "--model", tiny_model_b)
    res = run("mine", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "p.tsv", ok=False)
    assert "different models" in one_line_error(res)
    assert not (tmp_path / "p.tsv").exists()
    res = run("mine", tmp_path / "a", tmp_path / "a", "--out", tmp_path / "p.tsv", "--index", "NotAnIndex", ok=False)
    one_line_error(res)
    res = run("mine", src, tgt, "--out", tmp_path / "p.tsv", "--model", tmp_path / "no-model", ok=False)
    assert "no such folder" in one_line_error(res)


def test_encode_refuses_other_model_on_rerun(tiny_model, tiny_model_b, sides, tmp_path):
    src, *_ = sides
    run("encode", "corpus", src, "--out", tmp_path / "e", "--model", tiny_model)
    res = run("encode", "corpus", src, "--out", tmp_path / "e", "--model", tiny_model_b, ok=False)
    assert "another model" in one_line_error(res)
    res = run("encode", "corpus", src, "--out", tmp_path / "e", "--model", tiny_model)
    assert "kept from an earlier run" in res.output


def test_sentence_transformers_folder(tmp_path, sides):
    from conftest import build_tiny_model

    st = build_tiny_model(tmp_path / "st", sentence_transformers=True)
    src, *_ = sides
    run("encode", "corpus", src, "--out", tmp_path / "e", "--model", st)
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert m["recipe"]["pooling"] == "cls" and m["recipe"]["max_tokens"] == 48


def test_stdin_input(tiny_model, tmp_path):
    sents = make_sentences(30, seed=4)
    res = runner.invoke(app, ["encode", "corpus", "-", "--out", str(tmp_path / "e"), "--model", str(tiny_model)],
                        input="\n".join(sents) + "\n")
    assert res.exit_code == 0, res.output
    import numpy as np

    from bitextmine.store import EmbeddingStore

    assert EmbeddingStore(tmp_path / "e").column("text", np.arange(30)) == sents


def test_corrupt_shard_through_cli(tiny_model, sides, tmp_path):
    src, *_ = sides
    run("encode", "corpus", src, "--out", tmp_path / "e", "--model", tiny_model)
    shard = next((tmp_path / "e").glob("shard-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-64])
    res = run("mine", tmp_path / "e", tmp_path / "e", "--out", tmp_path / "p.tsv", ok=False)
    assert "truncated" in one_line_error(res)


def test_hugging_face_id_from_local_cache(tiny_model, sides, tmp_path, monkeypatch):
    """An HF id resolves through the Hugging Face cache layout, offline."""
    import shutil

    repo = tmp_path / "hub" / "models--someorg--tiny-encoder"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snap.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    src, *_ = sides
    run("encode", "corpus", src, "--out", tmp_path / "e", "--model", "someorg/tiny-encoder")
    res = run("encode", "corpus", src, "--out", tmp_path / "e2", "--model", "someorg/not-there", ok=False)
    assert "not a local folder" in one_line_error(res)


def test_python_dash_m():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bitextmine", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("bitextmine ")


def test_device_option(tiny_model, sides, tmp_path):
    """--device: cpu works everywhere; an unknown name, or CUDA where torch has none, is one line, nothing written."""
    import torch

    src, _, _, src_lines, _ = sides
    run("encode", "corpus", src, "--out", tmp_path / "cpu", "--model", tiny_model, "--device", "cpu")
    run("mine", tmp_path / "cpu", tmp_path / "cpu", "--out", tmp_path / "p.tsv", "--device", "cpu")
    assert (tmp_path / "p.tsv").read_text().count("\n") == len(src_lines)  # every sentence pairs with itself
    msg = one_line_error(run("encode", "corpus", src, "--out", tmp_path / "x", "--model", tiny_model, "--device", "tpu", ok=False))
    assert "--device tpu" in msg and not (tmp_path / "x").exists()
    msg = one_line_error(run("mine", tmp_path / "cpu", tmp_path / "cpu", "--out", tmp_path / "q.tsv", "--device", "gpu0", ok=False))
    assert "--device gpu0" in msg and not (tmp_path / "q.tsv").exists()
    if not torch.cuda.is_available():
        msg = one_line_error(run("encode", "corpus", src, "--out", tmp_path / "y", "--model", tiny_model, "--device", "cuda", ok=False))
        assert "CUDA is not available" in msg and not (tmp_path / "y").exists()
