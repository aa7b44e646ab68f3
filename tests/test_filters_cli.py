"""``bitextmine filter`` through the CLI: the layouts ``mine`` writes, rejects and report, bad input."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.filters import REASONS

runner = CliRunner()

GOOD = ("Der Hund bellt jeden Morgen laut im Garten.", "The dog barks loudly in the garden every morning.")
ROWS = [
    (1.31, *GOOD),
    (1.30, *GOOD),  # duplicate
    (1.25, "Die Katze schläft auf dem Sofa.", "Le chat dort sur le canapé."),  # target is French
    (1.20, "Wir fahren morgen nach Berlin.", "We are going to Berlin tomorrow."),
    (1.10, "Hallo Welt", "Hallo Welt"),  # identical
]


def tsv(rows, extra=0):
    cols = lambda i: [str(10 + i), str(20 + i), "a.txt", "b.txt", f"de-{i}", f"en-{i}"][:extra]  # noqa: E731
    return "".join("\t".join([f"{s:.6f}", a, b, *cols(i)]) + "\n" for i, (s, a, b) in enumerate(rows))


def invoke(*args):
    return runner.invoke(app, ["filter", *map(str, args)])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("extra", [0, 2, 4, 6])
def test_tsv_layouts_of_mine_keep_their_columns(tmp_path, extra):
    p = tmp_path / "pairs.tsv"
    p.write_text(tsv(ROWS, extra), encoding="utf-8")
    r = invoke(p, "--out", tmp_path / "clean.tsv", "--rejects", tmp_path / "rej.tsv", "--report", tmp_path / "rep.json",
               "--src-lang", "deu_Latn", "--tgt-lang", "eng")
    assert r.exit_code == 0, r.output
    lines = p.read_text(encoding="utf-8").splitlines()
    assert (tmp_path / "clean.tsv").read_text(encoding="utf-8").splitlines() == [lines[0], lines[3]]
    rej = (tmp_path / "rej.tsv").read_text(encoding="utf-8").splitlines()
    assert rej == [f"duplicate\t{lines[1]}", f"tgt_lid\t{lines[2]}", f"identical\t{lines[4]}"]
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert set(rep["dropped"]) == set(REASONS) and rep["kept"] == 2 and rep["total"] == 5
    assert rep["dropped"]["duplicate"] == rep["dropped"]["tgt_lid"] == rep["dropped"]["identical"] == 1
    assert rep["src_lang"]["group"] == "deu" and not rep["src_lang"]["inferred"]
    for reason in REASONS:  # the summary shows every counter
        assert f"dropped: {reason}" in r.output
    assert leftovers(tmp_path) == []


def test_jsonl_with_and_without_ids(tmp_path):
    p = tmp_path / "pairs.jsonl"
    objs = [{"score": s, "src": a, "tgt": b, **({"src_id": f"d{i}", "tgt_id": f"e{i}"} if i % 2 else {})}
            for i, (s, a, b) in enumerate(ROWS)]
    p.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    r = invoke(p, "-o", tmp_path / "clean.jsonl", "--rejects", tmp_path / "rej.jsonl", "--src-lang", "de", "--tgt-lang", "en")
    assert r.exit_code == 0, r.output
    kept = [json.loads(x) for x in (tmp_path / "clean.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept == [objs[0], objs[3]]
    rej = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["reason"] for x in rej] == ["duplicate", "tgt_lid", "identical"] and rej[1]["detail"].startswith("tgt looks like fra")
    assert rej[0]["src_id"] == "d1"


def test_rules_can_be_turned_off(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text(tsv(ROWS), encoding="utf-8")
    r = invoke(p, "-o", tmp_path / "all.tsv", "--no-lid", "--dedup", "none", "--max-overlap", "0", "--max-ratio", "0",
               "--min-length", "0", "--max-length", "0", "--no-numbers", "--no-urls", "--max-per-src", "0", "--max-per-tgt", "0")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "all.tsv").read_text(encoding="utf-8") == p.read_text(encoding="utf-8")
    r = invoke(p, "-o", tmp_path / "s.tsv", "--no-lid", "--min-score", "1.26")
    assert r.exit_code == 0 and len((tmp_path / "s.tsv").read_text().splitlines()) == 1  # 1.31; 1.30 is a duplicate


@pytest.mark.parametrize("content, where", [
    ("1.0\tonly two\n", "pairs.tsv:1: 2 tab-separated column(s)"),
    ("1.0\ta\tb\n1.0\ta\tb\tc\td\tx\n", "pairs.tsv:2: 6 tab-separated column(s), expected 3"),
    ("1.0\ta\tb\t1\t2\n1.0\ta\tb\n", "pairs.tsv:2: 3 tab-separated column(s), expected 5"),
    ("high\ta\tb\n", "pairs.tsv:1: the first column must be the score"),
    ('{"score": 1, "src": "a"}\n', "pairs.tsv:1: the object lacks tgt"),
    ('{"score": 1, "src": "a", "tgt": "b"}\n{broken\n', "pairs.tsv:2: not a JSON object"),
])
def test_malformed_pairs_files_are_one_line_errors_and_nothing_is_written(tmp_path, content, where):
    p = tmp_path / "pairs.tsv"
    p.write_text(content, encoding="utf-8")
    (tmp_path / "old.tsv").write_text("previous\n")
    r = invoke(p, "-o", tmp_path / "old.tsv", "--rejects", tmp_path / "rej.tsv", "--report", tmp_path / "rep.json", "--no-lid")
    assert r.exit_code == 2
    assert where in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert (tmp_path / "old.tsv").read_text() == "previous\n"  # the earlier file is kept whole
    assert not (tmp_path / "rej.tsv").exists() and not (tmp_path / "rep.json").exists()
    assert leftovers(tmp_path) == []


def test_bad_utf8_names_the_line(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_bytes(b"1.0\ta\tb\n1.0\t\xff\tb\n")
    r = invoke(p, "-o", tmp_path / "c.tsv", "--no-lid")
    assert r.exit_code == 2 and "pairs.tsv:2: invalid UTF-8" in r.output and not (tmp_path / "c.tsv").exists()


@pytest.mark.parametrize("args, flag", [
    (["--src-lang", "xyz"], "--src-lang"), (["--tgt-lang", "english"], "--tgt-lang"), (["--max-ratio", "0.5"], "--max-ratio"),
    (["--lid-threshold", "2"], "--lid-threshold"),
])
def test_bad_options_name_their_flag(tmp_path, args, flag):
    p = tmp_path / "pairs.tsv"
    p.write_text(tsv(ROWS), encoding="utf-8")
    r = invoke(p, "-o", tmp_path / "c.tsv", *args)
    assert r.exit_code == 2 and flag in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "c.tsv").exists()


def test_unknown_language_message_says_how_to_find_codes(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text(tsv(ROWS), encoding="utf-8")
    r = invoke(p, "-o", tmp_path / "c.tsv", "--src-lang", "xyz")
    assert "--list-languages" in r.output
    r = runner.invoke(app, ["filter", "--list-languages"])
    assert r.exit_code == 0 and "deu" in r.output and "Chinese" in r.output and "wuu,yue,zh" in r.output


def test_paths_that_would_destroy_data_are_refused(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text(tsv(ROWS), encoding="utf-8")
    r = invoke(p, "-o", p, "--no-lid")
    assert r.exit_code == 2 and "is the input" in r.output and p.read_text(encoding="utf-8") == tsv(ROWS)
    r = invoke(p, "-o", tmp_path / "a.tsv", "--rejects", tmp_path / "a.tsv", "--no-lid")
    assert r.exit_code == 2 and "--out" in r.output and "--rejects" in r.output
    r = invoke(tmp_path / "missing.tsv", "-o", tmp_path / "a.tsv")
    assert r.exit_code == 2 and "no such file" in r.output
    r = invoke(p, "-o", tmp_path / "nofolder" / "a.tsv")
    assert r.exit_code == 2 and "no such folder" in r.output


def test_filters_what_mine_writes(tiny_model, tmp_path):
    """End to end over real ``mine`` output (tiny model: the pairs are noise, the layout is real)."""
    from tests.conftest import make_sentences

    (tmp_path / "a.txt").write_text("\n".join(make_sentences(60, seed=1)) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(make_sentences(60, seed=2)) + "\n")
    for fmt in ("tsv", "jsonl"):
        out = tmp_path / f"pairs.{fmt}"
        r = runner.invoke(app, ["mine", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "-o", str(out), "-m", str(tiny_model),
                                "--with-lines", "--format", fmt, "--cache", str(tmp_path / "cache"), "--threshold", "0"])
        assert r.exit_code == 0, r.output
        r = invoke(out, "-o", tmp_path / f"clean.{fmt}", "--no-lid", "--report", tmp_path / f"rep-{fmt}.json")
        assert r.exit_code == 0, r.output
        rep = json.loads((tmp_path / f"rep-{fmt}.json").read_text())
        assert rep["total"] == len(out.read_text().splitlines()) > 0
        kept = (tmp_path / f"clean.{fmt}").read_text().splitlines()
        assert len(kept) == rep["kept"] and set(kept) <= set(out.read_text().splitlines())
