"""Near-threshold pairs of an approximate index re-scored with exact neighbourhoods (bitextmine.refine):
the threshold then cuts where exact search cuts, whatever pairs the index found."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.errors import InputError
from bitextmine.mining import MineOptions, mine_embeddings
from test_knn_fidelity import isotropic

SPEC, NPROBE = "IVF32,SQfp16", 4  # few lists probed: many k-NN means too low, so inflated scores


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray, float, dict]:
    x, y, _ = isotropic()
    ex = mine_embeddings(x, y, index="flat")
    thr = float(np.quantile(ex.score, 0.4))
    exact = {p: s for p, s in zip(zip(ex.src.tolist(), ex.tgt.tolist()), ex.score.tolist()) if s >= thr}
    return x, y, thr, exact


def _pairs(c) -> dict:
    return dict(zip(zip(c.src.tolist(), c.tgt.tolist()), c.score.tolist()))


def test_refined_threshold_admits_no_pair_exact_search_cuts(case) -> None:
    x, y, thr, exact = case
    found = _pairs(mine_embeddings(x, y, index=SPEC, nprobe=NPROBE))  # every pair the index selects, no threshold
    plain = _pairs(mine_embeddings(x, y, MineOptions(index=SPEC, nprobe=NPROBE, threshold=thr, refine_band=0)))
    refined = _pairs(mine_embeddings(x, y, MineOptions(index=SPEC, nprobe=NPROBE, threshold=thr)))
    assert len(set(plain) - set(exact)) > 20  # without it: inflated scores cross the threshold
    assert not set(refined) - set(exact)  # with it: none
    # what it still misses are pairs the index never selected at all (recall, not scores)
    assert set(exact) - set(refined) <= set(exact) - set(found) | set(exact) - set(plain)
    # and the near-threshold scores it re-computed equal exact search's
    for p, s in refined.items():
        if s < thr * 1.005:  # the starting band: always searched exactly
            assert s == pytest.approx(exact[p], rel=1e-5)


def test_exact_index_and_no_threshold_are_left_alone(case) -> None:
    x, y, thr, exact = case
    from bitextmine.mining import _search_and_select

    for opts in (MineOptions(index="flat", threshold=thr), MineOptions(index=SPEC, nprobe=NPROBE)):
        notes: dict = {}
        _search_and_select(x, y, opts, None, None, notes)
        assert "refined" not in notes
    notes = {}
    _search_and_select(x, y, MineOptions(index=SPEC, nprobe=NPROBE, threshold=thr), None, None, notes)
    r = notes["refined"]
    assert r["pairs"] > 0 and 0 < r["src_rows"] < len(x) and r["band"] >= 0.005
    assert r["search"] == "flat"  # 8 x 4 probes would be all 32 lists: exact neighbourhoods


def test_wider_search_probes_eight_times_the_lists() -> None:
    from bitextmine.knn import knn, knn_pair

    x, y, _ = isotropic()
    kept: dict = {}
    (_, fi), (_, bi) = knn_pair(x, y, 4, index="IVF128,Flat", nprobe=4, keep=kept)
    wider = kept["wider"]
    assert wider.probes == 32 and wider.describe() == "IVF128,Flat (nprobe 32)"
    rows = np.arange(0, len(x), 3)
    for side, (q, db, narrow) in enumerate(((x, y, fi), (y, x, bi))):
        wd, wi = wider.search(q[rows], side, 4)
        _, ei = knn(q[rows], db, 4)  # exact
        recall = lambda got: np.mean([len(set(a) & set(b)) for a, b in zip(got, ei)]) / 4  # noqa: E731
        assert recall(wi) > 0.97 > recall(narrow[rows]) + 0.05  # fewer neighbours missed than the search's own
        dots = np.einsum("ij,ikj->ik", q[rows], db[wi])
        np.testing.assert_allclose(wd, dots, atol=1e-6)  # true similarities of the rows found
    assert "wider" not in (lambda k: (knn_pair(x, y, 4, index="IVF32,Flat", nprobe=4, keep=k), k)[1])({})  # 32 of 32: none


def test_refine_searches_wider_where_the_lists_are_many(case) -> None:
    from bitextmine.mining import _search_and_select

    x, y, thr, exact = case
    plain = _pairs(mine_embeddings(x, y, MineOptions(index="IVF128,SQfp16", nprobe=2, threshold=thr, refine_band=0)))
    notes: dict = {}
    got = _search_and_select(x, y, MineOptions(index="IVF128,SQfp16", nprobe=2, threshold=thr), None, None, notes)
    refined = {p for p, s in _pairs(got).items() if s >= thr}
    assert notes["refined"]["search"] == "IVF128,SQfp16 (nprobe 16)" and notes["refined"]["src_rows"] > 0
    assert len(set(plain) - set(exact)) > 100  # inflated scores cross the threshold without it
    assert len(refined - set(exact)) < len(set(plain) - set(exact)) / 3  # most no longer do


def test_band_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError):
        MineOptions(refine_band=0.9)


def test_mine_summary_says_how_the_band_was_searched(case, tmp_path) -> None:
    from test_scale import write_store
    from typer.testing import CliRunner

    from bitextmine.cli import app

    x, y, thr, _ = case
    write_store(tmp_path / "x", x, [len(x)])
    write_store(tmp_path / "y", y, [len(y)])
    args = ["mine", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "p.tsv"), "--threshold", f"{thr}"]
    wide = CliRunner().invoke(app, [*args, "--index", "IVF128,SQfp16", "--nprobe", "2"])
    assert wide.exit_code == 0, wide.output
    assert "searched again" in wide.output and "IVF128,SQfp16 (nprobe 16)" in " ".join(wide.output.split())
    args[4] = str(tmp_path / "q.tsv")
    exact = CliRunner().invoke(app, [*args, "--index", "IVF32,SQfp16", "--nprobe", "4"])
    assert exact.exit_code == 0, exact.output
    assert "exactly" in exact.output
