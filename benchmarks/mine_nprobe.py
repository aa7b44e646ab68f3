"""How many IVF lists to probe: recovery of exact search's true pairs against nprobe, with and
without centred probing, on the structured synthetic set of ``benchmarks/mine.py``.

    .venv/bin/python benchmarks/mine_nprobe.py [--n 100000] [--nlist 1024] [--nprobe 8 16 32 64 128]

One process: exact k-NN both ways (k = 4), then for each nprobe the IVF search both ways
(``IVF{nlist},SQfp16``, one training on both sides), each followed by the ratio margin and the
max strategy. ``centred``: bitextmine's CPU path (each side centred on its mean for list
assignment, lists store the original vectors); ``plain``: the same index searched FAISS's way
(lists assigned on the raw vectors, as FAISS and its GPU indexes do). Reported per run: seconds,
the fraction of the true pairs found by exact search that the run also finds, the fraction of all
true pairs found, and k-NN recall@4 against exact search (first 20,000 sources).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_result  # noqa: E402
from mine import write_folders  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bitextmine-bench-mine")
    ap.add_argument("--name", default="mine-nprobe")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    import bitextmine.knn as K
    from bitextmine.margin import select
    from bitextmine.store import EmbeddingStore

    src, tgt, truth = write_folders(args.n, args.work, 0.5, 0)
    xs, ys = EmbeddingStore(src), EmbeddingStore(tgt)
    T = set(map(tuple, truth.tolist()))
    t = time.perf_counter()
    f, b = K.knn_pair(xs, ys, 4)
    exact_s = time.perf_counter() - t
    c = select(*f, *b)
    E = set(zip(c.src.tolist(), c.tgt.tolist())) & T
    print(f"exact: {exact_s:.0f} s, true pairs {len(E) / len(T):.4f}", flush=True)
    rows = []
    centred_spec = K._centred_spec
    for mode in ("centred", "plain"):
        K._centred_spec = centred_spec if mode == "centred" else (lambda spec: None)
        try:
            for nprobe in args.nprobe:
                t = time.perf_counter()
                f2, b2 = K.knn_pair(xs, ys, 4, index=f"IVF{args.nlist},SQfp16", nprobe=nprobe)
                sec = time.perf_counter() - t
                c2 = select(*f2, *b2)
                A = set(zip(c2.src.tolist(), c2.tgt.tolist())) & T
                m = min(20_000, len(f[1]))
                recall = float(np.mean([len(set(a) & set(e)) / 4 for a, e in zip(f2[1][:m].tolist(), f[1][:m].tolist())]))
                row = {"probing": mode, "nprobe": nprobe, "seconds": round(sec, 1), "recovery_vs_exact": round(len(A & E) / len(E), 5),
                       "true_pairs_recovered": round(len(A) / len(T), 5), "knn_recall_at_4": round(recall, 5)}
                rows.append(row)
                print(row, flush=True)
        finally:
            K._centred_spec = centred_spec
    path = write_result(args.name, {**header(), "benchmark": "mine-nprobe", "n": args.n, "nlist": args.nlist, "threads": args.threads,
                                    "exact_seconds": round(exact_s, 1), "exact_true_pairs_recovered": round(len(E) / len(T), 5), "results": rows})
    print("written", path)


if __name__ == "__main__":
    main()
