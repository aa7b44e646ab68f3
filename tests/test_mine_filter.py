"""``mine --filter`` in one pass equals ``mine`` then ``bitextmine filter``; ``mine`` and ``score`` write
parquet; the combinations that cannot work are one-line errors before any work."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.errors import InputError
from bitextmine.filters import FilterOptions
from bitextmine.mining import MineOptions, mine_embeddings, mine_files, mine_stores
from bitextmine.output import PairsOutput

runner = CliRunner()


def run(*args, ok=True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




@pytest.fixture
def sides(tmp_path):
    """Two sides whose mined pairs trip many rules: copies, numbers, lengths, repeated sentences, languages."""
    common = make_sentences(30, seed=1)
    noise = make_sentences(80, seed=2)
    extra_src = ["Es kostet 5 Euro.", "Es kostet 5 Euro.", "Der Zug fährt um acht Uhr ab.", "x", "Wir sehen uns\tmorgen."]
    extra_tgt = ["It costs 7 euros.", "The train leaves at eight o'clock.", "y" * 60, "See you tomorrow."]
    (tmp_path / "s.txt").write_text("\n".join(common + noise[:40] + extra_src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(common + noise[40:] + extra_tgt) + "\n")
    return tmp_path / "s.txt", tmp_path / "t.txt"


def mine_args(tiny_model, tmp_path, sides):
    return ["mine", *sides, "--model", tiny_model, "--cache", tmp_path / "cache", "--with-lines"]


FILTER_FLAGS = ["--max-ratio", "4", "--max-per-src", "1", "--lid-threshold", "0.2"]


@pytest.mark.parametrize("lid", [True, False])
@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_mine_filter_equals_mine_then_filter(tiny_model, tmp_path, sides, fmt, lid) -> None:
    """Kept rows and rejects (with their reasons) are the same bytes. Language ID of the tiny model's word-salad
    pairs is noise (the inferred majority language has a ~15% share), so with it nearly every pair is rejected
    and how many are kept depends on which pairs the session's tiny model mines (0 to 4 seen); without it,
    rows are kept whatever is mined."""
    base = mine_args(tiny_model, tmp_path, sides)
    d = tmp_path
    flags = FILTER_FLAGS if lid else [*FILTER_FLAGS[:4], "--no-lid"]
    run(*base, "--out", d / f"all.{fmt}", "--format", fmt)
    run("filter", d / f"all.{fmt}", "--out", d / f"two.{fmt}", "--rejects", d / f"two-rej.{fmt}", "--report", d / "two.json",
        *flags)
    res = run(*base, "--out", d / f"one.{fmt}", "--format", fmt, "--filter", "--rejects", d / f"one-rej.{fmt}",
              "--report", d / "one.json", *flags)
    assert "dropped: identical" in res.output and "mined" in res.output
    why = f"filter report of the two-pass run: {(d / 'two.json').read_text()}"  # says which rules dropped what
    if fmt == "parquet":
        for a, b in (("one", "two"), ("one-rej", "two-rej")):
            assert pq.read_table(d / f"{a}.parquet").equals(pq.read_table(d / f"{b}.parquet")), a
        kept, rej = pq.read_table(d / "one.parquet"), pq.read_table(d / "one-rej.parquet")
        assert (kept.num_rows > 0 or lid) and rej.num_rows > 0 and rej.schema.names[-2:] == ["reason", "detail"], why
    else:
        for a, b in (("one", "two"), ("one-rej", "two-rej")):
            assert (d / f"{a}.{fmt}").read_bytes() == (d / f"{b}.{fmt}").read_bytes(), a
        assert ((d / f"one.{fmt}").read_text() or lid) and (d / f"one-rej.{fmt}").read_text(), why
    one, two = json.loads((d / "one.json").read_text()), json.loads((d / "two.json").read_text())
    for key in ("total", "kept", "dropped", "src_lang", "tgt_lang", "options"):
        assert one["filter"][key] == two[key], key
    assert one["mined"] == two["total"] and one["written"] == two["kept"]
    assert one["mined"] > 0 and sum(v > 0 for v in two["dropped"].values()) >= (3 if lid else 1)  # the data trips several rules (identical copies always)
    assert (two["dropped"]["src_lid"] > 0) == lid
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []


def test_mine_files_library_filter_and_rejects(tiny_model, tmp_path, sides) -> None:
    from bitextmine.encoder import EncoderOptions

    enc = EncoderOptions(model=str(tiny_model))
    fopts = FilterOptions(max_ratio=4.0, max_per_src=1)
    out = PairsOutput(tmp_path / "k.parquet", with_lines=True)
    res = mine_files(*sides, MineOptions(filter=fopts), encoder=enc, output=out, rejects=tmp_path / "r.parquet",
                     cache_dir=tmp_path / "cache", report=tmp_path / "rep.json")
    kept, rej = pq.read_table(tmp_path / "k.parquet"), pq.read_table(tmp_path / "r.parquet")
    assert res.written == kept.num_rows == len(res.pairs) == res.filter.kept
    assert kept.num_rows + rej.num_rows == res.mined == res.filter.total
    assert kept.column("score").to_pylist() == res.pairs.score.tolist()
    # mine_stores filters too, on the exact values: the same pairs
    st = mine_stores(res.src, res.tgt, MineOptions(filter=fopts))
    assert np.array_equal(st.pairs.src, res.pairs.src) and st.filter.dropped == res.filter.dropped
    with pytest.raises(InputError, match="filter needs sentence texts"):
        mine_embeddings(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), filter=fopts)
    with pytest.raises(InputError, match="rejects needs filter"):
        mine_files(*sides, encoder=enc, output=PairsOutput(tmp_path / "x.tsv"), rejects=tmp_path / "r.tsv")
    with pytest.raises(InputError, match="filter must be a FilterOptions"):
        MineOptions(filter={"lid": False})


def test_mine_and_score_write_parquet(tiny_model, tmp_path, sides) -> None:
    base = mine_args(tiny_model, tmp_path, sides)
    run(*base, "--out", tmp_path / "p.parquet")  # the name says parquet
    run(*base, "--out", tmp_path / "p.tsv")
    t = pq.read_table(tmp_path / "p.parquet")
    rows = [ln.split("\t") for ln in (tmp_path / "p.tsv").read_text().splitlines()]
    assert t.schema.names == ["score", "src", "tgt", "src_line", "tgt_line"]
    assert [f"{v:.6f}" for v in t.column("score").to_pylist()] == [r[0] for r in rows]
    assert t.column("src_line").to_pylist() == [int(r[3]) for r in rows]
    s, _ = sides
    run("score", s, s, "--out", tmp_path / "sc.parquet", "--model", tiny_model, "--cache", tmp_path / "cache", "--with-lines")
    run("score", s, s, "--out", tmp_path / "sc.tsv", "--model", tiny_model, "--cache", tmp_path / "cache", "--with-lines")
    sc = pq.read_table(tmp_path / "sc.parquet")
    lines = [ln.split("\t") for ln in (tmp_path / "sc.tsv").read_text().splitlines()]
    assert sc.num_rows == len(lines) and sc.column("src_line").to_pylist() == list(range(1, len(lines) + 1))  # input order
    assert [f"{v:.6f}" for v in sc.column("score").to_pylist()] == [r[0] for r in lines]


def test_bad_combinations_fail_before_any_work(tmp_path, sides) -> None:
    nomodel = tmp_path / "no-such-model"  # the errors come before the model is loaded
    base = ["mine", *sides, "--model", nomodel, "--cache", tmp_path / "cache"]
    cases = [
        (["--out", tmp_path / "p.tsv", "--src-lang", "deu"], "--src-lang needs --filter"),
        (["--out", tmp_path / "p.tsv", "--filter-dedup", "exact"], "--filter-dedup needs --filter"),
        (["--out", tmp_path / "p.tsv", "--rejects", tmp_path / "r.tsv"], "--rejects needs --filter"),
        (["--out", tmp_path / "p.tsv", "--filter", "--rejects", tmp_path / "p.tsv"], "given as both --out and --rejects"),
        (["--out", tmp_path / "p.tsv", "--filter", "--report", sides[0]], "is also an input"),
        (["--out", tmp_path / "p.tsv", "--filter", "--rejects", tmp_path / "no" / "r.tsv"], "r.tsv: no such folder"),
        (["--out", tmp_path / "p.tsv", "--filter", "--src-lang", "xx-nonsense"], "--src-lang"),
        (["--out", tmp_path / "p.tsv", "--filter", "--max-ratio", "0.5"], "--max-ratio must be at least 1"),
        (["--out", "-", "--format", "parquet"], "stdout"),
        (["--out", tmp_path / "p.parquet", "--format", "tsv"], ".parquet name but --format is tsv"),
        (["--out", tmp_path / "p.parquet", "--filter", "--rejects", tmp_path / "r.tsv"], "name --rejects *.parquet"),
        (["--out", "-", "--filter", "--rejects", "-"], "only one of"),
    ]
    for extra, msg in cases:
        assert msg in one_line_error(run(*base, *extra, ok=False)), extra
    line = one_line_error(run("score", *sides, "--out", "-", "--format", "parquet", "--model", nomodel, ok=False))
    assert "stdout" in line
    assert not any(p.suffix in (".tsv", ".parquet") for p in tmp_path.iterdir())
