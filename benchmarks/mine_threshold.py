"""Does a threshold tuned with exact search select the same pairs under ``auto`` at scale? (issue 14)

    .venv/bin/python benchmarks/mine_threshold.py --n 1000000 [--threshold 1.0070239] [--exact] [--reuse] [--name NAME]

The embedding folders are ``benchmarks/mine.py``'s structured synthetic set (reused when present).
``mine_stores`` runs with ``index="auto"`` and the threshold, as ``bitextmine mine --threshold T``
does (near-threshold pairs re-searched: ``bitextmine.refine``), in this process; its time and
refinement are reported. The threshold is an input, as a threshold saved from ``bench bucc`` is:
by default the one that maximises F1 of exact search's pairs against the true pairs on the same
kind of data at 100k (``benchmarks/results/mine-speed-14i.json``, structured: 1.0070239), a
crowded place for scores (15% of the pairs within 1% above it).

What differs from exact search at that threshold, as a share of exact's selected pairs:

* pairs ``auto`` selects that exact search cuts (its score above the threshold, exact's below):
  estimated by stratified sampling of ``auto``'s selected pairs: up to ``--band-sample`` of those
  scoring within ``--band`` above the threshold and ``--rest-sample`` above that; for each sampled
  pair, exact k-NN lists of its source and target against the whole other side give its exact
  ratio-margin score (cosine over the mean of the two neighbourhood means, k = 4);
* pairs exact search selects that ``auto`` does not (the index never found them, or their score):
  the share ``auto`` lacks of the sampled pairs exact search selects, by ``benchmarks/mine.py``'s
  local exact estimator (exact scores and forward/backward choices of the pair; selected when it is
  chosen, is not beaten by a rival choice, and scores at least the threshold), on two samples:
  ``--true-sample`` true pairs, and ``--source-sample`` random sources each with its nearest target
  (which also holds the wrong pairs exact search selects). Each gives an estimate, with a 95%
  interval for this part (Wilson), which dominates.

``auto``'s pairs are saved in the work folder; ``--reuse`` samples them again without mining.

With ``--exact`` (affordable up to ~100k here), exact mining also runs with the threshold and the
real shares are reported beside the estimates: the estimator's check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, matmul_peaks, write_result  # noqa: E402
from mine import exact_local, write_folders  # noqa: E402

#: The exact-tuned threshold of the structured set at 100k (mine-speed-14i.json, threshold_check).
THRESHOLD_100K = 1.0070239009710087


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion hits / n."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    mid, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (mid - half) / (1 + z * z / n)), min(1.0, (mid + half) / (1 + z * z / n))


def exact_scores(xs, ys, pairs: np.ndarray, k: int = 4) -> np.ndarray:
    """Exact ratio-margin scores of ``pairs`` (src, tgt), neighbourhoods from exact search of all of both sides."""
    from bitextmine.scoring import score_pairs

    src, tgt = (s.embeddings(pairs[:, i].astype(np.int64)) for i, s in enumerate((xs, ys)))
    return score_pairs(src, tgt, k, "ratio", reference=(xs, ys), index="flat")


def mine(xs, ys, index: str, threshold: float, band: float | None = None) -> tuple[dict, dict]:
    from bitextmine.mining import MineOptions, mine_stores

    opts = MineOptions(k=4, index=index, threshold=threshold, **({} if band is None else {"refine_band": band}))
    t = time.perf_counter()
    res = mine_stores(xs, ys, opts)
    got = dict(zip(zip(res.pairs.src.tolist(), res.pairs.tgt.tolist()), res.pairs.score.tolist()))
    return got, {"seconds": round(time.perf_counter() - t, 1), "pairs": len(got), "index": res.index, "refined": res.refined}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threshold", type=float, default=THRESHOLD_100K)
    ap.add_argument("--exact", action="store_true", help="also mine exactly and report the real differences")
    ap.add_argument("--band", type=float, default=0.02, help="relative width above the threshold sampled apart")
    ap.add_argument("--band-sample", type=int, default=2000)
    ap.add_argument("--rest-sample", type=int, default=500)
    ap.add_argument("--true-sample", type=int, default=2000)
    ap.add_argument("--source-sample", type=int, default=2000, help="random sources, each with its nearest target")
    ap.add_argument("--reuse", action="store_true", help="load auto's pairs saved by an earlier run with the same n and threshold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bitextmine-bench-mine")
    ap.add_argument("--name", default="mine-threshold")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    from bitextmine.store import EmbeddingStore

    from bitextmine.knn import knn

    thr = args.threshold
    result = {**header(), "benchmark": "mine-threshold", "n": args.n, "threshold": thr, "k": 4, "margin": "ratio",
              "strategy": "max", "threads": args.threads, "matmul_peak_at_start": matmul_peaks(args.threads)}
    src, tgt, truth = write_folders(args.n, args.work, 0.5, args.seed)
    xs, ys = EmbeddingStore(src), EmbeddingStore(tgt)
    saved = args.work / f"auto-pairs-{args.n}-{thr!r}.npz"
    if args.reuse and saved.is_file():
        z = np.load(saved, allow_pickle=False)
        auto = dict(zip(map(tuple, z["pairs"].tolist()), z["scores"].tolist()))
        result["auto"] = {**json.loads(str(z["info"])), "reused": str(saved)}
    else:
        auto, result["auto"] = mine(xs, ys, "auto", thr)
        np.savez(saved, pairs=np.array(list(auto), dtype=np.int64).reshape(-1, 2), scores=np.array(list(auto.values())),
                 info=json.dumps(result["auto"]))
    print("auto:", result["auto"], flush=True)
    rng = np.random.default_rng(args.seed + 2)

    # pairs auto selects that exact search cuts: stratified by auto's score
    pairs = np.array(list(auto), dtype=np.int64).reshape(-1, 2)
    scores = np.array(list(auto.values()))
    strata = {"band": scores < thr * (1 + args.band), "rest": scores >= thr * (1 + args.band)}
    t = time.perf_counter()
    est: dict = {"band": args.band}
    only_auto = 0.0
    for name, m, size in (("band", strata["band"], args.band_sample), ("rest", strata["rest"], args.rest_sample)):
        idx = np.flatnonzero(m)
        pick = np.sort(rng.choice(idx, size=min(size, len(idx)), replace=False)) if len(idx) else idx
        below = exact_scores(xs, ys, pairs[pick]) < thr if len(pick) else np.zeros(0, bool)
        share = float(below.mean()) if len(pick) else 0.0
        only_auto += share * len(idx)
        est[name] = {"pairs": int(len(idx)), "sampled": int(len(pick)), "exact_below_threshold": int(below.sum()),
                     "share": round(share, 5)}
    # pairs exact search selects that auto lacks: on true pairs, and on random sources with their nearest target
    src_pick = np.sort(rng.choice(len(xs), size=min(args.source_sample, len(xs)), replace=False))
    nearest = knn(xs.embeddings(src_pick), ys, 1)[1][:, 0] if len(src_pick) else np.zeros(0, np.int64)
    samples = {"true_pairs": truth[np.sort(rng.choice(len(truth), size=min(args.true_sample, len(truth)), replace=False))],
               "sources": np.stack([src_pick, nearest], 1).astype(np.int64)}
    for name, sample in samples.items():
        chosen, score = exact_local(xs, ys, sample, with_scores=True)
        kept = chosen & (score >= thr)
        lacks = np.array([tuple(p) not in auto for p in sample.tolist()], dtype=bool) & kept
        miss = float(lacks.sum() / max(kept.sum(), 1))
        lo, hi = wilson(int(lacks.sum()), int(kept.sum()))
        exact_n = (len(auto) - only_auto) / (1 - miss)  # |E| = |A| - only_auto + only_exact, only_exact = miss |E|
        est[name] = {"sampled": int(len(sample)), "exact_selects": int(kept.sum()), "auto_lacks": int(lacks.sum()),
                     "share": round(miss, 5), "share_95pct": [round(lo, 5), round(hi, 5)],
                     "only_exact": round(miss * exact_n, 1), "exact_selected": round(exact_n, 1),
                     "differing_share": round(only_auto / exact_n + miss, 5),
                     "differing_share_95pct": [round(only_auto / exact_n + lo, 5), round(only_auto / exact_n + hi, 5)]}
    est.update({"only_auto": round(only_auto, 1), "seconds": round(time.perf_counter() - t, 1)})
    result["estimate"] = est
    print("estimate:", est, flush=True)
    if args.exact:
        exact, result["exact"] = mine(xs, ys, "flat", thr)
        a, e = set(auto), set(exact)
        result["actual"] = {"only_auto": len(a - e), "only_exact": len(e - a), "exact_selected": len(e),
                            "differing_share": round(len(a ^ e) / max(len(e), 1), 5)}
        print("actual:", result["actual"], flush=True)
    result["within_0.5pct_estimate"] = {name: est[name]["differing_share"] <= 0.005 for name in samples}
    result["matmul_peak_at_end"] = matmul_peaks(args.threads)
    print("written", write_result(args.name, result))


if __name__ == "__main__":
    main()
