"""bench bucc runs: choosing the splits, mining a split (checked against a LASER-style reference over
the same files), run_bucc end to end on tiny models, the CLI on folders and archives, bad input, and
the real zh-en sample with the default model (slow). Scoring: test_bench_bucc_score.py; files and
archives: test_bench_bucc_data.py."""
from __future__ import annotations

import json
import shutil

import pytest
from bucc_cases import (
    laser_reference,
    make_bucc_data,
    make_split,
    write_archive,
    write_files,
)
from conftest import need_shared, one_line_error
from typer.testing import CliRunner

from bitextmine.bench.bucc import (
    BuccSplit,
    choose_splits,
    find_bucc,
    optimize_threshold,
)
from bitextmine.cli.bench import bench_app
from bitextmine.errors import InputError

runner = CliRunner()


@pytest.fixture
def bucc_data(tmp_path):
    return make_bucc_data(tmp_path)




def run(*args, ok: bool = True):
    res = runner.invoke(bench_app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_choose_splits_defaults_and_errors(tmp_path):
    def split(name, gold=True):
        return BuccSplit("de-en", name, tmp_path / f"de-en.{name}.de", tmp_path / f"de-en.{name}.en",
                         tmp_path / f"de-en.{name}.gold" if gold else None)

    both = {"sample": split("sample"), "training": split("training"), "test": split("test", gold=False)}
    assert choose_splits("de-en", both, None, None) == ("sample", ["training"])
    assert choose_splits("de-en", {"sample": split("sample")}, None, None) == ("sample", ["sample"])
    assert choose_splits("de-en", {"training": split("training")}, None, None) == ("training", ["training"])
    assert choose_splits("de-en", both, "training", ["test", "sample", "test"]) == ("training", ["test", "sample"])
    sample_only = {"sample": split("sample")}
    cases = [
        (both, "nonsense", None, "tune_on", "unknown split 'nonsense'; BUCC splits are sample, training, test"),
        (both, None, ["sample", "dev"], "eval_on", "unknown split 'dev'"),
        (both, "test", None, "tune_on", "de-en: cannot tune on test: no gold file de-en.test.gold"),
        (sample_only, "training", None, "tune_on", r"de-en: no training split found \(splits found: sample\)"),
        (sample_only, None, ["test"], "eval_on", r"de-en: no test split found \(splits found: sample\)"),
    ]
    for splits, tune_on, eval_on, param, text in cases:
        with pytest.raises(InputError, match=text) as e:
            choose_splits("de-en", splits, tune_on, eval_on)
        assert e.value.param == param
    with pytest.raises(InputError, match="no split with a gold file"):
        choose_splits("de-en", {"test": split("test", gold=False)}, None, None)


def test_mined_split_matches_laser_reference_on_the_files(tiny_model, bucc_data, tmp_path):
    """End to end on real files: our pipeline's threshold and F1 equal the LASER-style reference run
    over the split's text files (ids and sentences cut from the 'id<TAB>sentence' lines) and the
    same mined candidates written as 'score<TAB>src<TAB>tgt' lines."""
    from bitextmine.bench.bucc import BuccOptions, mine_split
    from bitextmine.embed_cache import EmbeddingCache
    from bitextmine.encoder import Encoder
    from bitextmine.mining import MineOptions, mine_stores
    from bitextmine.models.loader import load_model

    data, _ = bucc_data
    split = find_bucc(data, cache_dir=tmp_path / "c")["de-en"]["training"]
    embed = EmbeddingCache(Encoder(load_model(str(tiny_model))), tmp_path / "c", id_column=True)
    ours = mine_split(split, embed, BuccOptions())
    choice = optimize_threshold(ours.pairs, ours.gold)

    src, tgt = embed(split.src), embed(split.tgt)
    cand = mine_stores(src, tgt, MineOptions(dedup=True)).pairs
    lines = [f"{sc!r}\t{s}\t{t}" for sc, s, t in zip(cand.score.tolist(), src.column("text", cand.src), tgt.column("text", cand.tgt))]
    cols = [[ln.split("\t", 1) for ln in p.read_text().splitlines()] for p in (split.src, split.tgt)]
    ref = laser_reference([c[0] for c in cols[0]], [c[1] for c in cols[0]], [c[0] for c in cols[1]], [c[1] for c in cols[1]],
                          lines, split.gold.read_text().splitlines())
    assert (choice.threshold, choice.precision, choice.recall, choice.f1) == ref
    assert len(ours.pairs) < len(cand)  # the sentence repeated on the source side was dropped


def test_run_bucc_results_files_plots_and_progress(tiny_model, tmp_path):
    """run_bucc without the CLI: the tuning split's threshold applied to training and to the test split
    (a submission file), one plot per split with gold, and the search reported as "mining <pair> <split>"."""
    from bitextmine.bench.bucc import BuccOptions, run_bucc
    from bitextmine.embed_cache import EmbeddingCache
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    data = tmp_path / "d"
    files = {}
    for name, seed, gold in (("sample", 1, True), ("training", 2, True), ("test", 3, False)):
        files.update(make_split("de", name, seed, gold=gold)[0])
    write_files(data, files)
    found = find_bucc(data, cache_dir=tmp_path / "c")
    embed = EmbeddingCache(Encoder(load_model(str(tiny_model))), tmp_path / "c", id_column=True)
    events, seen = [], []
    (r,) = run_bucc(found, embed, BuccOptions(eval_on=["training", "test"]), out_dir=tmp_path / "out", plots_dir=tmp_path / "plots",
                    listener=events.append, embedder_seconds=lambda: embed.seconds, on_pair=seen.append)
    assert seen == [r] and r.pair == "de-en" and r.tune.split == "sample" and [e.split for e in r.evals] == ["training", "test"]
    thr = r.tune.threshold
    assert r.tune.self_tuned and r.tune.f1 == r.tune.best["f1"] and r.tune.best["threshold"] == thr
    training, test = r.evals
    assert training.tuned_on == "sample" and training.threshold == thr and not training.self_tuned and training.gold == 12
    assert test.gold is None and test.f1 is None and test.best is None
    mined = (tmp_path / "out" / "de-en.test.pairs.tsv").read_text().splitlines()
    assert test.submission == str(tmp_path / "out" / "de-en.test.pairs.tsv") and len(mined) == test.extracted > 0
    assert r.plots == [str(tmp_path / "plots" / f"bucc-de-en-{s}.png") for s in ("sample", "training")]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["bucc-de-en-sample.png", "bucc-de-en-training.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["de-en.test.pairs.tsv"]  # no temporary file left
    searches = [(e.kind, e.what) for e in events if e.what.startswith("mining")]
    assert [w for k, w in searches if k == "start"] == ["mining de-en sample", "mining de-en training", "mining de-en test"]
    assert all(e.unit == "queries" for e in events if e.kind == "start" and e.what.startswith("mining"))


def test_cli_bucc_folder_json_plots_and_cache(tiny_model, bucc_data, tmp_path):
    data, _ = bucc_data
    cache = tmp_path / "cache"
    out_json = tmp_path / "r.json"
    res = run("bucc", "--data", data, "--model", tiny_model, "--cache", cache, "--json", out_json, "--plots", tmp_path / "plots")
    text = res.output
    assert "BUCC 2018 de-en" in text and "BUCC 2018 fr-en" in text
    assert "tuned on sample" in text and "best threshold on training" in text
    assert "tune-on = eval-on = sample" in text  # fr-en has only the sample split
    doc = json.loads(out_json.read_text())
    assert doc["model"]["fingerprint"] and doc["versions"]["bitextmine"] and doc["versions"]["torch"] and "faiss" in doc["versions"]
    assert doc["params"]["k"] == 4 and doc["params"]["margin"] == "ratio" and doc["params"]["strategy"] == "max"
    assert doc["params"]["splits"]["de-en"] == {"tune_on": "sample", "eval_on": ["training"]}
    by = {r["pair"]: r for r in doc["results"]}
    de = by["de-en"]
    assert de["tune"]["split"] == "sample" and de["evals"][0]["split"] == "training"
    # identical sentences are what the tiny model finds (not always every one: its weights are random)
    assert de["tune"]["best"]["f1"] >= 0.9 and de["evals"][0]["best"]["f1"] >= 0.9
    assert de["evals"][0]["tuned_on"] == "sample" and not de["evals"][0]["self_tuned"]
    # the sample's threshold, applied to training, cannot beat training's own best
    assert de["evals"][0]["gold"] == 15 and 0.5 < de["evals"][0]["f1"] <= de["evals"][0]["best"]["f1"]
    fr = by["fr-en"]
    assert fr["evals"][0]["self_tuned"] and fr["evals"][0]["f1"] == fr["evals"][0]["best"]["f1"] >= 0.9
    assert len(doc["encoded_now"]) == 6  # 3 splits x 2 sides
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["bucc-de-en-sample.png", "bucc-de-en-training.png", "bucc-fr-en-sample.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    # a second run with other mining parameters reuses every embedding
    stamp = sorted((f, f.stat().st_mtime_ns) for f in (cache / "embeddings").rglob("*.arrow"))
    run("bucc", "--data", data, "--model", tiny_model, "--cache", cache, "--json", out_json, "--strategy", "intersect", "-k", "3",
        "--pairs", "de-en", "--tune-on", "training", "--eval-on", "sample,training")
    assert stamp == sorted((f, f.stat().st_mtime_ns) for f in (cache / "embeddings").rglob("*.arrow"))
    doc = json.loads(out_json.read_text())
    assert doc["encoded_now"] == [] and doc["params"]["strategy"] == "intersect" and doc["params"]["k"] == 3
    assert [e["split"] for e in doc["results"][0]["evals"]] == ["sample", "training"]


def test_cli_bucc_archives_and_test_split(tiny_model, tmp_path):
    data = tmp_path / "downloads"
    data.mkdir()
    sample, _ = make_split("zh", "sample", 5)
    test, test_pairs = make_split("zh", "test", 6, gold=False)
    write_archive(data / "bucc2018-zh-en.sample-gold.tar.bz2", sample, "zh-en")
    write_archive(data / "bucc2018-zh-en.test.tar.bz2", test, "zh-en")
    cache = tmp_path / "cache"
    out = tmp_path / "submission"
    res = run("bucc", "--data", data, "--model", tiny_model, "--cache", cache, "--eval-on", "test", "--out", out,
              "--json", tmp_path / "r.json")
    assert "no gold" in res.output
    mined = [tuple(ln.split("\t")) for ln in (out / "zh-en.test.pairs.tsv").read_text().splitlines()]
    doc = json.loads((tmp_path / "r.json").read_text())
    r = doc["results"][0]["evals"][0]
    assert r["split"] == "test" and r["f1"] is None and r["submission"].endswith("zh-en.test.pairs.tsv")
    assert len(mined) == len(set(mined)) == r["extracted"] > 0
    ids = {ln.split("\t")[0] for name in ("zh-en.test.zh", "zh-en.test.en") for ln in test[name].splitlines()}
    assert all(s in ids and t in ids for s, t in mined)
    # the sample's threshold finds most hidden pairs of the test split (the tiny model scores them highest)
    assert len(set(test_pairs) & set(mined)) >= len(test_pairs) // 2
    assert doc["results"][0]["tune"]["files"]["archive"].endswith("bucc2018-zh-en.sample-gold.tar.bz2")
    # extracted once into the cache; the second run neither extracts nor encodes again
    extracted = sorted((cache / "bucc2018").iterdir())
    assert len(extracted) == 2 and all((d / ".complete").is_file() for d in extracted)
    run("bucc", "--data", data, "--model", tiny_model, "--cache", cache, "--eval-on", "test", "--out", out, "--json", tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["encoded_now"] == []


def test_cli_bucc_save_threshold(tiny_model, bucc_data, tmp_path):
    from bitextmine.models.loader import load_model

    data, _ = bucc_data
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before = load_model(str(model))
    assert before.recipe.threshold is None
    run("bucc", "--data", data, "--pairs", "de-en", "--model", model, "--cache", tmp_path / "c", "--save-threshold",
        "--json", tmp_path / "r.json")
    thr = json.loads((tmp_path / "r.json").read_text())["results"][0]["tune"]["threshold"]
    after = load_model(str(model))
    assert after.recipe.threshold == pytest.approx(thr)
    assert after.fingerprint == before.fingerprint  # embeddings stay valid
    assert (after.recipe.threshold_margin, after.recipe.threshold_k) == ("ratio", 4)
    # another scoring saves its own threshold with that scoring (mine applies it only under it)
    run("bucc", "--data", data, "--pairs", "de-en", "--model", model, "--cache", tmp_path / "c", "--save-threshold",
        "--margin", "distance", "-k", "3")
    again = load_model(str(model))
    assert (again.recipe.threshold_margin, again.recipe.threshold_k) == ("distance", 3)


@pytest.mark.parametrize("args,expect", [
    (lambda d, t: ["--data", t / "missing"], "no such folder"),
    (lambda d, t: ["--data", d, "--pairs", "ru-en"], "pair ru-en not found"),
    (lambda d, t: ["--data", t / "empty"], "no BUCC files found"),
    (lambda d, t: ["--data", d, "--pairs", "fr-en", "--eval-on", "training"], "no training split"),
    (lambda d, t: ["--data", d, "--tune-on", "nonsense"], "unknown split"),
])
def test_cli_bucc_bad_input(tiny_model, bucc_data, tmp_path, args, expect):
    data, _ = bucc_data
    (tmp_path / "empty").mkdir()
    res = run("bucc", *args(data, tmp_path), "--model", tiny_model, "--cache", tmp_path / "c", ok=False)
    assert expect in one_line_error(res)


def test_cli_bucc_missing_gold(tiny_model, tmp_path):
    data = tmp_path / "d"
    files, _ = make_split("de", "sample", 1, gold=False)
    write_files(data, files)
    res = run("bucc", "--data", data, "--model", tiny_model, "--cache", tmp_path / "c", ok=False)
    assert "no split with a gold file" in one_line_error(res)
    res = run("bucc", "--data", data, "--tune-on", "sample", "--model", tiny_model, "--cache", tmp_path / "c", ok=False)
    assert "no gold file de-en.sample.gold" in one_line_error(res)


def test_cli_bucc_bad_archive(tiny_model, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bucc2018-de-en.sample-gold.tar.bz2").write_bytes(b"not an archive")
    res = run("bucc", "--data", tmp_path / "d", "--model", tiny_model, "--cache", tmp_path / "c", ok=False)
    assert "cannot read the archive" in one_line_error(res)


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.slow
@pytest.mark.shared
def test_real_bucc_zh_en_sample(tmp_path):
    """The zh-en sample with the packaged E5-small: LASER's scripts give best-threshold F1 87.5 (P 91.1, R 84.1, threshold 1.022)."""
    data = need_shared("bucc2018", "zh-en")
    res = run("bucc", "--data", data, "--model", "e5-small", "--json", tmp_path / "r.json", "--plots", tmp_path / "plots")
    doc = json.loads((tmp_path / "r.json").read_text())
    r = doc["results"][0]["evals"][0]
    assert r["split"] == "sample" and r["self_tuned"] and r["gold"] == 257
    assert r["best"]["f1"] >= 0.85, res.output
    assert 1.0 < r["best"]["threshold"] < 1.05
    assert (tmp_path / "plots" / "bucc-zh-en-sample.png").is_file()


def test_gold_ids_absent_from_the_data(tmp_path):
    """Gold pairs whose ids are not in the split's files: a warning event and a count in the result; no
    gold pair found at all (the gold of another split) is an InputError before anything is embedded."""
    from bitextmine.bench.bucc import BuccOptions, check_gold, run_bucc

    files, _ = make_split("de", "sample", 1)
    other, _ = make_split("de", "training", 2)
    files["de-en.sample.gold"] += "de-sa999999\ten-sa000001\n"
    write_files(tmp_path / "d", files)
    split = find_bucc(tmp_path / "d")["de-en"]["sample"]
    c = check_gold(split)
    assert (c.gold, c.present, c.missing) == (13, 12, 1)

    def embed(p):
        raise AssertionError("embedded before the check")

    (tmp_path / "d" / "de-en.sample.gold").write_text(other["de-en.training.gold"])
    events = []
    with pytest.raises(InputError, match=r"de-en.sample.gold: none of its 12 gold pairs has both ids in"):
        run_bucc(find_bucc(tmp_path / "d"), embed, BuccOptions(), listener=events.append)
    assert events == []


def test_run_bucc_warns_about_absent_gold_ids(tiny_model, tmp_path):
    from bitextmine.bench.bucc import BuccOptions, run_bucc
    from bitextmine.embed_cache import EmbeddingCache
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    files, _ = make_split("de", "sample", 1)
    files["de-en.sample.gold"] += "de-sa999999\ten-sa000001\n"
    write_files(tmp_path / "d", files)
    embed = EmbeddingCache(Encoder(load_model(str(tiny_model))), tmp_path / "c", id_column=True)
    events = []
    (r,) = run_bucc(find_bucc(tmp_path / "d"), embed, BuccOptions(), listener=events.append)
    warnings = [e.data["message"] for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("de-en sample: 1 of 13 gold pairs")
    assert events[0].kind == "warning"  # before anything was embedded or mined
    assert r.tune.gold_missing == 1 and r.tune.gold == 13
