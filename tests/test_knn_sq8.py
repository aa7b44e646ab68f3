"""SQ8 lists read as int8 codes (bitextmine.knn.sq8): the estimate's bound holds for any data, and the scan
returns the same bits as the scan that decodes every list."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from bitextmine.knn import bylist, int8, sq8
from bitextmine.knn.sources import ArrayBlocks
from bitextmine.knn.workers import _Workers

pytestmark = pytest.mark.skipif(not int8.int8_ready(), reason="no exact int8 matrix products on this CPU (no VNNI / AMX)")
KINDS = [(faiss.ScalarQuantizer.QT_8bit, True), (faiss.ScalarQuantizer.QT_8bit, False), (faiss.ScalarQuantizer.QT_8bit_uniform, True)]


def _rows(n: int, d: int, seed: int, hostile: bool = True) -> np.ndarray:
    """Unit rows around a shared direction; ``hostile``: some far from unit length, some with one huge coordinate, some zero."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    a = 2.0 * mu / np.linalg.norm(mu) + rng.standard_normal((n, d)) / np.sqrt(d)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    if not hostile:
        return a.astype(np.float32)
    a[::7] *= rng.uniform(0.01, 30, (len(a[::7]), 1))
    a[3::11, 5] = 40.0
    a[::13] = 0.0
    return a.astype(np.float32)


def _index(y: np.ndarray, qtype: int, residual: bool, nlist: int = 12) -> tuple[faiss.IndexIVFScalarQuantizer, faiss.Index]:
    """(the filled index, its quantizer: keep both referenced)."""
    quantizer = faiss.IndexFlatIP(y.shape[1])
    index = faiss.IndexIVFScalarQuantizer(quantizer, y.shape[1], nlist, qtype, faiss.METRIC_INNER_PRODUCT, residual)
    index.train(y)
    index.add(y)
    return index, quantizer


@pytest.mark.parametrize("qtype,residual", KINDS)
@pytest.mark.parametrize("d,hostile", [(24, True), (384, True), (384, False)])
def test_estimate_within_its_slack_of_the_float32_product_and_the_lower_kth_below_the_true_one(
        qtype: int, residual: bool, d: int, hostile: bool) -> None:
    """Sound for any rows (hostile: the codes' range set by a few huge rows); tight where the rows are alike."""
    y, x = _rows(900, d, 1, hostile), _rows(200, d, 2, hostile)
    index, _keep = _index(y, qtype, residual)
    reader = bylist._ListReader(index)
    assert sq8.direct(reader)
    lists = sq8.Sq8Lists(reader)
    q = bylist._Queries(x, "int8", False, _Workers(1), lists)
    who = np.arange(len(x))
    for l in range(index.nlist):
        xb, ids = reader.read(l)
        if not len(ids):
            continue
        A, b, ids2, slack = lists._estimates(q, who, l)
        np.testing.assert_array_equal(ids, ids2)
        est = A[:, None] + q.int8.codes.scale[:, None] * (q.int8.codes.gather(who).numpy().astype(np.int64) @ b.numpy().astype(np.int64).T)
        f32 = x @ xb.T  # the float32 scan's values (any summation order)
        exact = x.astype(np.float64) @ xb.astype(np.float64).T
        for want in (f32.astype(np.float64), exact):
            assert (np.abs(want - est) <= slack[:, None]).all()
        if not hostile:  # tight enough to prune: unit rows' estimates err by well under 1% of their length
            assert np.median(slack) < 0.01
        if len(ids) >= 3:
            kth = lists.lower_kth(q, who, l, 3)
            assert kth.dtype == np.float32 and (kth <= np.sort(f32, axis=1)[:, -3]).all()


@pytest.mark.parametrize("qtype,residual", KINDS)
def test_scan_of_the_codes_as_they_are_gives_the_bits_of_the_decoding_scan(qtype: int, residual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "int8")
    x, y = _rows(1200, 64, 3), _rows(2500, 64, 4)
    y[1::97] = y[0::97][: len(y[1::97])]  # duplicates: ties listed by id
    index, _keep = _index(y, qtype, residual, nlist=20)
    index.nprobe = 5
    visits = []
    real = sq8.Sq8Lists.entries
    monkeypatch.setattr(sq8.Sq8Lists, "entries", lambda self, *a: visits.append(1) or real(self, *a))
    D, I = bylist._search_ivf_by_list(index, ArrayBlocks(x), 6, 500, None)
    assert visits  # the codes were read as they are
    monkeypatch.setattr(sq8, "direct", lambda reader: False)
    monkeypatch.setattr(int8, "LIST_CACHE_BYTES", 0)  # the decoding scan, each list decoded and quantised at each visit
    D2, I2 = bylist._search_ivf_by_list(index, ArrayBlocks(x), 6, 500, None)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    assert (I >= 0).all() and np.isfinite(D).all()  # (brute force over the probed lists: tests/test_knn_bylist.py)


def test_only_8_bit_inner_product_codes_are_read_as_they_are() -> None:
    y = _rows(600, 16, 5)
    for qtype, metric, want in ((faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT, True),
                                (faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False),
                                (faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT, False),
                                (faiss.ScalarQuantizer.QT_8bit_direct, faiss.METRIC_INNER_PRODUCT, False),
                                (faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2, False)):
        quantizer = faiss.IndexFlat(16, metric)
        index = faiss.IndexIVFScalarQuantizer(quantizer, 16, 4, qtype, metric)
        index.train(y)
        assert sq8.direct(bylist._ListReader(index)) is want
    flat = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 4, faiss.METRIC_INNER_PRODUCT)
    assert not sq8.direct(bylist._ListReader(flat))
