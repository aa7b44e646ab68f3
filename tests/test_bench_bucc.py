"""bench bucc: threshold sweep and F1 against hand-made and random candidates (with an independent
LASER-style reference), the BUCC layouts (folders and .tar.bz2 archives) through the CLI on tiny
models, bad input, and the real zh-en sample with the default model (slow)."""
from __future__ import annotations

import io
import json
import math
import random
import shutil
import tarfile

import numpy as np
import pytest
from conftest import make_sentences, need_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bitextmine.bench.bucc import (
    IdPairs,
    candidates_to_ids,
    evaluate_at,
    find_bucc,
    optimize_threshold,
    read_gold,
    sweep,
    unique_sentence_ids,
)
from bitextmine.cli_bench import bench_app
from bitextmine.errors import InputError

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# hand-made candidates with known answers


def test_sweep_and_best_threshold_by_hand():
    # ranked: gold, gold, wrong, gold, wrong; one more gold pair is never a candidate
    cands = {("s1", "t1"): 1.30, ("s2", "t2"): 1.20, ("s3", "t9"): 1.10, ("s4", "t4"): 1.00, ("s5", "t8"): 0.90}
    gold = {("s1", "t1"), ("s2", "t2"), ("s4", "t4"), ("s6", "t6")}
    sw = sweep(cands, gold)
    assert list(sw.is_gold) == [True, True, False, True, False]
    assert np.allclose(sw.precision, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    assert np.allclose(sw.recall, [1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4])
    # F1 after each candidate: 0.4, 0.667, 0.571, 0.75, 0.667 -> best after the 4th candidate
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == pytest.approx(0.95)  # midpoint between 1.00 and 0.90
    assert (p, r) == (0.75, 0.75) and f1 == pytest.approx(0.75)
    ev = evaluate_at(thr, cands, gold)
    assert (ev.extracted, ev.correct, ev.gold) == (4, 3, 4)
    # a stricter threshold: 2 extracted, both right
    ev = evaluate_at(1.15, cands, gold)
    assert (ev.extracted, ev.correct, ev.precision, ev.recall) == (2, 2, 1.0, 0.5)
    assert ev.f1 == pytest.approx(2 / 3)


def test_best_cut_at_the_first_candidate_and_at_the_last():
    gold = {("a", "b")}
    thr, p, r, f1 = optimize_threshold({("a", "b"): 2.0, ("c", "d"): 1.0}, gold)
    assert thr == 1.5 and (p, r, f1) == (1.0, 1.0, 1.0)
    # the best cut is the last candidate: no next score, so the threshold is its own score
    thr, p, r, f1 = optimize_threshold({("c", "d"): 2.0, ("a", "b"): 1.0}, gold)
    assert thr == 1.0 and (p, r) == (0.5, 1.0)


def test_no_correct_candidate():
    thr, p, r, f1 = optimize_threshold({("a", "x"): 1.2, ("b", "y"): 1.1}, {("a", "b")})
    assert math.isinf(thr) and (p, r, f1) == (0.0, 0.0, 0.0)
    ev = evaluate_at(thr, {("a", "x"): 1.2}, {("a", "b")})
    assert ev.extracted == 0
    assert optimize_threshold({}, {("a", "b")})[3] == 0.0


def test_ties_at_the_threshold_are_all_extracted():
    # the sweep's best cut falls inside a tie: extracting ">= threshold" takes both tied candidates
    cands = {("a", "a"): 1.5, ("b", "b"): 1.2, ("c", "x"): 1.2, ("d", "y"): 1.0}
    gold = {("a", "a"), ("b", "b")}
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == 1.2  # midpoint of two equal scores
    assert (p, r) == (2 / 3, 1.0)  # what extracting at the threshold gives (as LASER prints)


def test_duplicate_texts_are_dropped_and_repeated_id_pairs_keep_the_best_score():
    src = unique_sentence_ids(["s1", "s2", "s3", "s4"], ["one", "two", "two ", "four"])
    # "two" occurs twice (after strip), under s2 and s3: it cannot be mapped to one id
    assert src == {"one": "s1", "four": "s4"}
    tgt = unique_sentence_ids(["t1", "t2", "t4"], ["uno", "dos", "cuatro"])
    pairs = candidates_to_ids(
        ["one", "two", "four", "one", "unknown"],
        ["uno", "dos", "cuatro", "uno", "dos"],
        [1.1, 1.4, 1.3, 1.2, 1.5],
        src, tgt,
    )
    # "two" and "unknown" have no id; ("s1", "t1") was met twice and keeps 1.2, its best; best first
    assert pairs.keys() == [("s4", "t4"), ("s1", "t1")]
    assert list(pairs.score) == [1.3, 1.2]
    # gold pairs involving the dropped sentence still count in recall
    gold = {("s1", "t1"), ("s2", "t2"), ("s4", "t4")}
    thr, p, r, f1 = optimize_threshold(pairs, gold)
    assert (p, r) == (1.0, 2 / 3) and thr == 1.2  # the best cut takes both: the last candidate


def test_candidates_absent_from_gold_lower_precision_only():
    cands = IdPairs.from_scores([(("a", "a"), 1.5), (("x", "y"), 1.4), (("b", "b"), 1.3)])
    gold = {("a", "a"), ("b", "b")}
    thr, p, r, f1 = optimize_threshold(cands, gold)
    assert thr == pytest.approx(1.3) and (p, r) == (2 / 3, 1.0)


def test_read_gold(tmp_path):
    (tmp_path / "g").write_text("zh-1\ten-7\n\nzh-2\ten-3\n")
    assert read_gold(tmp_path / "g") == {("zh-1", "en-7"), ("zh-2", "en-3")}
    (tmp_path / "bad").write_text("zh-1 en-7\n")
    with pytest.raises(InputError, match="bad:1"):
        read_gold(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------
# against an independent, straightforward port of LASER's tasks/bucc/bucc.py


def laser_reference(src_ids, src_texts, tgt_ids, tgt_texts, candidate_lines, gold_lines):
    """LASER's procedure, loop by loop over text lines: sentence→id maps without repeated sentences,
    candidate lines 'score<TAB>src<TAB>tgt', the F1 sweep, extraction at the threshold.
    One deviation, at an edge LASER does not handle: when the best cut is the last candidate
    (LASER raises IndexError), the threshold is that candidate's score."""
    maps = []
    for ids, texts in ((src_ids, src_texts), (tgt_ids, tgt_texts)):
        sent2id, repeated = {}, set()
        for i, sent in zip(ids, texts):
            sent = sent.strip()
            if sent in sent2id:
                repeated.add(sent)
            else:
                sent2id[sent] = i
        for sent in repeated:
            del sent2id[sent]
        maps.append(sent2id)
    src_sent2id, trg_sent2id = maps
    candidate2score = {}
    for line in candidate_lines:
        score, src, trg = line.split("\t")
        score = float(score)
        src, trg = src.strip(), trg.strip()
        if src in src_sent2id and trg in trg_sent2id:
            key = (src_sent2id[src], trg_sent2id[trg])
            candidate2score[key] = max(score, candidate2score.get(key, score))
    gold = {line.strip() for line in gold_lines}
    items = sorted(candidate2score.items(), key=lambda x: -x[1])
    nextract = ncorrect = 0
    threshold, best_f1 = 0, 0
    for i in range(len(items)):
        nextract += 1
        if "\t".join(items[i][0]) in gold:
            ncorrect += 1
        if ncorrect > 0:
            precision = ncorrect / nextract
            recall = ncorrect / len(gold)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (items[i][1] + items[i + 1][1]) / 2 if i + 1 < len(items) else items[i][1]
    bitexts = ["\t".join(k) for k, s in candidate2score.items() if s >= threshold]
    ncorrect = len(gold.intersection(bitexts))
    if ncorrect > 0:
        precision = ncorrect / len(bitexts)
        recall = ncorrect / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0
    return threshold, precision, recall, f1


@st.composite
def bucc_case(draw):
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    n_src = draw(st.integers(1, 25))
    n_tgt = draw(st.integers(1, 25))
    src_texts = [draw(st.sampled_from(words)) + draw(st.sampled_from(["", " ", " x"])) for _ in range(n_src)]
    tgt_texts = [draw(st.sampled_from(words)).upper() + draw(st.sampled_from(["", " y"])) for _ in range(n_tgt)]
    src_ids = [f"xx-{i:06d}" for i in range(n_src)]
    tgt_ids = [f"en-{i:06d}" for i in range(n_tgt)]
    # scores on a coarse grid, so ties happen
    score = st.one_of(st.integers(80, 140).map(lambda v: v / 100), st.floats(0.5, 1.6, allow_nan=False))
    cands = draw(st.lists(st.tuples(st.integers(0, n_src - 1), st.integers(0, n_tgt - 1), score), max_size=40))
    gold = draw(st.sets(st.tuples(st.integers(0, n_src - 1), st.integers(0, n_tgt - 1)), min_size=1, max_size=15))
    return src_ids, src_texts, tgt_ids, tgt_texts, cands, gold


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bucc_case())
def test_matches_laser_reference(case):
    src_ids, src_texts, tgt_ids, tgt_texts, cands, gold_idx = case
    # candidates in any order (mine writes them best first; both sides handle any order alike)
    lines = [f"{sc!r}\t{src_texts[i]}\t{tgt_texts[j]}" for i, j, sc in cands]
    gold_lines = [f"{src_ids[i]}\t{tgt_ids[j]}\n" for i, j in gold_idx]
    ref = laser_reference(src_ids, src_texts, tgt_ids, tgt_texts, lines, gold_lines)

    pairs = candidates_to_ids([src_texts[i] for i, _, _ in cands], [tgt_texts[j] for _, j, _ in cands],
                              [sc for _, _, sc in cands],
                              unique_sentence_ids(src_ids, src_texts), unique_sentence_ids(tgt_ids, tgt_texts))
    gold = {(src_ids[i], tgt_ids[j]) for i, j in gold_idx}
    ours = optimize_threshold(pairs, gold)
    assert ours.f1 == ref[3] and ours.precision == ref[1] and ours.recall == ref[2]
    if ref[3] > 0:
        assert ours.threshold == ref[0]
    ev = evaluate_at(ours.threshold, pairs, gold)
    assert (ev.precision, ev.recall, ev.f1) == (ours.precision, ours.recall, ours.f1)


# ---------------------------------------------------------------------------------------------
# the layout and the CLI, on tiny models


def one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def run(*args, ok: bool = True):
    res = runner.invoke(bench_app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def make_split(lang: str, split: str, seed: int, n_gold: int = 12, n_noise: int = 20, gold: bool = True):
    """Texts for one split: ``n_gold`` sentences on both sides (identical text: the tiny model scores them
    highest), noise on each side, one sentence repeated on the source side (LASER drops it)."""
    common = make_sentences(n_gold, seed=seed)
    noise = make_sentences(2 * n_noise + 1, seed=seed + 1000)
    noise = [s for s in noise if s not in common]
    src = common + noise[:n_noise] + [noise[0]]  # noise[0] twice on the source side
    tgt = list(reversed(common)) + noise[n_noise : 2 * n_noise]
    rng = random.Random(seed)
    order_s, order_t = list(range(len(src))), list(range(len(tgt)))
    rng.shuffle(order_s)
    rng.shuffle(order_t)
    files = {}
    files[f"{lang}-en.{split}.{lang}"] = "".join(f"{lang}-{split[:2]}{k:06d}\t{src[i]}\n" for k, i in enumerate(order_s))
    files[f"{lang}-en.{split}.en"] = "".join(f"en-{split[:2]}{k:06d}\t{tgt[i]}\n" for k, i in enumerate(order_t))
    sid = {src[i]: f"{lang}-{split[:2]}{k:06d}" for k, i in enumerate(order_s)}
    tid = {tgt[i]: f"en-{split[:2]}{k:06d}" for k, i in enumerate(order_t)}
    pairs = [(sid[s], tid[s]) for s in common]
    if gold:
        files[f"{lang}-en.{split}.gold"] = "".join(f"{a}\t{b}\n" for a, b in pairs)
    return files, pairs


def write_files(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def write_archive(path, files, pair):
    with tarfile.open(path, "w:bz2") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"bucc2018/{pair}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def bucc_data(tmp_path):
    """de-en in a per-pair folder (sample + training with gold), fr-en files directly in the root (sample)."""
    data = tmp_path / "bucc"
    de_s, de_s_gold = make_split("de", "sample", 1)
    de_t, de_t_gold = make_split("de", "training", 2, n_gold=15, n_noise=30)
    write_files(data / "de-en", {**de_s, **de_t})
    fr_s, _ = make_split("fr", "sample", 3)
    write_files(data, fr_s)
    (data / "README.md").write_text("not data\n")
    return data, de_t_gold


def test_mined_split_matches_laser_reference_on_the_files(tiny_model, bucc_data, tmp_path):
    """End to end on real files: our pipeline's threshold and F1 equal the LASER-style reference run
    over the split's text files (ids and sentences cut from the 'id<TAB>sentence' lines) and the
    same mined candidates written as 'score<TAB>src<TAB>tgt' lines."""
    from bitextmine.bench.bucc import BuccOptions, mine_split
    from bitextmine.bench.common import CachedEmbedder
    from bitextmine.encode import Encoder
    from bitextmine.mine import MineOptions, mine_stores
    from bitextmine.models.loader import load_model

    data, _ = bucc_data
    split = find_bucc(data, cache_dir=tmp_path / "c")["de-en"]["training"]
    embed = CachedEmbedder(Encoder(load_model(str(tiny_model))), tmp_path / "c", id_column=True)
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


def test_find_bucc_layouts(bucc_data, tmp_path):
    data, _ = bucc_data
    found = find_bucc(data, cache_dir=tmp_path / "c")
    assert sorted(found) == ["de-en", "fr-en"]
    assert sorted(found["de-en"]) == ["sample", "training"]
    assert found["de-en"]["training"].gold.name == "de-en.training.gold"
    assert list(find_bucc(data, pairs=["fr"], cache_dir=tmp_path / "c")) == ["fr-en"]
    with pytest.raises(InputError, match="pair ru-en not found"):
        find_bucc(data, pairs=["ru-en"], cache_dir=tmp_path / "c")


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
    res = run("bucc", "--data", data, "--model", model, "--save-threshold", "--margin", "distance", ok=False)
    assert "--save-threshold" in one_line_error(res)


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
    res = run("bucc", "--data", data, "--json", tmp_path / "r.json", "--plots", tmp_path / "plots")
    doc = json.loads((tmp_path / "r.json").read_text())
    r = doc["results"][0]["evals"][0]
    assert r["split"] == "sample" and r["self_tuned"] and r["gold"] == 257
    assert r["best"]["f1"] >= 0.85, res.output
    assert 1.0 < r["best"]["threshold"] < 1.05
    assert (tmp_path / "plots" / "bucc-zh-en-sample.png").is_file()
