"""``--format parquet``: typed columns, row groups (streaming), atomic writes, parquet in and out of
``filter``, and the one-line errors for what cannot work."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error
from typer.testing import CliRunner

import bitextmine.parquet_io as pio
from bitextmine.cli import app
from bitextmine.errors import InputError
from bitextmine.filters import FilterOptions, filter_file
from bitextmine.margin import Candidates
from bitextmine.output import Format, PairsOutput, choose_format, write_pairs

runner = CliRunner()


class FakeStore:
    def __init__(self, texts, ids=None):
        self.texts, self.ids = texts, ids
        self.manifest = {"inputs": [{}]}

    @property
    def has_ids(self):
        return self.ids is not None

    def column(self, name, rows):
        vals = {"text": self.texts, "line": list(range(1, len(self.texts) + 1)), "id": self.ids, "input": [0] * len(self.texts)}[name]
        return [vals[i] for i in rows]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])




def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def many_pairs(n):
    rng = np.random.default_rng(0)
    src = FakeStore([f"satz {i} mit\ttab" for i in range(n)], ids=[f"de-{i}" for i in range(n)])
    tgt = FakeStore([f"sentence {i}" for i in range(n)], ids=[f"en-{i}" for i in range(n)])
    score = np.sort(rng.uniform(0.9, 1.5, n))[::-1].astype(np.float64)
    return Candidates(rng.permutation(n), rng.permutation(n), score), src, tgt


# ---------------------------------------------------------------- writing

def test_write_pairs_parquet_typed_exact_and_equal_to_tsv(tmp_path) -> None:
    pairs, src, tgt = many_pairs(50)
    pq_out, tsv_out = tmp_path / "p.parquet", tmp_path / "p.tsv"
    assert write_pairs(PairsOutput(pq_out, with_lines=True, with_ids=True), pairs, src, tgt) == 50  # .parquet: parquet
    write_pairs(PairsOutput(tsv_out, with_lines=True, with_ids=True), pairs, src, tgt)
    t = pq.read_table(pq_out)
    assert t.schema == pa.schema([("score", pa.float64()), ("src", pa.string()), ("tgt", pa.string()), ("src_line", pa.int64()),
                                  ("tgt_line", pa.int64()), ("src_id", pa.string()), ("tgt_id", pa.string())])
    assert t.column("score").to_pylist() == pairs.score.tolist()  # the exact scores, best first
    assert t.column("src").to_pylist()[0] == src.texts[pairs.src[0]]  # texts kept as they are (a tab too)
    rows = [ln.split("\t") for ln in tsv_out.read_text().splitlines()]
    assert [float(r[0]) for r in rows] == [round(v, 6) for v in pairs.score]
    assert [r[3:] for r in rows] == [[str(a), str(b), c, d] for a, b, c, d in
                                      zip(*(t.column(n).to_pylist() for n in ("src_line", "tgt_line", "src_id", "tgt_id")))]


def test_row_groups_stream_and_give_the_same_table(tmp_path, monkeypatch) -> None:
    pairs, src, tgt = many_pairs(1000)
    write_pairs(PairsOutput(tmp_path / "one.parquet", with_ids=True), pairs, src, tgt)
    monkeypatch.setattr(pio, "ROW_GROUP_ROWS", 64)
    write_pairs(PairsOutput(tmp_path / "many.parquet", with_ids=True), pairs, src, tgt)
    one, many = pq.ParquetFile(tmp_path / "one.parquet"), pq.ParquetFile(tmp_path / "many.parquet")
    assert one.metadata.num_row_groups == 1
    assert many.metadata.num_row_groups == 16 and max(many.metadata.row_group(i).num_rows for i in range(16)) == 64
    assert one.read().equals(many.read())
    # reading streams too: batches of the row-group size, rows in order
    assert [r["src_id"] for r in pio.iter_parquet_rows(many, 64)] == many.read().column("src_id").to_pylist()


def test_parquet_rows_buffers_rows_and_batches_alike(tmp_path) -> None:
    rows = [{"score": 1.0 + i / 7, "src": f"s{i}", "tgt": f"t{i}", "src_line": i + 1} for i in range(23)]
    for size in (1, 5, 23, 100):
        with open(tmp_path / f"r{size}.parquet", "wb") as fh:
            w = pio.ParquetRows(fh, row_group_rows=size)
            for r in rows[:11]:
                w.add(r)
            w.add_columns({k: [r[k] for r in rows[11:]] for k in rows[0]})
            assert w.close() == 23
        f = pq.ParquetFile(tmp_path / f"r{size}.parquet")
        assert f.read().to_pylist() == rows and f.metadata.num_row_groups == -(-23 // size)


def test_an_empty_output_still_has_the_columns(tmp_path) -> None:
    write_pairs(PairsOutput(tmp_path / "e.parquet", with_lines=True), Candidates.empty(), FakeStore([]), FakeStore([]))
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.num_rows == 0 and t.schema.names == ["score", "src", "tgt", "src_line", "tgt_line"]


def test_a_value_that_does_not_fit_is_one_error_and_nothing_is_written(tmp_path) -> None:
    from bitextmine.fs import atomic_writer

    with pytest.raises(InputError, match="does not fit its parquet column"), atomic_writer(tmp_path / "bad.parquet", "wb") as fh:
        w = pio.ParquetRows(fh, row_group_rows=2)
        w.add({"score": 1.0, "src": "a", "tgt": "b", "src_line": 1})
        w.add({"score": 1.0, "src": "a", "tgt": "b", "src_line": "seven"})
    with pytest.raises(InputError, match="not in the first row"), atomic_writer(tmp_path / "x.parquet", "wb") as fh:
        w = pio.ParquetRows(fh)
        w.add({"score": 1.0, "src": "a", "tgt": "b"})
        w.add({"score": 1.0, "src": "a", "tgt": "b", "extra": 1})
    assert not (tmp_path / "bad.parquet").exists() and not (tmp_path / "x.parquet").exists() and leftovers(tmp_path) == []


def test_loadable_by_pandas_when_installed(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pairs, src, tgt = many_pairs(10)
    write_pairs(PairsOutput(tmp_path / "p.parquet", with_ids=True), pairs, src, tgt)
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert list(df.columns) == ["score", "src", "tgt", "src_id", "tgt_id"] and len(df) == 10


# ---------------------------------------------------------------- choosing the format

def test_format_choice_and_its_errors() -> None:
    assert PairsOutput("x.parquet").format is Format.PARQUET
    assert PairsOutput("x.PARQUET").format is Format.PARQUET
    assert PairsOutput("x.tsv").format is Format.TSV and PairsOutput("x").format is Format.TSV
    assert PairsOutput("x.bin", "parquet").format is Format.PARQUET  # asked for: any name
    assert choose_format("x.jsonl", None, None) is None  # filter: as the input
    assert choose_format("-", None, Format.JSONL) is Format.JSONL
    with pytest.raises(InputError, match="stdout"):
        PairsOutput("-", "parquet")
    with pytest.raises(InputError, match=r"a \.parquet name but format is tsv"):
        PairsOutput("x.parquet", "tsv")
    with pytest.raises(InputError, match=r"the pairs are parquet; name out \*\.parquet"):
        choose_format("clean.tsv", None, Format.PARQUET)
    with pytest.raises(InputError, match="format must be one of tsv, jsonl, parquet"):
        PairsOutput("x", "csv")


# ---------------------------------------------------------------- filter: parquet in and out

GOOD = ("Der Hund bellt jeden Morgen laut im Garten.", "The dog barks loudly in the garden every morning.")
ROWS = [
    (1.31, *GOOD),
    (1.30, *GOOD),  # duplicate
    (1.25, "Die Katze schläft auf dem Sofa.", "Le chat dort sur le canapé."),  # target is French
    (1.20, "Wir fahren morgen nach Berlin.", "We are going to Berlin tomorrow."),
    (1.10, "Hallo Welt", "Hallo Welt"),  # identical
]
LANGS = ("--src-lang", "deu", "--tgt-lang", "eng")


def pairs_parquet(path, with_ids=True):
    cols = {"score": [r[0] for r in ROWS], "src": [r[1] for r in ROWS], "tgt": [r[2] for r in ROWS]}
    if with_ids:
        cols |= {"src_line": list(range(1, 6)), "tgt_line": list(range(11, 16)), "src_id": [f"d{i}" for i in range(5)],
                 "tgt_id": [f"e{i}" for i in range(5)]}
    pq.write_table(pa.table(cols, schema=pa.schema([(k, pio.column_type(k)) for k in cols])), path)
    return pq.read_table(path)


def test_filter_parquet_round_trip_with_reasons(tmp_path) -> None:
    src = pairs_parquet(tmp_path / "pairs.parquet")
    r = invoke("filter", tmp_path / "pairs.parquet", "--out", tmp_path / "clean.parquet", "--rejects", tmp_path / "rej.parquet",
               "--report", tmp_path / "rep.json", *LANGS)
    assert r.exit_code == 0, r.output
    kept = pq.read_table(tmp_path / "clean.parquet")
    assert kept.schema == src.schema and kept.to_pylist() == [src.to_pylist()[i] for i in (0, 3)]
    rej = pq.read_table(tmp_path / "rej.parquet")
    assert rej.schema.names == [*src.schema.names, "reason", "detail"]
    assert [(r["src_id"], r["reason"]) for r in rej.to_pylist()] == [("d1", "duplicate"), ("d2", "tgt_lid"), ("d4", "identical")]
    assert all(r["detail"] is not None for r in rej.to_pylist())
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["kept"] == 2 and rep["dropped"]["tgt_lid"] == 1
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_filter_converts_between_formats(tmp_path, fmt) -> None:
    src = pairs_parquet(tmp_path / "pairs.parquet")
    r = invoke("filter", tmp_path / "pairs.parquet", "--out", tmp_path / f"clean.{fmt}", "--format", fmt, *LANGS)
    assert r.exit_code == 0, r.output
    lines = (tmp_path / f"clean.{fmt}").read_text().splitlines()
    want = [src.to_pylist()[i] for i in (0, 3)]
    if fmt == "jsonl":
        assert [json.loads(x) for x in lines] == want
    else:
        assert lines == ["\t".join([f"{w['score']:.6f}", *(str(v) for k, v in w.items() if k != "score")]) for w in want]
        # and back: a TSV of mine's layout becomes the same typed table (scores to 6 decimals)
        r = invoke("filter", tmp_path / "clean.tsv", "--out", tmp_path / "back.parquet", "--no-lid", "--max-per-src", 0)
        assert r.exit_code == 0, r.output
        back = pq.read_table(tmp_path / "back.parquet")
        assert back.schema == src.schema and back.to_pylist() == want


def test_jsonl_to_parquet_and_an_empty_result_keeps_the_columns(tmp_path) -> None:
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"score": s, "src": a, "tgt": b, "src_id": f"d{i}"}) + "\n" for i, (s, a, b) in enumerate(ROWS)))
    assert filter_file(p, tmp_path / "c.parquet", FilterOptions(src_lang="deu", tgt_lang="eng")).kept == 2
    assert pq.read_table(tmp_path / "c.parquet").schema.names == ["score", "src", "tgt", "src_id"]
    filter_file(p, tmp_path / "none.parquet", FilterOptions(src_lang="deu", tgt_lang="eng", min_score=9.0),
                rejects=tmp_path / "all.parquet")
    none, every = pq.read_table(tmp_path / "none.parquet"), pq.read_table(tmp_path / "all.parquet")
    assert none.num_rows == 0 and none.schema.names == ["score", "src", "tgt", "src_id"]
    assert every.num_rows == 5 and every.schema.names == ["score", "src", "tgt", "src_id", "reason", "detail"]
    assert set(every.column("reason").to_pylist()) == {"score"}


def test_filter_streams_parquet_in_row_groups(tmp_path, monkeypatch) -> None:
    n = 300
    word = lambda i: chr(97 + i // 26) + chr(97 + i % 26)  # letters: normalised dedup ignores digits
    cols = {"score": [2.0 - i / 1000 for i in range(n)], "src": [f"Ein Satz {word(i % 120)}" for i in range(n)],
            "tgt": [f"A sentence {word(i % 120)}" for i in range(n)]}
    pq.write_table(pa.table(cols), tmp_path / "in.parquet", row_group_size=32)
    opts = FilterOptions(lid=False, numbers=False)
    filter_file(tmp_path / "in.parquet", tmp_path / "big.parquet", opts, rejects=tmp_path / "bigr.parquet")
    monkeypatch.setattr(pio, "ROW_GROUP_ROWS", 16)
    rep = filter_file(tmp_path / "in.parquet", tmp_path / "small.parquet", opts, rejects=tmp_path / "smallr.parquet")
    assert rep.kept == 120 and rep.dropped["duplicate"] + rep.dropped["near_duplicate"] == 180
    assert pq.ParquetFile(tmp_path / "small.parquet").metadata.num_row_groups == 8
    assert pq.read_table(tmp_path / "big.parquet").equals(pq.read_table(tmp_path / "small.parquet"))
    assert pq.read_table(tmp_path / "bigr.parquet").equals(pq.read_table(tmp_path / "smallr.parquet"))


def test_filter_parquet_errors_are_one_line_and_write_nothing(tmp_path) -> None:
    pairs_parquet(tmp_path / "pairs.parquet")
    line = one_line_error(invoke("filter", tmp_path / "pairs.parquet", "--out", tmp_path / "clean.tsv", *LANGS))
    assert "the pairs are parquet" in line and "--out" in line and "--format" in line
    line = one_line_error(invoke("filter", tmp_path / "pairs.parquet", "--out", "-", *LANGS))
    assert "--format" in line
    line = one_line_error(invoke("filter", tmp_path / "pairs.parquet", "--out", "-", "--format", "parquet", *LANGS))
    assert "stdout" in line
    line = one_line_error(invoke("filter", tmp_path / "pairs.parquet", "--out", tmp_path / "c.parquet", "--format", "tsv", *LANGS))
    assert ".parquet name but --format is tsv" in line
    line = one_line_error(runner.invoke(app, ["filter", "-", "--out", str(tmp_path / "c.tsv"), *LANGS],
                                        input=(tmp_path / "pairs.parquet").read_bytes()))
    assert "stdin" in line
    pq.write_table(pa.table({"score": [1.0], "text": ["a"]}), tmp_path / "nosrc.parquet")
    line = one_line_error(invoke("filter", tmp_path / "nosrc.parquet", "--out", tmp_path / "c.parquet", *LANGS))
    assert "no column src, tgt" in line
    pq.write_table(pa.table({"score": ["high"], "src": ["a"], "tgt": ["b"]}), tmp_path / "strscore.parquet")
    assert "not a number" in one_line_error(invoke("filter", tmp_path / "strscore.parquet", "--out", tmp_path / "c.parquet", *LANGS))
    (tmp_path / "trunc.parquet").write_bytes((tmp_path / "pairs.parquet").read_bytes()[:40])
    assert "not a readable parquet file" in one_line_error(invoke("filter", tmp_path / "trunc.parquet", "--out", tmp_path / "c.parquet", *LANGS))
    pq.write_table(pa.table({"score": [1.0, None], "src": ["a", "b"], "tgt": ["c", "d"]}), tmp_path / "null.parquet")
    line = one_line_error(invoke("filter", tmp_path / "null.parquet", "--out", tmp_path / "c.parquet", "--no-lid"))
    assert "row 2" in line
    assert not (tmp_path / "c.parquet").exists() and not (tmp_path / "clean.tsv").exists() and leftovers(tmp_path) == []
