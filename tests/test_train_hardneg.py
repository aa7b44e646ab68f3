"""Hard negatives (training/data/hardneg.py): what is chosen, how batches carry them, a run that uses them,
and evaluating the starting weights (eval.at_start)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_faults_train import metrics, recipe, same_weights, train, write_pairs

from bitextmine.training.data import hardneg as HN
from bitextmine.training.data.batches import make_batch
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout
from bitextmine.training.losses import translation_ranking_loss


def test_normalise_ignores_case_punctuation_and_accelerators():
    assert HN.normalise("Save _As...") == HN.normalise("save as") == "saveas"
    assert HN.normalise("Play first 500 ms") != HN.normalise("Play last 500 ms")


def test_choose_skips_the_partner_its_copies_and_anything_scored_above_it():
    # query 0's neighbours in order: itself, a copy of its English, one scored above its partner, then 3 and 4
    ids = np.array([[0, 1, 2, 3, 4]])
    sims = np.array([[0.9, 0.85, 0.95, 0.8, 0.7]], dtype=np.float32)
    positive = np.array([0.9], dtype=np.float32)
    texts = ["openfile", "openfile", "x", "y", "z"]
    out = HN.choose(sims, ids, positive, texts, n=1, depth=1, rng=np.random.default_rng(0))
    assert out.tolist() == [[3]]  # the nearest valid one
    two = HN.choose(sims, ids, positive, texts, n=2, depth=2, rng=np.random.default_rng(0))
    assert sorted(two[0].tolist()) == [3, 4]


def test_choose_tops_up_a_tiny_pool_with_other_rows():
    ids = np.array([[0, 1], [1, 0]])
    sims = np.ones((2, 2), dtype=np.float32)  # nothing is scored below the partner
    out = HN.choose(sims, ids, np.ones(2, dtype=np.float32), ["a", "b"], n=1, depth=1, rng=np.random.default_rng(0))
    assert out.tolist() == [[1], [0]]


def _data(n=6):
    lay = TokenLayout(head=(0,), tail=(2,), prefix=(), pad_id=1, mask_id=3, max_length=16)
    seq = Ragged.from_lists([[10 + i, 20 + i] for i in range(n)])
    tgt = Ragged.from_lists([[100 + i] for i in range(n)])
    d = LangData(seq, tgt, tgt, [], np.array([[(i + 1) % n, (i + 2) % n] for i in range(n)]))
    return PreparedData({"de": d}, lay, {}, "fp")


def test_batches_carry_each_pairs_negatives_in_order():
    b = make_batch(_data(), [(0, 0), (0, 4)])
    assert b.neg_ids.shape[0] == 4  # two per pair
    assert b.neg_ids[:, 1].tolist() == [101, 102, 105, 100]  # English of rows 1, 2 (pair 0) and 5, 0 (pair 4)
    assert b.neg_key.shape == (4,) and b.neg_key[3] != b.neg_key[2]
    assert make_batch(_data(), [(0, 5)]).neg_key[0] == make_batch(_data(), [(0, 0)]).tgt_key[0]  # same sentence, same key


def test_restrict_cuts_to_the_pool():
    d = _data(6)
    negs = {"de": np.zeros((3, 1), dtype=np.int64)}
    r = HN.restrict(d, negs, 3)
    assert len(r.langs["de"]) == 3 and r.langs["de"].tgt[2].tolist() == [102] and r.langs["de"].neg.shape == (3, 1)


def test_a_hard_negative_that_looks_like_the_partner_raises_the_loss():
    torch.manual_seed(0)
    src, tgt = torch.randn(4, 8), torch.randn(4, 8)
    far = -src  # negatives pointing away from their queries
    near = src + 0.05 * torch.randn(4, 8)  # negatives next to them
    base = translation_ranking_loss(src, tgt)
    with_far = translation_ranking_loss(src, tgt, all_tgt=torch.cat([tgt, far]))
    with_near = translation_ranking_loss(src, tgt, all_tgt=torch.cat([tgt, near]))
    assert base <= with_far < with_near


def test_training_with_hard_negatives_mines_once_and_shares_them(tmp_path, tiny_model, monkeypatch):
    write_pairs(tmp_path / "data", n=60)
    monkeypatch.chdir(tmp_path)
    cfg = recipe(tmp_path, tiny_model, steps=2, save_every=2, eval_every=2)
    sets = ["--set", "objective.hard_negatives=1", "--set", "objective.hard_negative_pool=20", "--set", 'data.cache_dir="cache"']
    res = train("--config", cfg, "--out", tmp_path / "a", *sets)
    assert "mining hard negatives" in res.output
    (npz,) = (tmp_path / "cache").glob("hardneg-*.npz")
    with np.load(npz) as z:
        assert set(z.files) == {"de", "fr"} and z["de"].shape == (20, 1)
        for lang in ("de", "fr"):
            assert (z[lang][:, 0] != np.arange(20)).all()  # never the pair's own English
    before = npz.stat().st_mtime_ns
    res = train("--config", cfg, "--out", tmp_path / "b", *sets)  # same model, data and settings: read, not mined
    assert "mining hard negatives" not in res.output and npz.stat().st_mtime_ns == before
    assert same_weights(tmp_path / "a" / "model", tmp_path / "b" / "model")
    plain = train("--config", cfg, "--out", tmp_path / "c", "--set", 'data.cache_dir="cache"')
    assert plain.exit_code == 0 and not same_weights(tmp_path / "a" / "model", tmp_path / "c" / "model")


@pytest.mark.parametrize("bad", ["objective.hard_negatives=-1", "objective.hard_negative_depth=0"])
def test_bad_hard_negative_settings_are_one_line(tmp_path, tiny_model, bad):
    from test_faults_train import one_error_line

    write_pairs(tmp_path / "data", n=20)
    res = train("--config", recipe(tmp_path, tiny_model), "--out", tmp_path / "r", "--set", bad, ok=False)
    one_error_line(res, "hard_negative")


def test_at_start_evaluates_the_starting_weights_and_can_keep_them(tmp_path, tiny_model, monkeypatch):
    """With eval.at_start the starting weights are scored as step 0; when no trained step beats them (here the dev
    score is made to fall with every evaluation) they are what is exported, and the run says so."""
    from bitextmine.training import loop

    write_pairs(tmp_path / "data", n=60)
    monkeypatch.chdir(tmp_path)
    scores = iter([0.9, 0.5, 0.4])

    def falling(*args, **kwargs):
        return {"split": {"langs": {}, "mean": next(scores)}}

    monkeypatch.setattr(loop, "evaluate", falling)
    cfg = recipe(tmp_path, tiny_model, steps=4, save_every=2, eval_every=2)
    res = train("--config", cfg, "--out", tmp_path / "r", "--set", "eval.at_start=true")
    evals = [r for r in metrics(tmp_path / "r") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4] and evals[-1]["best_step"] == 0
    assert "starting model" in res.output
    from safetensors.numpy import load_file

    start, out = load_file(str(tiny_model / "model.safetensors")), load_file(str(tmp_path / "r" / "model" / "model.safetensors"))
    assert len(set(start) & set(out)) >= len(start) - 2  # the same tensors (a pooler aside)
    moved = [k for k in start if k in out and not np.array_equal(start[k], out[k])]
    assert not moved, moved[:3]
    # without at_start the same run exports the best trained step instead
    scores = iter([0.5, 0.4])
    res = train("--config", cfg, "--out", tmp_path / "s")
    assert [r["step"] for r in metrics(tmp_path / "s") if r["kind"] == "eval"] == [2, 4] and "starting model" not in res.output
