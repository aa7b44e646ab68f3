"""Importing embeddings made elsewhere: LASER raw fp32/fp16 and .npy round trips, checks, the CLI."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.encode_job import encode_corpus
from bitextmine.errors import MismatchError
from bitextmine.importer import (
    ImportOptions,
    import_embeddings,
    import_fingerprint,
    open_embeddings,
)
from bitextmine.mining import MineOptions, mine_stores
from bitextmine.store import EmbeddingStore

runner = CliRunner()


def run(*args, ok: bool = True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




def all_rows(store: EmbeddingStore) -> np.ndarray:
    return store.embeddings(np.arange(len(store)))


def write_all_formats(folder, name: str, emb: np.ndarray) -> dict[str, tuple[object, list[str]]]:
    """``emb`` as LASER raw fp32, LASER raw fp16 and .npy: {format: (path, extra CLI flags)}."""
    emb.astype(np.float32).tofile(folder / f"{name}.fp32")
    emb.astype(np.float16).tofile(folder / f"{name}.fp16")
    np.save(folder / f"{name}.npy", emb.astype(np.float32))
    dim = str(emb.shape[1])
    return {"fp32": (folder / f"{name}.fp32", ["--dim", dim]), "fp16": (folder / f"{name}.fp16", ["--dim", dim, "--dtype", "fp16"]),
            "npy": (folder / f"{name}.npy", [])}


@pytest.fixture
def sides(enc, tmp_path):
    """Two text files (with blank lines) sharing 30 sentences, encoded with the tiny encoder."""
    common = make_sentences(30, seed=1)
    src = common[:15] + [""] + common[15:] + make_sentences(20, seed=2)
    tgt = list(reversed(common)) + ["", ""] + make_sentences(12, seed=3)
    for name, lines in (("s", src), ("t", tgt)):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
        encode_corpus([str(tmp_path / f"{name}.txt")], tmp_path / f"e{name}", enc)
    return tmp_path, EmbeddingStore(tmp_path / "es"), EmbeddingStore(tmp_path / "et")


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "npy"])
def test_round_trip_gives_identical_mining(sides, fmt) -> None:
    """The store's own (fp16) embeddings written as LASER raw fp32, raw fp16 or .npy (one row per
    non-blank line), imported through the CLI, mine to exactly the pairs and scores of the store."""
    tmp, s, t = sides
    folders = []
    for name, store in (("s", s), ("t", t)):
        path, flags = write_all_formats(tmp, name, all_rows(store))[fmt]
        out = tmp / f"imp-{name}-{fmt}"
        res = run("encode", "import", path, tmp / f"{name}.txt", "--out", out, "--model-name", "tiny", *flags)
        assert "one per non-blank line" in res.output and "L2-normalised" in res.output
        imported = EmbeddingStore(out)
        np.testing.assert_array_equal(all_rows(imported), all_rows(store))  # unit-norm fp16 rows are stored unchanged
        assert imported.column("line", np.arange(len(store))) == store.column("line", np.arange(len(store)))
        assert imported.column("text", np.arange(len(store))) == store.column("text", np.arange(len(store)))
        folders.append(imported)
    want = mine_stores(s, t, MineOptions(k=3, index="flat")).pairs
    got = mine_stores(folders[0], folders[1], MineOptions(k=3, index="flat")).pairs
    for a, b in ((want.src, got.src), (want.tgt, got.tgt), (want.score, got.score)):
        np.testing.assert_array_equal(a, b)
    out = tmp / f"pairs-{fmt}.tsv"  # mine and score run on the imported folders without a model
    run("mine", folders[0].folder, folders[1].folder, "--out", out, "--index", "flat", "-k", 3)
    assert len(out.read_text().splitlines()) == len(want)


def test_one_row_per_line_drops_blank_rows_and_normalises(sides, enc) -> None:
    """LASER embeds every line, blank ones too: those rows are dropped; unnormalised rows are normalised."""
    tmp, s, _ = sides
    lines = (tmp / "s.txt").read_text().splitlines()
    rng = np.random.default_rng(0)
    rows, it = [], iter(all_rows(s))
    for ln in lines:
        rows.append(rng.standard_normal(s.dim) if not ln.strip() else next(it) * rng.uniform(0.5, 7.0))
    emb = np.asarray(rows, dtype=np.float32)
    emb.tofile(tmp / "laser.raw")
    summary = import_embeddings(tmp / "laser.raw", tmp / "s.txt", tmp / "imp", ImportOptions(dim=s.dim, model_name="m"))
    assert summary.rows == len(lines) and summary.rows_per == "line" and summary.sentences == len(s) == len(lines) - 1
    assert summary.read["blank"] == 1
    got = EmbeddingStore(tmp / "imp")
    np.testing.assert_allclose(np.linalg.norm(all_rows(got), axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(all_rows(got), all_rows(s), atol=2e-3)  # fp16 rounding of the rescaled rows
    assert got.column("line", np.arange(len(got))) == s.column("line", np.arange(len(s)))


def test_manifest_layout_fingerprint_and_model_checks(sides, enc) -> None:
    tmp, s, t = sides
    for name, store, model in (("s", s, "laser2"), ("t", t, "laser2"), ("t", t, "other")):
        np.save(tmp / f"{name}.npy", all_rows(store).astype(np.float16))
        import_embeddings(tmp / f"{name}.npy", tmp / f"{name}.txt", tmp / f"i{name}-{model}", ImportOptions(model_name=model))
    a, b, c = (EmbeddingStore(tmp / p) for p in ("is-laser2", "it-laser2", "it-other"))
    assert set(s.manifest) - {"read"} <= set(a.manifest)  # the layout encode corpus writes, plus the import record
    assert [set(e) for e in a.manifest["shards"]] == [set(e) for e in s.manifest["shards"]]
    assert a.manifest["model"] == "laser2" and a.fingerprint == import_fingerprint("laser2", s.dim) == b.fingerprint
    assert a.fingerprint.startswith("import:") and a.fingerprint != c.fingerprint != import_fingerprint("laser2", s.dim + 1)
    assert a.manifest["imported"]["l2_normalised"] is True and a.manifest["imported"]["source"] == "npy float16"
    assert a.manifest["recipe"] is None and a.manifest["dtype"] == "float16" and a.manifest["complete"]
    mine_stores(a, b)  # same stated model: comparable
    with pytest.raises(MismatchError):
        mine_stores(a, c)  # another model name
    with pytest.raises(MismatchError):
        mine_stores(a, t)  # never compared with a bitextmine model's embeddings


def test_streams_in_chunks_into_several_shards(sides) -> None:
    tmp, s, _ = sides
    all_rows(s).tofile(tmp / "s.raw")
    opts = dict(dim=s.dim, model_name="m")
    import_embeddings(tmp / "s.raw", tmp / "s.txt", tmp / "one", ImportOptions(**opts))
    summary = import_embeddings(tmp / "s.raw", tmp / "s.txt", tmp / "many", ImportOptions(**opts, shard_size=13, chunk_size=5))
    assert summary.shards == 4 and [e["rows"] for e in EmbeddingStore(tmp / "many").manifest["shards"]] == [13, 13, 13, 11]
    np.testing.assert_array_equal(all_rows(EmbeddingStore(tmp / "many")), all_rows(EmbeddingStore(tmp / "one")))


def test_npy_is_memory_mapped(tmp_path) -> None:
    np.save(tmp_path / "e.npy", np.ones((4, 3), np.float32))
    arr, what = open_embeddings(tmp_path / "e.npy")
    assert isinstance(arr, np.memmap) and arr.shape == (4, 3) and what == "npy float32"
    (tmp_path / "e.bin").write_bytes(np.ones((4, 3), np.float16).tobytes())
    arr, what = open_embeddings(tmp_path / "e.bin", 3, "fp16")
    assert isinstance(arr, np.memmap) and arr.shape == (4, 3) and what == "raw fp16"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path) -> None:
    texts = make_sentences(6, seed=9)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    emb = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    emb.tofile(tmp_path / "ok.raw")
    out = tmp_path / "out"

    def fails(*args) -> str:
        line = one_line_error(run("encode", "import", *args, ok=False))
        assert not out.exists() and not list(tmp_path.glob(".out*")), line  # nothing under the final name, no leftovers
        return line

    (tmp_path / "odd.raw").write_bytes(emb.tobytes()[:-4])
    line = fails(tmp_path / "odd.raw", tmp_path / "t.txt", "--out", out, "--dim", 8)
    assert "188 bytes is not a whole number of 8-dim fp32 rows (32 bytes each); check --dim and --dtype" in line
    line = fails(tmp_path / "ok.raw", tmp_path / "t.txt", "--out", out, "--dim", 16)  # 3 rows of 16 dims: counts differ
    assert "has 3 rows but" in line and "has 6 lines (6 not blank)" in line
    (tmp_path / "t5.txt").write_text("\n".join(texts[:5]) + "\n")
    line = fails(tmp_path / "ok.raw", tmp_path / "t5.txt", "--out", out, "--dim", 8)
    assert "has 6 rows but" in line and "one row per line" in line
    assert "need --dim" in fails(tmp_path / "ok.raw", tmp_path / "t.txt", "--out", out)
    assert "unknown --dtype 'fp64'" in fails(tmp_path / "ok.raw", tmp_path / "t.txt", "--out", out, "--dim", 8, "--dtype", "fp64")
    np.save(tmp_path / "e.npy", emb)
    assert "holds 8-dim rows (.npy header), not 4; drop or fix --dim" in fails(tmp_path / "e.npy", tmp_path / "t.txt", "--out", out, "--dim", 4)
    assert "holds float32 values (.npy header), not fp16" in fails(tmp_path / "e.npy", tmp_path / "t.txt", "--out", out, "--dtype", "fp16")
    np.save(tmp_path / "flat.npy", emb.reshape(-1))
    assert "shape (48,); expected (rows, dim)" in fails(tmp_path / "flat.npy", tmp_path / "t.txt", "--out", out)
    with gzip.open(tmp_path / "e.raw.gz", "wb") as fh:
        fh.write(emb.tobytes())
    assert "gzip-compressed" in fails(tmp_path / "e.raw.gz", tmp_path / "t.txt", "--out", out, "--dim", 8)
    bad = emb.copy()
    bad[4, 2] = np.nan
    bad.tofile(tmp_path / "nan.raw")  # found while writing: the temporary folder is removed
    assert "row 5 of the embeddings (line 5) holds NaN" in fails(tmp_path / "nan.raw", tmp_path / "t.txt", "--out", out, "--dim", 8)
    assert "no such file" in fails(tmp_path / "missing.raw", tmp_path / "t.txt", "--out", out, "--dim", 8)
    (tmp_path / "blank.txt").write_text("\n\n")
    np.zeros((2, 8), np.float32).tofile(tmp_path / "two.raw")
    assert "no sentences" in fails(tmp_path / "two.raw", tmp_path / "blank.txt", "--out", out, "--dim", 8)


def test_existing_folder_needs_overwrite(tmp_path) -> None:
    texts = make_sentences(4, seed=10)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    rng = np.random.default_rng(1)
    rng.standard_normal((4, 8)).astype(np.float32).tofile(tmp_path / "a.raw")
    rng.standard_normal((4, 8)).astype(np.float32).tofile(tmp_path / "b.raw")
    out = tmp_path / "out"
    run("encode", "import", tmp_path / "a.raw", tmp_path / "t.txt", "--out", out, "--dim", 8)
    first = all_rows(EmbeddingStore(out))
    line = one_line_error(run("encode", "import", tmp_path / "b.raw", tmp_path / "t.txt", "--out", out, "--dim", 8, ok=False))
    assert "not empty; use --overwrite" in line
    np.testing.assert_array_equal(all_rows(EmbeddingStore(out)), first)
    run("encode", "import", tmp_path / "b.raw", tmp_path / "t.txt", "--out", out, "--dim", 8, "--overwrite")
    assert not np.array_equal(all_rows(EmbeddingStore(out)), first) and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.raw", "b.raw", "out", "t.txt"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    line = one_line_error(run("encode", "import", tmp_path / "a.raw", tmp_path / "t.txt", "--out", tmp_path / "mine", "--dim", 8,
                              "--overwrite", ok=False))
    assert "holds other files than embeddings" in line and (tmp_path / "mine" / "notes.txt").exists()


def test_ids_zero_rows_and_score_on_imports(tmp_path) -> None:
    ids = [f"de-{i}" for i in range(5)]
    texts = make_sentences(5, seed=12)
    (tmp_path / "s.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in zip(ids, texts)))
    (tmp_path / "t.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in zip(ids, reversed(texts))))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    x[3] = 0
    x.tofile(tmp_path / "s.raw")
    rng.standard_normal((5, 8)).astype(np.float32).tofile(tmp_path / "t.raw")
    res = run("encode", "import", tmp_path / "s.raw", tmp_path / "s.tsv", "--out", tmp_path / "is", "--dim", 8, "--id-column")
    assert "rows of zeros" in res.output
    run("encode", "import", tmp_path / "t.raw", tmp_path / "t.tsv", "--out", tmp_path / "it", "--dim", 8, "--id-column")
    store = EmbeddingStore(tmp_path / "is")
    assert store.has_ids and store.column("id", np.arange(5)) == ids and not all_rows(store)[3].any()
    run("score", tmp_path / "is", tmp_path / "it", "--out", tmp_path / "s.jsonl", "--format", "jsonl", "--with-ids", "--index", "flat")
    rows = [json.loads(ln) for ln in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["src_id"] for r in rows] == ids and [r["src"] for r in rows] == texts and rows[3]["score"] == 0.0
