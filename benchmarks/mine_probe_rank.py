"""How many IVF lists ``auto`` must probe: for sampled queries, the probe rank of the lists that hold
their exact nearest neighbours, on the structured synthetic set of ``benchmarks/mine.py``.

    .venv/bin/python benchmarks/mine_probe_rank.py [--n 1000000] [--sample 2000] [--name mine-probe-rank-1m]

One process, no full search: the coarse quantizer ``auto`` trains for the set (centred lists,
``bitextmine.knn.centred``), every database vector filed under its list, and for ``--sample``
random queries each way their exact top-4 neighbours (FAISS IndexFlatIP) and the rank of each
neighbour's list among the query's centred probes. Reported for each nprobe: the fraction of
queries whose nearest neighbour is in a probed list (top1), the fraction of the exact top-4 found
in probed lists (recall@4) and the fraction of the database the probes scan. Cheap where a full
run per nprobe (``benchmarks/mine_nprobe.py``) is not: one coarse training and one assignment.
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
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bitextmine-bench-mine")
    ap.add_argument("--name", default="mine-probe-rank-1m")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    from bitextmine.knn.bylist import _assign
    from bitextmine.knn.centred import _Coarse
    from bitextmine.knn.policy import auto_index
    from bitextmine.knn.workers import _Workers
    from bitextmine.store import EmbeddingStore

    src, tgt, _ = write_folders(args.n, args.work, 0.5, 0)
    xs, ys = EmbeddingStore(src), EmbeddingStore(tgt)
    spec, params = auto_index(len(ys), ys.dim)
    result = {**header(), "benchmark": "mine-probe-rank", "n": args.n, "index": spec, "train_size": params["train_size"],
              "auto_nprobe": params["nprobe"], "sample": args.sample, "directions": {}}
    t = time.perf_counter()
    coarse = _Coarse.train(spec, [xs, ys], params["train_size"], 0, 65536, fit=[0, 1])
    result["train_seconds"] = round(time.perf_counter() - t, 1)
    X = np.concatenate(list(xs.iter_blocks(1 << 18)))
    Y = np.concatenate(list(ys.iter_blocks(1 << 18)))
    rng = np.random.default_rng(1)
    nlist = coarse.nlist
    with _Workers() as workers:
        for name, Q, q_side, D, d_side in (("src->tgt", X, 0, Y, 1), ("tgt->src", Y, 1, X, 0)):
            filed = np.concatenate([_assign(coarse.quantizer, D[i : i + 65536] - coarse.means[d_side], 1, workers).ravel()
                                    for i in range(0, len(D), 65536)])
            q = Q[rng.choice(len(Q), args.sample, replace=False)]
            flat = faiss.IndexFlatIP(D.shape[1])
            flat.add(D)
            _, I = flat.search(q, 4)
            order = _assign(coarse.quantizer, q - coarse.means[q_side], nlist, workers)  # every list, nearest first
            pos = np.empty_like(order)
            pos[np.arange(len(q))[:, None], order] = np.arange(nlist)[None, :]
            rank = np.take_along_axis(pos, filed[I], axis=1)  # (sample, 4): probe rank of each neighbour's list
            sizes = np.bincount(filed, minlength=nlist)
            rows = []
            for p in args.nprobe:
                rows.append({"nprobe": p, "top1": round(float((rank[:, 0] < p).mean()), 5),
                             "recall_at_4": round(float((rank < p).mean()), 5),
                             "scan_fraction": round(float(sizes[order[:, :p]].sum(1).mean() / len(D)), 5)})
                print(name, rows[-1], flush=True)
            result["directions"][name] = rows
            del flat
    print("written", write_result(args.name, result))


if __name__ == "__main__":
    main()
