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


def test_band_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError):
        MineOptions(refine_band=0.9)
