"""Mining speed side by side, in ONE process and run: a LASER-procedure reference, bitextmine exact, bitextmine auto.

    .venv/bin/python benchmarks/mine_speed.py [--n 100000] [--data structured isotropic] [--name mine-speed]

* ``reference``: the LASER procedure written here (not LASER's code): FAISS ``IndexFlatIP`` in
  float32 over all vectors, searched x->y and y->x with k = 4, ratio margin, max strategy
  (numpy margin, greedy one-to-one loop in Python).
* ``exact``: ``knn_pair(index="flat")`` + ``bitextmine.margin.select`` (ratio, max): both
  directions from one pass over X·Yᵀ (``bitextmine.knn.pairwise``).
* ``exact_fp32``: the same with float32 tiles forced (``BITEXTMINE_KNN_PRECISION=fp32``), to
  compare with ``exact`` where that runs in bf16 (CPUs with AVX512-BF16 or AMX).
* ``auto``: ``knn_pair(index="auto")`` + the same selection; when ``exact`` ran first, with the
  threshold tuned on exact's pairs given to it (as ``mine --threshold`` / a model's saved threshold
  would be), so the near-threshold pairs get exact neighbourhoods (``bitextmine.refine``; its time is
  included); all candidates are kept (not cut at the threshold), for the recall figures.
* ``exact_gpu`` / ``auto_gpu``: ``knn_pair`` on the CUDA devices (``bitextmine.knn.device``: exact, bf16
  candidates re-scored in float32, the database sharded over the GPUs) + the same selection; reported
  with the card's bf16 matrix rate measured in the same run (8192^3 products) and the search's own
  seconds (``knn_seconds``) and its share of that rate.
* ``auto_plain``: ``auto`` without a threshold (no refinement), as before ``bitextmine.refine``.
* ``auto_openblas``: ``auto_plain`` with the by-list scan's float32 estimates taken by numpy's BLAS
  (OpenBLAS) instead of torch's (MKL), as before ``bitextmine.knn.tiles.estimate32`` (by lowering torch's
  float32 matmul precision, which sends the scan to numpy's BLAS): the A/B of that change.

Data (n x n, 384-d, float32 in memory):
* ``structured``: ``benchmarks/mine.py``'s synthetic embeddings (shared mean direction, Zipf topic
  clusters, language offsets; half the rows translated);
* ``isotropic``: the issue's LASER-style check: 2,000 random centres, src = norm(0.6 centre +
  0.8 noise), every target a noisy copy (cosine ~0.80 to its source), shuffled.

Also measured in the same run: this machine's float32 matmul peak (numpy BLAS, all threads) and
bf16 peak (torch), on (4096 x 384) x (384 x 8192) products; each method's rate is given as
"useful" GFLOP/s = 4 n^2 d / seconds (two n x n x d products, what two searches compute) and as
a fraction of each peak. Pairs: the reference's and exact's selected pairs compared (identity,
score differences), auto's recall of exact's pairs (all and true ones), and auto's score error
vs exact on the pairs both select (signed percentiles, and |error| median / p95 / p99 / max), and
the threshold check: the threshold that maximises F1 of exact's pairs against the true pairs (as a
user tunes one with ``bench bucc``) applied to auto's pairs: the share of selected pairs that
differ (issue 14: at most 0.5%). For ``auto`` and ``auto_plain``, where the time goes
(``phases_seconds``: k-means, list assignment, filing, the by-list search, pooling, selection; :func:`phases`). ``--methods exact auto`` runs the fidelity check alone (larger n).
The load average is recorded before and after every method
(the machine may be shared: ratios within one run are what count).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, matmul_peaks, write_result
from mine import synthetic

DIM, K = 384, 4


def structured(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = synthetic(n, seed=seed)
    parts: dict[str, list[np.ndarray]] = {"x": [], "y": []}
    try:
        while True:
            side, _, block = next(gen)
            parts[side].append(block)
    except StopIteration as stop:
        truth = stop.value
    return np.concatenate(parts["x"]).astype(np.float32), np.concatenate(parts["y"]).astype(np.float32), truth


def isotropic(n: int, seed: int = 0, centres: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def unit(a: np.ndarray) -> np.ndarray:
        return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)

    c = unit(rng.standard_normal((centres, DIM), dtype=np.float32))
    x = unit(0.6 * c[rng.integers(0, centres, n)] + 0.8 * unit(rng.standard_normal((n, DIM), dtype=np.float32)))
    y = unit(x + 0.75 * unit(rng.standard_normal((n, DIM), dtype=np.float32)))  # cosine ~0.80 to its source
    perm = rng.permutation(n)
    yy = np.empty_like(y)
    yy[perm] = y
    return x, yy, np.stack([np.arange(n), perm], 1).astype(np.int64)


def reference(x: np.ndarray, y: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """LASER's procedure: IndexFlatIP both ways (fp32), ratio margin, max strategy, greedy one-to-one."""
    import faiss

    ix, iy = faiss.IndexFlatIP(x.shape[1]), faiss.IndexFlatIP(y.shape[1])
    ix.add(x)
    iy.add(y)
    fd, fi = iy.search(x, k)
    bd, bi = ix.search(y, k)
    xm, ym = fd.mean(1), bd.mean(1)
    f_score = fd / ((xm[:, None] + ym[fi]) / 2)
    b_score = bd / ((ym[:, None] + xm[bi]) / 2)
    fb, bb = f_score.argmax(1), b_score.argmax(1)
    src = np.concatenate([np.arange(len(x)), bi[np.arange(len(y)), bb]])
    tgt = np.concatenate([fi[np.arange(len(x)), fb], np.arange(len(y))])
    score = np.concatenate([f_score[np.arange(len(x)), fb], b_score[np.arange(len(y)), bb]])
    used_s, used_t, out, sc = set(), set(), [], []
    for i in np.argsort(-score, kind="stable"):
        s, t = int(src[i]), int(tgt[i])
        if s not in used_s and t not in used_t:
            used_s.add(s)
            used_t.add(t)
            out.append((s, t))
            sc.append(float(score[i]))
    return np.array(out, dtype=np.int64).reshape(-1, 2), np.array(sc)


