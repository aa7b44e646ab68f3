"""bench tatoeba: language sets, the CLI on a synthetic Tatoeba folder with a tiny model, bad input,
and a few real languages with the default model (slow). Retrieval accuracy itself: tests/test_retrieval.py."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import make_sentences, need_shared, one_line_error
from typer.testing import CliRunner

from bitextmine.bench.tatoeba import (
    DAP14,
    DAP36,
    LangResult,
    averages,
    find_tatoeba,
    resolve_langs,
    run_tatoeba,
)
from bitextmine.cli.bench import bench_app
from bitextmine.errors import InputError

runner = CliRunner()

# XTREME's utils_preprocess.py, tatoeba_preprocess: lang3_dict without 'eng' (ISO 639-1 on the right)
XTREME_LANG3 = {
    "afr": "af", "ara": "ar", "bul": "bg", "ben": "bn", "deu": "de", "ell": "el", "spa": "es", "est": "et",
    "eus": "eu", "pes": "fa", "fin": "fi", "fra": "fr", "heb": "he", "hin": "hi", "hun": "hu", "ind": "id",
    "ita": "it", "jpn": "ja", "jav": "jv", "kat": "ka", "kaz": "kk", "kor": "ko", "mal": "ml", "mar": "mr",
    "nld": "nl", "por": "pt", "rus": "ru", "swh": "sw", "tam": "ta", "tel": "te", "tha": "th", "tgl": "tl",
    "tur": "tr", "urd": "ur", "vie": "vi", "cmn": "zh",
}
# DAP's data/dataset.py XNLI_LANGS (its 14-language setting)
XNLI_LANGS = ["ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]


def test_language_sets():
    assert len(DAP36) == 36 and set(DAP36) == set(XTREME_LANG3)
    assert len(DAP14) == 14 and {XTREME_LANG3[x] for x in DAP14} == set(XNLI_LANGS)
    assert set(DAP14) <= set(DAP36)


def test_language_sets_exist_in_the_real_data():
    folder = need_shared("tatoeba")
    found = find_tatoeba(folder)
    assert set(DAP36) <= set(found) and len(found) == 112


def test_resolve_langs():
    avail = list(DAP36) + ["yue", "epo"]
    assert resolve_langs("dap36", avail) == list(DAP36)
    assert resolve_langs("xnli", avail) == list(DAP14)
    assert resolve_langs("deu, fra,deu", avail) == ["deu", "fra"]
    assert resolve_langs("dap14,epo", avail) == [*DAP14, "epo"]
    assert resolve_langs("all", avail) == sorted(avail)
    assert resolve_langs("rest", avail) == ["epo", "yue"]  # the languages outside the 36 the default is trained on
    with pytest.raises(InputError, match="'xyz'"):
        resolve_langs("deu,xyz", avail)
    with pytest.raises(InputError, match="no Tatoeba files for afr"):
        resolve_langs("dap36", ["deu"])


def test_langs_errors_name_their_parameter():
    for spec, text in ((" , ", "{} is empty"),
                       ("dap14", "{} dap14: no Tatoeba files for " + ", ".join(DAP14[1:]) + " in the data folder"),
                       ("xyz", "{}: no Tatoeba files for 'xyz' (a language code found in the data folder, or one of dap36, dap14, all, rest)")):
        with pytest.raises(InputError) as e:
            resolve_langs(spec, ["ara"])
        assert e.value.param == "langs"
        assert e.value.message_for({"langs": "--langs"}) == text.format("--langs")
        assert str(e.value) == text.format("langs")


def test_find_tatoeba_errors_name_their_parameter(tmp_path):
    (tmp_path / "f").write_text("x\n")
    with pytest.raises(InputError) as e:
        find_tatoeba(tmp_path / "f")
    assert e.value.param == "data"
    assert e.value.message_for({"data": "--data"}) == f"{tmp_path / 'f'}: is a file; --data needs the folder holding tatoeba.xxx-eng.xxx files"


def test_averages():
    rs = [LangResult(lang, 10, 1.0, 0.5) for lang in DAP14] + [LangResult("epo", 10, 0.0, 0.0)]
    a = averages(rs)
    assert set(a) == {"dap14", "evaluated"}
    assert a["dap14"]["mean"] == 0.75 and a["dap14"]["languages"] == 14
    assert a["evaluated"]["languages"] == 15 and a["evaluated"]["xx2eng"] == pytest.approx(14 / 15)
    assert set(averages(rs[:14])) == {"dap14"}  # "evaluated" would repeat it


class FakeStore:
    """What evaluate_lang reads of an embedding store: line numbers and embeddings."""

    def __init__(self, lines, vectors):
        self.lines, self.vectors = lines, np.asarray(vectors, dtype=np.float32)

    def iter_column(self, name):
        assert name == "line"
        return iter(self.lines)

    def embeddings(self, rows):
        return self.vectors[rows]


def test_run_tatoeba_reports_one_task_per_run(tmp_path):
    eye = np.eye(3, dtype=np.float32)
    stores = {"aaa.x": FakeStore([1, 2, 3], eye), "aaa.e": FakeStore([1, 2, 3], eye),
              "bbb.x": FakeStore([1, 2, 3], eye), "bbb.e": FakeStore([1, 2, 3], eye[[1, 0, 2]]),
              "ccc.x": FakeStore([1, 3], eye[[0, 2]]), "ccc.e": FakeStore([1, 2, 3], eye)}  # line 2 blank on the xx side
    found = {lang: (tmp_path / f"{lang}.x", tmp_path / f"{lang}.e") for lang in ("aaa", "bbb", "ccc")}
    for name in stores:  # the files are only counted (both sides of a language must have as many lines)
        (tmp_path / name).write_text("one\n\nthree\n" if name == "ccc.x" else "one\ntwo\nthree\n")
    events, seen = [], []
    rs = run_tatoeba(found, ["aaa", "bbb", "ccc"], lambda p: stores[p.name], listener=events.append, on_lang=seen.append)
    assert [(r.lang, r.pairs, r.xx2eng_errors, r.eng2xx_errors) for r in rs] == [("aaa", 3, 0, 0), ("bbb", 3, 2, 2), ("ccc", 2, 0, 0)]
    assert [(r.xx2eng, r.eng2xx) for r in rs] == [(1.0, 1.0), (pytest.approx(1 / 3), pytest.approx(1 / 3)), (1.0, 1.0)]
    assert seen == rs
    assert [(e.kind, e.what, e.n, e.total, e.unit) for e in events] == [
        ("start", "tatoeba languages", 0, 3, "languages"), *[("advance", "tatoeba languages", 1, None, "sentences")] * 3,
        ("end", "tatoeba languages", 0, None, "sentences")]
    assert run_tatoeba(found, ["aaa"], lambda p: stores[p.name])[0].mean == 1.0  # no listener needed


@pytest.fixture
def tatoeba_data(tmp_path):
    """Three languages: 'aaa' is a copy of its English side (the tiny model gets it all right),
    'bbb' is English shuffled (mostly wrong), 'ccc' has a blank line on the xx side."""
    data = tmp_path / "tatoeba"
    data.mkdir()
    eng = make_sentences(30, seed=7)
    (data / "tatoeba.aaa-eng.aaa").write_text("\n".join(eng) + "\n")
    (data / "tatoeba.aaa-eng.eng").write_text("\n".join(eng) + "\n")
    shuffled = eng[:]
    random.Random(1).shuffle(shuffled)
    (data / "tatoeba.bbb-eng.bbb").write_text("\n".join(shuffled) + "\n")
    (data / "tatoeba.bbb-eng.eng").write_text("\n".join(eng) + "\n")
    eng2 = make_sentences(20, seed=8)
    (data / "tatoeba.ccc-eng.ccc").write_text("\n".join(eng2[:5] + [""] + eng2[6:]) + "\n")
    (data / "tatoeba.ccc-eng.eng").write_text("\n".join(eng2) + "\n")
    (data / "tatoeba.ddd-eng.ddd").write_text("only one side\n")  # no English file: ignored
    return data, eng, shuffled




def run(*args, ok: bool = True):
    res = runner.invoke(bench_app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_cli_tatoeba(tiny_model, tatoeba_data, tmp_path):
    data, eng, shuffled = tatoeba_data
    cache = tmp_path / "cache"
    out = tmp_path / "t.json"
    res = run("tatoeba", "--data", data, "--langs", "all", "--model", tiny_model, "--cache", cache, "--json", out,
              "--plots", tmp_path / "plots")
    assert "Tatoeba retrieval accuracy" in res.output and "evaluated average" in res.output
    doc = json.loads(out.read_text())
    by = {r["lang"]: r for r in doc["results"]}
    assert sorted(by) == ["aaa", "bbb", "ccc"]
    assert by["aaa"]["xx2eng"] == by["aaa"]["eng2xx"] == 1.0 and by["aaa"]["pairs"] == 30
    fixed = sum(a == b for a, b in zip(eng, shuffled)) / len(eng)  # lines the shuffle left in place
    assert by["bbb"]["xx2eng"] == pytest.approx(fixed) and by["bbb"]["eng2xx"] == pytest.approx(fixed)
    assert by["ccc"]["pairs"] == 19 and by["ccc"]["xx2eng"] == 1.0  # the blank line is left out
    assert doc["averages"]["evaluated"]["languages"] == 3
    assert doc["model"]["fingerprint"] and doc["versions"]["bitextmine"] and doc["params"]["languages"] == ["aaa", "bbb", "ccc"]
    # every distinct file content was embedded (aaa and bbb share their English side: once or twice,
    # as the cache keys files by content or by identity)
    files = [data / f"tatoeba.{x}-eng.{y}" for x in ("aaa", "bbb", "ccc") for y in (x, "eng")]
    assert {f.read_bytes() for f in files} == {open(p, "rb").read() for p in doc["encoded_now"]}
    assert (tmp_path / "plots" / "tatoeba.png").read_bytes()[:4] == b"\x89PNG"
    # cached: a rerun with another margin embeds nothing
    run("tatoeba", "--data", data, "--langs", "aaa,bbb", "--model", tiny_model, "--cache", cache, "--json", out, "--margin", "ratio")
    doc = json.loads(out.read_text())
    assert doc["encoded_now"] == [] and doc["params"]["margin"] == "ratio"


@pytest.mark.parametrize("args,expect", [
    (lambda d, t: ["--data", t / "missing"], "no such folder"),
    (lambda d, t: ["--data", t / "empty"], "no Tatoeba files found"),
    (lambda d, t: ["--data", d, "--langs", "xyz"], "no Tatoeba files for 'xyz'"),
    (lambda d, t: ["--data", d], "--langs dap36: no Tatoeba files for afr"),
    (lambda d, t: ["--data", d, "--langs", "aaa", "-k", "0"], "-k must be at least 1"),
])
def test_cli_tatoeba_bad_input(tiny_model, tatoeba_data, tmp_path, args, expect):
    data, *_ = tatoeba_data
    (tmp_path / "empty").mkdir()
    res = run("tatoeba", *args(data, tmp_path), "--model", tiny_model, "--cache", tmp_path / "c", ok=False)
    assert expect in one_line_error(res)


@pytest.mark.slow
@pytest.mark.shared
def test_real_tatoeba_few_languages(tmp_path):
    """deu, fra, cmn with the packaged E5-small; LASER's scripts on the same model give
    deu 98.0/96.2, fra 92.2/92.8, cmn 91.6/89.3 (xx→eng / eng→xx)."""
    data = need_shared("tatoeba")
    run("tatoeba", "--data", data, "--langs", "deu,fra,cmn", "--model", "e5-small", "--json", tmp_path / "t.json")
    by = {r["lang"]: r for r in json.loads((tmp_path / "t.json").read_text())["results"]}
    reference = {"deu": (0.980, 0.962), "fra": (0.922, 0.928), "cmn": (0.916, 0.893)}
    for lang, (f, b) in reference.items():
        assert by[lang]["pairs"] == 1000
        assert by[lang]["xx2eng"] >= f - 0.015 and by[lang]["eng2xx"] >= b - 0.015, (lang, by[lang])


def test_sides_of_different_lengths_fail_before_embedding(tmp_path):
    """A line missing on one side shifts every later pair: refused, naming both files and counts."""
    from bitextmine.bench.tatoeba import check_files, line_count

    s = make_sentences(10, seed=2)
    (tmp_path / "x").write_text("\n".join(s) + "\n")
    (tmp_path / "e").write_text("\n".join(s[:9]) + "\n")
    (tmp_path / "e2").write_text("\n".join(s) + "\n\n\n")  # trailing blank lines do not count
    assert (line_count(tmp_path / "x"), line_count(tmp_path / "e"), line_count(tmp_path / "e2")) == (10, 9, 10)
    found = {"aaa": (tmp_path / "x", tmp_path / "e"), "bbb": (tmp_path / "x", tmp_path / "e2")}
    check_files(found, ["bbb"])

    def embed(p):
        raise AssertionError("embedded before the check")

    with pytest.raises(InputError, match=r"x has 10 lines but .*e has 9; the two Tatoeba files of aaa must be aligned"):
        run_tatoeba(found, ["bbb", "aaa"], embed)
