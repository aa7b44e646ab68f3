"""Int8 estimates of the by-list scan (bitextmine.knn.int8): the error bound holds for any data, and the
scan's neighbours do not depend on the precision of its estimates."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.knn import int8, knn_pair, tiles

pytestmark = pytest.mark.skipif(not int8.int8_ready(), reason="this torch build has no int8 matrix products")


def _rows(n: int, d: int, seed: int) -> np.ndarray:
    """Rows of many kinds: unit with a large shared direction, unnormalised, one huge coordinate, zero."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    a = 2.0 * mu / np.linalg.norm(mu) + rng.standard_normal((n, d)) / np.sqrt(d)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a[::7] *= rng.uniform(0.01, 30, (len(a[::7]), 1))  # lengths far from 1
    a[3::11, 5] = 40.0  # one coordinate sets the scale
    a[::13] = 0.0
    return a.astype(np.float32)


@pytest.mark.parametrize("d", [37, 64, 384])
def test_estimate_plus_its_slack_bounds_the_float32_product(d: int) -> None:
    q, x = _rows(300, d, 0), _rows(500, d, 1)
    groups = np.array([120, 1, 250, 129])  # lists: one scale for each group of rows
    qc, qs, qr, qn, qnorm = int8.quantize(q)
    xc, xs, xr, _, xnorm = int8.quantize(x, groups=groups)
    at = np.cumsum(groups) - groups
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    f32 = q @ x.T
    for g, (a, n) in enumerate(zip(at, groups)):
        sl = slice(a, a + n)
        est = (qc.astype(np.int64) @ xc[sl].astype(np.int64).T) * qs[:, None] * xs[g]
        bound = int8.slack(qr, qn, qnorm, float(xnorm[sl].max()), float(xr[sl].max()), d)[:, None]
        assert (np.abs(exact[:, sl] - est) <= bound).all()
        assert (np.abs(f32[:, sl].astype(np.float64) - est) <= bound).all()  # float32's own rounding inside
    unit = ~np.isin(np.arange(len(q)), np.r_[0:300:7, 0:300:13, 3:300:11])
    assert np.median(qr[unit]) < 0.02  # ... and tight enough to prune: unit rows err by ~1% of their length


def test_scan_gives_the_same_bits_with_int8_bf16_and_float32_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _rows(2500, 64, 2), _rows(3000, 64, 3)
    y[1::97] = y[0::97][: len(y[1::97])]  # duplicates: ties listed by id
    out = {}
    for prec in ("int8", "bf16", "fp32"):
        monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", prec)
        assert tiles.scan_precision() == prec
        out[prec] = knn_pair(x, y, 5, index="IVF16,SQfp16", nprobe=4, block_rows=900, train_size=2000)
    for prec in ("bf16", "fp32"):
        for a, b in zip(out["int8"], out[prec]):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_lists_past_the_cache_are_quantised_at_each_visit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "int8")
    x, y = _rows(1500, 48, 4), _rows(2000, 48, 5)
    kept = knn_pair(x, y, 4, index="IVF16,SQfp16", nprobe=4, train_size=1500)
    monkeypatch.setattr(int8, "LIST_CACHE_BYTES", 0)
    again = knn_pair(x, y, 4, index="IVF16,SQfp16", nprobe=4, train_size=1500)
    for a, b in zip(kept, again):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])


def test_int8_where_the_cpu_has_int8_matrix_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BITEXTMINE_KNN_PRECISION", raising=False)
    monkeypatch.setattr(tiles, "_chosen", {})
    monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    assert tiles.scan_precision() == "int8" and tiles.precision() == "fp32"  # the exact tiles: no bf16 units
    monkeypatch.setattr(tiles, "_chosen", {})
    monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_int8"})
    assert tiles.scan_precision() == "int8" and tiles.precision() == "bf16"
    monkeypatch.setattr(tiles, "_chosen", {})
    monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", "fma"})
    assert tiles.scan_precision() == "fp32"
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "int8")
    assert tiles.scan_precision() == "int8" and tiles.precision() == "fp32"
