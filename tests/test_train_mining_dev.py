"""The mining-style dev set (training/data/miningdev.py): layout, scoring, and selection on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_faults_train import metrics, recipe, train, write_pairs

from bitextmine.training.data.devsets import DevSet
from bitextmine.training.data.miningdev import MiningDevSet, mining_dev, mining_f1


class _Lang:
    def __init__(self, dev):
        self.dev = dev


class _Data:
    def __init__(self, langs):
        self.langs = {k: _Lang(v) for k, v in langs.items()}


def _held(n, tag="x"):
    return [(f"{tag}{i}", f"en{i}") for i in range(n)]


def test_layout_gold_quarter_and_distractors_on_both_sides():
    data = _Data({"de": _held(40), "fr": _held(5)})
    flores = [DevSet("flores", "de", [f"fx{i}" for i in range(12)], [f"fe{i}" for i in range(12)])]
    (s,) = mining_dev(data, ["de", "fr"], 100, flores)  # fr has too few held-out pairs
    fx, fe = [f"fx{i}" for i in range(10)], [f"fe{i}" for i in range(10)]
    assert s.lang == "de" and len(s.gold) == 10 + 10  # a quarter of the held-out pairs, and as many Flores pairs
    assert s.src[:10] == [f"x{i}" for i in range(10)] and s.src[10:20] == fx
    assert s.src[20:] == [f"x{i}" for i in range(10, 25)]  # xx distractors: their English is absent
    assert sorted(s.tgt) == sorted([f"en{i}" for i in range(10)] + fe + [f"en{i}" for i in range(25, 40)])
    for i, j in s.gold:
        assert s.tgt[j] == {**{f"x{k}": f"en{k}" for k in range(10)}, **{f"fx{k}": f"fe{k}" for k in range(10)}}[s.src[i]]
    assert mining_dev(data, ["de"], 100, flores)[0].tgt == s.tgt  # a fixed shuffle


def test_f1_is_one_for_a_perfect_embedder_and_drops_when_distractors_look_like_partners():
    s = MiningDevSet("mining", "de", ["a", "b", "c", "d", "e"], ["A", "B", "C", "Z"], {(0, 0), (1, 1), (2, 2)})
    rng = np.random.default_rng(0)
    base = {k: v / np.linalg.norm(v) for k, v in zip("abcdez", rng.normal(size=(6, 16)))}

    def perfect(texts):
        return np.stack([base[t.lower()] for t in texts]).astype(np.float32)

    f1, thr = mining_f1(s, perfect)
    assert f1 == pytest.approx(1.0) and thr > 0

    def confused(texts):  # the partner of "c" looks exactly like the distractor "d"
        return np.stack([base["d" if t == "C" else t.lower()] for t in texts]).astype(np.float32)

    assert mining_f1(s, confused)[0] < 1.0


def test_training_selects_on_mining_f1(tmp_path, tiny_model, monkeypatch):
    write_pairs(tmp_path / "data", n=200)
    # Flores-style gold pairs whose two sides are the same text: findable even by the random tiny model
    flores = tmp_path / "flores"
    flores.mkdir()
    lines = "".join(f"sentence number {i} of the news\n" for i in range(20))
    for name in ("eng_Latn", "deu_Latn", "fra_Latn"):
        (flores / f"{name}.txt").write_text(lines, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = recipe(tmp_path, tiny_model, steps=2, save_every=2, eval_every=2)
    res = train("--config", cfg, "--out", tmp_path / "run", "--set", 'eval.select_on="mining"', "--set", "data.dev_max=40",
                "--set", f'eval.flores_dir="{flores}"')
    assert "mining F1" in res.output
    evals = [r for r in metrics(tmp_path / "run") if r["kind"] == "eval"]
    assert evals and 0 < evals[-1]["mining_f1"] <= 1
    # the threshold tuned on the mining dev set (no evaluation set) ships in the exported recipe
    info = json.loads((tmp_path / "run" / "checkpoints" / "best" / "info.json").read_text())
    rec = json.loads((tmp_path / "run" / "model" / "bitextmine_recipe.json").read_text())
    assert rec["threshold"] == pytest.approx(info["eval"]["mining"]["threshold"])
    assert rec["threshold_margin"] == "ratio" and rec["threshold_k"] == 4


def test_retrieval_selection_ships_no_threshold(tmp_path, tiny_model, monkeypatch):
    write_pairs(tmp_path / "data", n=120)
    monkeypatch.chdir(tmp_path)
    train("--config", recipe(tmp_path, tiny_model, steps=2, save_every=2, eval_every=2), "--out", tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "model" / "bitextmine_recipe.json").read_text())
    assert rec.get("threshold") is None