def ours(x: np.ndarray, y: np.ndarray, index: str, threshold: float | None = None, notes: dict | None = None,
         gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from bitextmine.knn import knn_pair
    from bitextmine.margin import select
    from bitextmine.mining import MineOptions, _refine

    kept: dict = {}
    if gpu:  # the CUDA exact search (bitextmine.knn.device), its fallback rows counted
        import bitextmine.knn.device as dev

        stats: dict = {}
        real = dev.device_search
        dev.device_search = lambda *a, **kw: real(*a, **kw, stats=stats)
        t = time.perf_counter()
        try:
            fwd, bwd = knn_pair(x, y, K, index=index, use_gpu=True)
        finally:
            dev.device_search = real
        if notes is not None:
            notes["knn_seconds"] = round(time.perf_counter() - t, 2)
            notes["fallback_rows"] = stats.get("fallback_rows", 0)
            notes["devices"] = [str(d) for d in dev.cuda_devices()]
        cand = select(*fwd, *bwd, margin="ratio", strategy="max")
        return np.stack([cand.src, cand.tgt], 1), np.asarray(cand.score)
    fwd, bwd = knn_pair(x, y, K, index=index, use_gpu=False, keep=kept)
    cand = select(*fwd, *bwd, margin="ratio", strategy="max")
    if threshold is not None:  # what mine does with a threshold, without the cut
        cand = _refine(x, y, fwd, bwd, cand, MineOptions(index=index, threshold=threshold), {} if notes is None else notes,
                       kept.get("wider"))
    return np.stack([cand.src, cand.tgt], 1), np.asarray(cand.score)


def run(method: str, x: np.ndarray, y: np.ndarray, threshold: float | None = None, notes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``reference``, ``exact`` (the machine's exact precision), ``exact_fp32`` (forced float32 tiles),
    ``auto`` (refined near ``threshold`` when given), ``auto_plain`` or ``auto_openblas``."""
    if method == "reference":
        return reference(x, y)
    if method in ("exact_gpu", "auto_gpu"):  # on the CUDA devices (exact there when the database fits)
        return ours(x, y, "flat" if method == "exact_gpu" else "auto", notes=notes, gpu=True)
    if method == "auto":
        return ours(x, y, "auto", threshold, notes)
    if method == "auto_openblas":  # torch's float32 matmuls lowered: the scan takes numpy's BLAS (tiles.torch_fp32)
        import torch

        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            return ours(x, y, "auto")
        finally:
            torch.set_float32_matmul_precision(before)
    if method != "exact_fp32":
        return ours(x, y, "flat" if method == "exact" else "auto")
    before = os.environ.get("BITEXTMINE_KNN_PRECISION")
    os.environ["BITEXTMINE_KNN_PRECISION"] = "fp32"
    try:
        return ours(x, y, "flat")
    finally:
        if before is None:
            del os.environ["BITEXTMINE_KNN_PRECISION"]
        else:
            os.environ["BITEXTMINE_KNN_PRECISION"] = before


#: Where ``auto`` spends its time (wall seconds on the calling thread, inclusive): patched in by :func:`phases`.
_CENTRED = "bitextmine.knn.centred"
PHASES = {"kmeans": (_CENTRED, "_kmeans"), "assign": (_CENTRED, "_assign"), "file_lists": (_CENTRED, "_Coarse.build"),
          "search": (_CENTRED, "_search_ivf_by_list"), "fuse": ("bitextmine.knn", "_fuse"), "select": ("bitextmine.margin", "select")}


@contextmanager
def phases(into: dict):
    """Time the phases of :data:`PHASES` while the block runs: ``into[name]`` = seconds, summed over calls
    (inclusive: ``file_lists`` and ``search`` contain the ``assign`` calls made inside them, ``search`` the
    scan of the lists; ``kmeans`` is the coarse training, both sides at once)."""
    import importlib

    patched = []
    for name, (mod, attr) in PHASES.items():
        *path, leaf = attr.split(".")
        owner = importlib.import_module(mod)
        for part in path:  # "_Coarse.build": a method of a class in the module
            owner = getattr(owner, part)
        orig = owner.__dict__[leaf]

        def timed(*a, _f=orig, _n=name, **kw):
            t = time.perf_counter()
            try:
                return _f(*a, **kw)
            finally:
                into[_n] = into.get(_n, 0.0) + time.perf_counter() - t

        setattr(owner, leaf, timed)
        patched.append((owner, leaf, orig))
    try:
        yield into
    finally:
        for owner, leaf, orig in patched:
            setattr(owner, leaf, orig)
        for n in into:
            into[n] = round(into[n], 2)


def as_dict(pairs: np.ndarray, scores: np.ndarray) -> dict[tuple[int, int], float]:
    return dict(zip(map(tuple, pairs.tolist()), scores.tolist()))


def abs_error(err: np.ndarray) -> dict[str, float]:
    """|relative score error| percentiles (median, p95, p99, max) on the pairs both select."""
    if not len(err):
        return {}
    a = np.abs(err)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def tuned_threshold(exact: dict, truth: set) -> tuple[float, float]:
    """The threshold a user tunes with exact search (best F1 against the true pairs, as ``bench bucc``
    does against gold) and that F1."""
    items = sorted(exact.items(), key=lambda kv: -kv[1])
    hits = np.cumsum([p in truth for p, _ in items])
    f1 = 2 * hits / (np.arange(1, len(items) + 1) + len(truth))
    best = int(np.argmax(f1))
    return float(items[best][1]), float(f1[best])


def threshold_check(exact: dict, approx: dict, truth: set) -> dict:
    """:func:`tuned_threshold` applied to both: how many selected pairs differ, as a share of exact's."""
    thr, f1_exact = tuned_threshold(exact, truth)
    e = {p for p, s in exact.items() if s >= thr}
    a = {p for p, s in approx.items() if s >= thr}
    diff = len(e ^ a)
    return {"threshold": float(thr), "f1_exact": round(f1_exact, 5), "selected_exact": len(e), "selected_auto": len(a),
            "only_exact": len(e - a), "only_auto": len(a - e), "differing_share": round(diff / max(len(e), 1), 6),
            "f1_auto": round(2 * len(a & truth) / (len(a) + len(truth)), 5), "within_0.5pct": diff <= 0.005 * len(e)}


def gpu_peak() -> dict:
    """The CUDA device's bf16 matrix rate: 8192^3 products, best of 10 after 3 warm-ups (CUDA events)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    del a, b
    return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "bf16_gflops": round(2 * 8192**3 / min(ts) / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--data", nargs="+", default=["structured", "isotropic"])
    ap.add_argument("--methods", nargs="+", default=["reference", "exact", "auto"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--name", default="mine-speed")
    args = ap.parse_args()

    import faiss

    from bitextmine.knn import auto_index
    from bitextmine.knn.tiles import precision, scan_precision

    faiss.omp_set_num_threads(args.threads)
    result = {**header(), "benchmark": "mine_speed", "n": args.n, "dim": DIM, "k": K, "margin": "ratio", "strategy": "max",
              "threads": args.threads, "exact_precision": precision(), "scan_precision": scan_precision(), "auto_index": auto_index(args.n, DIM), "data": {}}
    result["matmul_peak_at_start"] = matmul_peaks(args.threads, DIM)
    if any(m.endswith("_gpu") for m in args.methods):
        result["gpu"] = gpu_peak()
        result["matmul_peak_at_start"]["gpu_bf16_gflops"] = result["gpu"]["bf16_gflops"]
    print("peaks", result["matmul_peak_at_start"], flush=True)
    useful = 4 * args.n * args.n * DIM
    for name in args.data:
        x, y, truth = (structured if name == "structured" else isotropic)(args.n)
        truth_set = set(map(tuple, truth.tolist()))
        entry: dict = {"true_pairs": len(truth), "runs": {}}
        got: dict[str, dict] = {}
        for method in args.methods:
            load0 = os.getloadavg()
            t = time.perf_counter()
            thr = tuned_threshold(got["exact"], truth_set)[0] if method == "auto" and "exact" in got else None
            notes: dict = {}
            spent: dict = {}
            with phases(spent):
                pairs, scores = run(method, x, y, thr, notes)
            sec = time.perf_counter() - t
            got[method] = as_dict(pairs, scores)
            gf = useful / sec / 1e9
            pk = result["matmul_peak_at_start"]
            entry["runs"][method] = {"seconds": round(sec, 1), "pairs": len(pairs), "useful_gflops": round(gf, 1),
                                     "fraction_of_fp32_peak": round(gf / pk["fp32_numpy_gflops"], 3),
                                     "fraction_of_bf16_peak": round(gf / pk["bf16_torch_gflops"], 3),
                                     **({"fraction_of_int8_peak": round(gf / pk["int8_torch_gops"], 3)} if "int8_torch_gops" in pk else {}),
                                     "true_pairs_recovered": round(len(set(got[method]) & truth_set) / len(truth), 5),
                                     "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()]}
            if method.endswith("_gpu"):
                entry["runs"][method]["fraction_of_gpu_bf16_peak"] = round(gf / pk["gpu_bf16_gflops"], 3)
                entry["runs"][method].update({k: notes.pop(k) for k in ("fallback_rows", "devices", "knn_seconds") if k in notes})
                if "knn_seconds" in entry["runs"][method]:  # the search alone, as a share of the card's bf16 rate
                    entry["runs"][method]["knn_fraction_of_gpu_bf16_peak"] = round(
                        useful / entry["runs"][method]["knn_seconds"] / 1e9 / pk["gpu_bf16_gflops"], 3)
            elif method.startswith("auto"):
                entry["runs"][method]["phases_seconds"] = spent
            if "refined" in notes:
                entry["runs"][method]["refined"] = notes["refined"]
            print(name, method, entry["runs"][method], flush=True)
        runs = entry["runs"]
        if "reference" in got:
            for m in got:
                runs[m]["speedup_vs_reference"] = round(runs["reference"]["seconds"] / runs[m]["seconds"], 2)
        for ex in ("exact", "exact_fp32", "exact_gpu"):
            if "reference" in got and ex in got:
                r, e = got["reference"], got[ex]
                common = set(r) & set(e)
                entry[f"reference_vs_{ex}"] = {"identical_pairs": set(r) == set(e), "only_reference": len(set(r) - set(e)),
                                               "only_exact": len(set(e) - set(r)),
                                               "max_score_diff": float(max((abs(r[p] - e[p]) for p in common), default=0.0))}
        if "exact" in got and "exact_gpu" in got:
            e, g = got["exact"], got["exact_gpu"]
            entry["exact_vs_exact_gpu"] = {"identical_pairs": set(e) == set(g), "only_exact": len(set(e) - set(g)),
                                           "only_gpu": len(set(g) - set(e)),
                                           "max_score_diff": float(max((abs(e[p] - g[p]) for p in set(e) & set(g)), default=0.0))}
        for am in ("auto", "auto_plain", "auto_openblas"):
            if "exact" not in got or am not in got:
                continue
            e, a = got["exact"], got[am]
            common = set(e) & set(a)
            true_e = set(e) & truth_set
            err = np.array([(a[p] - e[p]) / e[p] for p in common])
            q = [0, 1, 5, 25, 50, 75, 95, 99, 100]
            entry[f"{am}_vs_exact"] = {"recall_of_exact_pairs": round(len(common) / max(len(e), 1), 5),
                                      "recall_of_exact_true_pairs": round(len(true_e & set(a)) / max(len(true_e), 1), 5),
                                      "score_relative_error_percentiles": dict(zip(map(str, q), np.percentile(err, q).round(6).tolist())) if len(err) else {},
                                      "score_abs_relative_error": abs_error(err),
                                      "score_abs_relative_error_max": float(np.abs(err).max()) if len(err) else 0.0,
                                      "threshold_check": threshold_check(e, a, truth_set)}
        result["data"][name] = entry
        print(name, {k: v for k, v in entry.items() if k != "runs"}, flush=True)
        write_result(args.name, result)
        del x, y
    result["matmul_peak_at_end"] = matmul_peaks(args.threads, DIM)
    print("written", write_result(args.name, result))


if __name__ == "__main__":
    main()
