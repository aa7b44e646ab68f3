"""Int8 estimates of the by-list scan (bitextmine.knn.int8): the error bound holds for any data, and the
scan's neighbours do not depend on the precision of its estimates."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.knn import int8, knn_pair, tiles

READY = pytest.mark.skipif(not int8.int8_ready(), reason="no exact int8 matrix products on this CPU (no VNNI / AMX)")


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


@pytest.mark.parametrize("d", [7, 384, 4096])
def test_quantize_norms_bound_the_exact_ones_from_above_and_closely(d: int) -> None:
    """Norms taken in float32 in code units, rounded up: never below the float64 truth, within 1e-3 of it,
    for rows of any size (tiny rows with subnormal coordinates, huge rows) and for one scale a group (where
    rows 1e66 times smaller than their group's largest get a loose bound, still above the truth)."""
    x = _rows(200, d, 2).astype(np.float64)
    x[1::9] *= 1e-36  # subnormal coordinates in float32
    x[2::9] *= 1e30
    x = x.astype(np.float32)
    for groups in (None, np.array([50, 1, 100, 49])):
        codes, scale, resid, coded, norm = int8.quantize(x, groups=groups)
        s = scale if groups is None else np.repeat(scale, groups)
        x64, q64 = x.astype(np.float64), codes.astype(np.float64) * s[:, None]
        # closely: rows within 2^20 of their scale (a row far below it, in a list with a huge row, is bounded loosely)
        near = np.abs(x64).max(axis=1) >= s * 127 * 2.0**-20
        for got, want in ((resid, np.linalg.norm(x64 - q64, axis=1)), (coded, np.linalg.norm(q64, axis=1)),
                          (norm, np.linalg.norm(x64, axis=1))):
            assert (got >= want).all()
            assert (got <= want * (1 + 1e-3) + 1e-3 * np.linalg.norm(x64, axis=1))[near].all()
            assert (got[~near] <= 1e-3 * s[~near]).all()


@READY
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
        bound = int8.slack(int8.norm_term(qr, qnorm, d), qn, float(xnorm[sl].max()), float(xr[sl].max()))[:, None]
        assert (np.abs(exact[:, sl] - est) <= bound).all()
        assert (np.abs(f32[:, sl].astype(np.float64) - est) <= bound).all()  # float32's own rounding inside
    unit = ~np.isin(np.arange(len(q)), np.r_[0:300:7, 0:300:13, 3:300:11])
    assert np.median(qr[unit]) < 0.02  # ... and tight enough to prune: unit rows err by ~1% of their length


@READY
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


@READY
def test_lists_past_the_cache_are_quantised_at_each_visit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "int8")
    x, y = _rows(1500, 48, 4), _rows(2000, 48, 5)
    kept = knn_pair(x, y, 4, index="IVF16,SQfp16", nprobe=4, train_size=1500)
    monkeypatch.setattr(int8, "LIST_CACHE_BYTES", 0)
    again = knn_pair(x, y, 4, index="IVF16,SQfp16", nprobe=4, train_size=1500)
    for a, b in zip(kept, again):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])


@READY
def test_int8_where_the_cpu_has_int8_matrix_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BITEXTMINE_KNN_PRECISION", raising=False)
    monkeypatch.delenv("BITEXTMINE_KNN_SCAN_PRECISION", raising=False)
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
    monkeypatch.setenv("BITEXTMINE_KNN_PRECISION", "bf16")
    monkeypatch.setenv("BITEXTMINE_KNN_SCAN_PRECISION", "auto")  # Ray workers: the tiles pinned, the scan by the CPU
    monkeypatch.setattr(tiles, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert tiles.scan_precision() == "int8" and tiles.precision() == "bf16"


def test_int8_products_are_used_only_where_they_are_exact() -> None:
    """Without VNNI / AMX, oneDNN's int8 kernels sum pairs of products in saturating 16-bit lanes: wrong products
    near +-127. Run with oneDNN held to AVX2 (as on an AVX2-only CPU): int8 must then be refused, even when forced."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "from bitextmine.knn import int8, tiles\n"
        "rng = np.random.default_rng(1)\n"
        "a = rng.integers(-127, 128, (50, 384), dtype=np.int8); b = rng.integers(-127, 128, (70, 384), dtype=np.int8)\n"
        "exact = np.array_equal(torch._int_mm(torch.from_numpy(a), torch.from_numpy(b).T).numpy(), a.astype(np.int64) @ b.astype(np.int64).T)\n"
        "print(exact, int8.int8_ready(), tiles.scan_precision())\n"
    )
    for isa in ("AVX2", None):
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ONEDNN_MAX_CPU_ISA")}
        env["BITEXTMINE_KNN_PRECISION"] = "int8"
        if isa:
            env["ONEDNN_MAX_CPU_ISA"] = isa
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
        exact, ready, prec = out[0] == "True", out[1] == "True", out[2]
        assert ready == exact  # the check finds out
        assert (prec == "int8") == exact  # never int8 products that are not exact


@READY
@pytest.mark.parametrize("d", [8, 64])
def test_every_pair_at_its_querys_bound_is_kept(d: int) -> None:
    """Bounds at each pair's own float32 value (the tightest a search can reach): every such pair is returned,
    whether its int8 estimate falls above or below it (small d: the bound is nearly tight)."""
    from types import SimpleNamespace

    from bitextmine.knn.bylist import _exact
    from bitextmine.knn.workers import _Workers

    rng = np.random.default_rng(d)
    xb, xq = _rows(90, d, 10 + d), _rows(120, d, 20 + d)
    ids = np.arange(1000, 1000 + len(xb), dtype=np.int64)

    class Reader:
        def read(self, l: int) -> tuple[np.ndarray, np.ndarray]:
            return xb, ids

    Reader.d = d
    lists = int8.Int8Lists(Reader(), np.array([len(xb)]), _Workers(1))
    q = SimpleNamespace(a=xq, int8=int8.Int8Queries(xq, _Workers(1)))
    who = np.arange(len(xq))
    exact = _exact(xq, xb, np.repeat(who, len(xb)), np.tile(np.arange(len(xb)), len(xq)))[2].reshape(len(xq), len(xb))
    below = 0
    for col in rng.permutation(len(xb))[:30]:
        thr = exact[:, col].astype(np.float32)
        est = (q.int8.words.view(np.int8).astype(np.int64) @ lists.get(0)[0].numpy().astype(np.int64).T)[:, col] \
            * q.int8.scale * lists.get(0)[1]
        below += int((est < thr).sum())
        rows, got, v = int8.entries(q, who, 0, lists, thr, _exact)
        hit = set(zip(rows.tolist(), got.tolist()))
        assert all((r, ids[col]) in hit for r in who), col
        assert (v >= thr[rows]).all()
    assert below > 0  # estimates under the bound were there to be pruned wrongly
