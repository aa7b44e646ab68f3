"""The by-list scan's float32 products in numpy's BLAS (OpenBLAS) and torch's (MKL), one thread, in ONE process.

    .venv/bin/python benchmarks/scan_blas.py [--name scan-blas]

The by-list IVF scan (``bitextmine.knn.bylist``) multiplies each list (n rows: 64-256 at 100k with
1,024 lists) with the m query rows that probe it (hundreds to ~6,000): ``(m x 384) x (384 x n)``, an
output with few columns. This times those shapes on one thread, as each scan worker runs them:

1. numpy (OpenBLAS) first, in a fresh process ("cold");
2. torch (``torch.mm``, MKL on x86 wheels), as ``bitextmine.knn.tiles.estimate32`` takes them;
3. numpy again after ONE large product with many output columns ((4096 x 384) x (384 x 8192), the
   product the benchmarks' peak measurement runs): on the AVX2 EPYC that first large product leaves
   OpenBLAS running the narrow shapes ~1.5x faster for the rest of the process ("warm"); a
   ``bitextmine mine`` process has made no such numpy product before its scan.

Reported: GFLOP/s per shape and engine, and the single-thread peak on the large square-ish product
(numpy, torch), measured in the same run. Query rows are gathered from a 65,536-row block, as the scan does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_result  # noqa: E402

DIM = 384
SHAPES = [(m, n) for n in (64, 98, 160, 244) for m in (500, 2000, 4096)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="scan-blas")
    ap.add_argument("--seconds", type=float, default=0.6, help="time spent on each shape and engine")
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((65536, DIM), dtype=np.float32)
    lists = rng.standard_normal((256, DIM), dtype=np.float32)
    gathered = {m: block[np.sort(rng.choice(len(block), m, replace=False))] for m in {m for m, _ in SHAPES}}

    def rate(f, flops: float) -> float:
        f()
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < args.seconds:
            f()
            reps += 1
        return round(reps * flops / (time.perf_counter() - t) / 1e9, 1)

    def engines(name: str) -> dict[str, float]:
        out = {}
        for m, n in SHAPES:
            a, b = gathered[m], np.ascontiguousarray(lists[:n])
            if name == "torch":
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                out[f"{m}x{n}"] = rate(lambda: torch.mm(ta, tb.T).numpy(), 2 * m * n * DIM)
            else:
                out[f"{m}x{n}"] = rate(lambda: a @ b.T, 2 * m * n * DIM)
        return out

    result = {**header(), "benchmark": "scan_blas", "dim": DIM, "threads": 1, "shapes": [f"{m}x{n}" for m, n in SHAPES]}
    big_a, big_b = block[:4096], rng.standard_normal((8192, DIM), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        result["numpy_cold"] = engines("numpy")
        result["torch"] = engines("torch")
        result["peak_torch_gflops"] = rate(lambda: torch.mm(torch.from_numpy(big_a), torch.from_numpy(big_b).T), 2 * 4096 * 8192 * DIM)
        result["peak_numpy_gflops"] = rate(lambda: big_a @ big_b.T, 2 * 4096 * 8192 * DIM)  # this first large product warms OpenBLAS
        result["numpy_warm"] = engines("numpy")
    for key in ("numpy_cold", "torch", "numpy_warm"):
        v = np.array(list(result[key].values()))
        result[f"{key}_median"] = float(np.median(v))
    print({k: v for k, v in result.items() if k.endswith(("median", "gflops"))})
    for s in result["shapes"]:
        print(f"{s:>10}  numpy cold {result['numpy_cold'][s]:5.1f}  torch {result['torch'][s]:5.1f}  numpy warm {result['numpy_warm'][s]:5.1f}")
    print("written", write_result(args.name, result))


if __name__ == "__main__":
    main()
