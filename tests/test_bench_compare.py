"""bench compare: the same Tatoeba and BUCC runs for several models, side by side (tiny models, synthetic data)."""
from __future__ import annotations

import json

import pytest
from bucc_cases import make_bucc_data
from conftest import make_sentences
from typer.testing import CliRunner

from bitextmine.bench import tatoeba as T
from bitextmine.bench.compare import CompareSpec, ModelRun, compare_models, side_by_side
from bitextmine.cli import app
from bitextmine.errors import InputError

runner = CliRunner()


@pytest.fixture
def tatoeba_dir(tmp_path):
    data = tmp_path / "tatoeba"
    data.mkdir()
    eng = make_sentences(25, seed=7)
    for lang in ("aaa", "bbb"):
        (data / f"tatoeba.{lang}-eng.{lang}").write_text("\n".join(eng) + "\n")
        (data / f"tatoeba.{lang}-eng.eng").write_text("\n".join(eng) + "\n")
    return data


def test_side_by_side_differences_are_to_the_first_model():
    a = ModelRun("a", "fa", tatoeba=[T.LangResult("x", 10, 0.5, 0.7)], tatoeba_averages={"evaluated": {"languages": 1, "mean": 0.6}})
    b = ModelRun("b", "fb", tatoeba=[T.LangResult("x", 10, 0.9, 0.9)], tatoeba_averages={"evaluated": {"languages": 1, "mean": 0.9}})
    rows = {label: (vals, diffs) for label, vals, diffs in side_by_side([a, b])}
    assert rows["Tatoeba evaluated mean (1 languages)"][1] == [pytest.approx(0.3)]
    assert rows["Tatoeba x"][0] == [pytest.approx(0.6), pytest.approx(0.9)]


def test_compare_refuses_bad_requests_before_loading_anything(tatoeba_dir):
    opened = []

    def open_model(name):
        opened.append(name)
        raise AssertionError("must not load")

    found = T.find_tatoeba(tatoeba_dir)
    spec = CompareSpec(tatoeba=found, langs=["aaa"])
    for models, spec_, msg in ((["a"], spec, "at least two"), (["a", "a"], spec, "twice"), (["a", "b"], CompareSpec(), "nothing to compare")):
        with pytest.raises(InputError, match=msg):
            compare_models(models, spec_, open_model)
    assert opened == []


def test_cli_compares_two_models_on_tatoeba_and_bucc(tiny_model, tiny_model_b, tatoeba_dir, tmp_path):
    bucc, _ = make_bucc_data(tmp_path)
    res = runner.invoke(app, ["bench", "compare", str(tiny_model), str(tiny_model_b), "--tatoeba", str(tatoeba_dir), "--langs", "aaa,bbb",
                              "--bucc", str(bucc), "--per-language", "--json", str(tmp_path / "c.json"), "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "c.json").read_text())
    a, b = doc["models"]
    assert a["fingerprint"] != b["fingerprint"]
    assert [x["lang"] for x in a["tatoeba"]] == ["aaa", "bbb"] and a["bucc"] and b["bucc"]
    assert "Δ" in res.output and "Tatoeba aaa" in res.output and "BUCC" in res.output
    # each model's numbers equal what the single benchmark gives for it
    res2 = runner.invoke(app, ["bench", "tatoeba", "--data", str(tatoeba_dir), "--langs", "aaa,bbb", "--model", str(tiny_model_b),
                               "--json", str(tmp_path / "t.json"), "--cache", str(tmp_path / "cache")])
    assert res2.exit_code == 0, res2.output
    single = json.loads((tmp_path / "t.json").read_text())
    assert [r["mean"] for r in single["results"]] == [x["mean"] for x in b["tatoeba"]]


def test_cli_one_model_is_a_one_line_error(tiny_model, tatoeba_dir):
    res = runner.invoke(app, ["bench", "compare", str(tiny_model), "--tatoeba", str(tatoeba_dir)])
    assert res.exit_code != 0 and "at least two" in res.output and "Traceback" not in res.output
