"""The by-list scan of an SQ8 index at the 10M shape: its codes read as they are against each list decoded and quantised.

    .venv/bin/python benchmarks/mine_sq8.py [--n 1000000] [--nlist 1640] [--queries 9000] [--nprobe 8] [--reps 3] [--name mine-sq8]

At 10M vectors ``auto`` builds ``IVF16384,SQ8`` (3.9 GB of codes): the int8 copy of its lists does not fit the scan's
cache, so every query block visits every list with ~43 queries (87k rows x 8 probes / 16,384 lists). This benchmark
keeps that shape on one machine in minutes: ``--n`` database vectors of the structured synthetic set
(``benchmarks/mine.py``) in ``--nlist`` lists (1M / 1,640: ~610 rows a list, as 10M / 16,384), one block of
``--queries`` queries probing ``--nprobe`` lists (9,000 x 8 / 1,640: ~44 queries a list), the list cache off. Both
scans, interleaved, in one process (the first run of each discarded as warm-up): the seconds of the block, the
candidates re-scored in float32, and whether the neighbours and similarities are the same bits.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, matmul_peaks, write_result  # noqa: E402
from mine import write_folders  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nlist", type=int, default=1640)
    ap.add_argument("--queries", type=int, default=9_000)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bitextmine-bench-mine")
    ap.add_argument("--name", default="mine-sq8")
    args = ap.parse_args()

    import faiss

    from bitextmine.knn import bylist, int8, sq8
    from bitextmine.knn.sources import ArrayBlocks
    from bitextmine.store import EmbeddingStore

    faiss.omp_set_num_threads(args.threads)
    result = {**header(), "benchmark": "mine-sq8", "n": args.n, "nlist": args.nlist, "queries": args.queries,
              "nprobe": args.nprobe, "matmul_peak_at_start": matmul_peaks(args.threads)}
    src, tgt, _ = write_folders(args.n, args.work, 0.5, 0)
    y = np.concatenate(list(EmbeddingStore(tgt).iter_blocks(1 << 18))).astype(np.float32)
    x = next(iter(EmbeddingStore(src).iter_blocks(args.queries))).astype(np.float32)
    t = time.perf_counter()
    index = faiss.index_factory(y.shape[1], f"IVF{args.nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(y[np.random.default_rng(0).choice(len(y), min(len(y), 64 * args.nlist), replace=False)])
    index.add(y)
    index.nprobe = args.nprobe
    del y
    result["build_seconds"] = round(time.perf_counter() - t, 1)
    ivf = bylist._ivf_of(index)
    int8.LIST_CACHE_BYTES, bylist.DECODED_CACHE_BYTES = 0, 0  # as at 10M: nothing fits the caches

    rescored = [0]
    real_exact, real_direct = bylist._exact, sq8.direct

    def counting(xq, xb, rows, cols):
        rescored[0] += len(rows)
        return real_exact(xq, xb, rows, cols)

    bylist._exact = counting
    runs: dict[str, list] = {"codes as they are": [], "decoded and quantised": []}
    out = {}
    for rep in range(args.reps + 1):
        for name, direct in (("codes as they are", real_direct), ("decoded and quantised", lambda reader: False)):
            sq8.direct, rescored[0] = direct, 0
            t = time.perf_counter()
            out[name] = bylist._search_ivf_by_list(ivf, ArrayBlocks(x), 4, len(x), None)
            sec = time.perf_counter() - t
            if rep:
                runs[name].append({"seconds": round(sec, 3), "rescored": rescored[0]})
            print(rep, name, round(sec, 3), rescored[0], flush=True)
    (D1, I1), (D2, I2) = out.values()
    result["runs"] = runs
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    result["speedup_best"] = round(best["decoded and quantised"] / best["codes as they are"], 2)
    result["same_bits"] = bool(np.array_equal(I1, I2) and np.array_equal(D1, D2))
    result["matmul_peak_at_end"] = matmul_peaks(args.threads)
    print({k: result[k] for k in ("speedup_best", "same_bits")})
    print("written", write_result(args.name, result))


if __name__ == "__main__":
    main()
