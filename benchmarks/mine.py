"""Mining at scale: time, peak memory and recovered pairs of exact and automatic search, side by side.

    .venv/bin/python benchmarks/mine.py [--sizes 10000 100000 1000000] [--exact-max 100000] [--threads 2]

For each size N, two embedding folders of N sentences a side are written in bitextmine's own
store format (sharded fp16 Arrow files with a manifest, 250,000 rows a shard), from structured
synthetic 384-dim vectors (:func:`synthetic`): a shared mean direction (every cosine is high, as
with real sentence encoders), a Zipf-sized set of topic clusters in an anisotropic subspace,
per-sentence meaning, a per-language offset and per-side noise. Half the sentences of each side
(``--paired``) are translations of each other (same meaning, independent noise: cosine about
0.85), hidden at random target positions; the rest are unrelated sentences.

Each method then runs in a fresh process, which reports its wall time, peak RSS (VmHWM:
anonymous and file-backed pages, so memory-mapped shard pages count) and peak anonymous memory
(RssAnon sampled every 0.2 s: without the shards' file pages). This machine's matrix-multiply peaks
(numpy fp32, torch bf16) are measured at the start of the run and at the end:

* ``exact``: ``mine_stores`` with ``index="flat"`` (blocked exact search) — skipped above
  ``--exact-max`` (its time grows as N^2; estimated from the largest exact run instead);
* ``auto``: ``mine_stores`` with ``index="auto"`` (exact below 100k, IVF above: see
  ``bitextmine.knn.auto_index``); ``auto@BYTES`` (e.g. ``auto@5e8``) the same with that memory
  budget, which picks the index tier (SQfp16, SQ8, OPQ/PQ codes); a ``:nprobe=P`` suffix (``auto:nprobe=8``,
  ``auto@2e9:nprobe=8``) probes P lists instead of auto's choice: the same index, data and memory (the
  inverted lists, the k-NN lists, the pooling and scoring of N rows) at a fraction of the scan, for a
  memory run at a size whose full search would take too long; ``:rerank=N`` sets how many candidates are
  re-ranked exactly from the stores (``auto@1.5e8:rerank=0``: product codes on their own);
* ``baseline``: a straightforward exact FAISS ``IndexFlatIP`` over all vectors loaded as float32,
  plus the ratio margin and the max strategy in numpy and a Python loop (LASER's recipe);
  skipped above ``--exact-max`` too.

All use k = 4, ratio margin, max strategy, no threshold. Reported: pairs selected, true pairs
recovered (fraction of the hidden translation pairs), and the fraction of the true pairs exact
search recovers that the method recovers too. Where exact search was skipped, that fraction is
estimated on a random sample of true pairs (``--check-sample``): for each sampled pair, exact
k-NN lists of the source, the target, and every candidate on either side (for their
neighbourhood means) are computed against the full other side, giving exact search's margin
scores and forward/backward choices for that pair; the estimator is validated against the real
exact run at the largest size where one exists (``estimator_agreement``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, matmul_peaks, peak_rss_mib, write_result  # noqa: E402

DIM = 384
FINGERPRINT = "synthetic-384"


# ------------------------------------------------------------------------------------------ data


def synthetic(n: int, dim: int = DIM, paired: float = 0.5, seed: int = 0, chunk: int = 100_000,
              topics: int = 1000, mean_weight: float = 2.9, within: float = 1.0, noise: float = 0.8, lang_offset: float = 0.5):
    """Structured synthetic embeddings: yields ("x" | "y", start, fp16 block) and returns the truth.

    Sources come out in row order, chunk by chunk; target rows are scattered (a translation's
    position is random), so targets are produced into one (n, dim) fp16 array at the end.
    Returns via StopIteration value: ``truth`` (npair, 2) int64 (source row, target row).
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.arange(1, dim + 1) ** -0.5
    spectrum /= np.sqrt((spectrum**2).sum())
    basis = (q * spectrum).astype(np.float32)  # z @ basis.T: anisotropic, unit expected norm
    mu = rng.standard_normal(dim).astype(np.float32)
    mu /= np.linalg.norm(mu)
    centers = rng.standard_normal((topics, dim)).astype(np.float32) @ basis.T
    weights = np.minimum(rng.zipf(1.3, topics), 1000).astype(np.float64)
    weights /= weights.sum()
    lang = [lang_offset * (rng.standard_normal(dim).astype(np.float32) @ basis.T) for _ in range(2)]
    npair = int(n * paired)
    perm = rng.permutation(n)  # target row of source i's translation, for i < npair

    def meanings(m: int, r: np.random.Generator) -> np.ndarray:
        t = r.choice(topics, size=m, p=weights)
        return centers[t] + within * (r.standard_normal((m, dim)).astype(np.float32) @ basis.T)

    def emit(m: np.ndarray, side: int, r: np.random.Generator) -> np.ndarray:
        e = mean_weight * mu + m + lang[side] + noise * (r.standard_normal(m.shape).astype(np.float32) @ basis.T)
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float16)

    y = np.empty((n, dim), np.float16)
    for s in range(0, n, chunk):
        r = np.random.default_rng([seed, s])
        m = meanings(min(chunk, n - s), r)
        yield "x", s, emit(m, 0, r)
        rows = np.arange(s, s + len(m))
        unpaired = rows >= npair
        m[unpaired] = meanings(int(unpaired.sum()), r)
        y[perm[rows]] = emit(m, 1, r)
    for s in range(0, n, chunk):
        yield "y", s, y[s : s + chunk]
    return np.stack([np.arange(npair), perm[:npair]], 1).astype(np.int64)


def write_folders(n: int, work: Path, paired: float, seed: int, shard_size: int = 250_000) -> tuple[Path, Path, np.ndarray]:
    """Write (or reuse) the two embedding folders of size ``n``; returns their paths and the truth."""
    from bitextmine import __version__
    from bitextmine.fs import atomic_write_json as write_json_atomic
    from bitextmine.store import FORMAT, FORMAT_VERSION, MANIFEST, ShardWriter, schema

    base = work / f"n{n}-p{paired}-s{seed}"
    folders = {"x": base / "src", "y": base / "tgt"}
    truth_path = base / "truth.npy"
    if truth_path.is_file() and all((f / MANIFEST).is_file() for f in folders.values()):
        return folders["x"], folders["y"], np.load(truth_path)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    sch = schema(DIM, False, FINGERPRINT)
    state = {side: {"shards": [], "writer": None, "rows": 0} for side in folders}

    def put(side: str, block: np.ndarray) -> None:
        st = state[side]
        while len(block):
            if st["writer"] is None:
                folders[side].mkdir(exist_ok=True)
                st["writer"] = ShardWriter(folders[side], len(st["shards"]), sch)
            w = st["writer"]
            take = min(len(block), shard_size - w.rows)
            rows = np.arange(st["rows"], st["rows"] + take)
            w.write(block[:take], np.zeros(take, np.int16), rows + 1, [f"{side}{i}" for i in rows])
            st["rows"] += take
            block = block[take:]
            if w.rows == shard_size:
                st["shards"].append(w.close())
                st["writer"] = None

    gen = synthetic(n, paired=paired, seed=seed)
    try:
        while True:
            side, _, block = next(gen)
            put(side, block)
    except StopIteration as stop:
        truth = stop.value
    for side, folder in folders.items():
        st = state[side]
        if st["writer"] is not None:
            st["shards"].append(st["writer"].close())
        write_json_atomic(folder / MANIFEST, {
            "format": FORMAT, "version": FORMAT_VERSION, "fingerprint": FINGERPRINT, "model": "synthetic",
            "recipe": {"name": "synthetic"}, "dim": DIM, "dtype": "float16",
            "inputs": [{"path": f"synthetic-{side}", "size": n}], "id_column": False, "errors": "strict",
            "shard_size": shard_size, "bitextmine": __version__, "complete": True, "shards": st["shards"], "count": n,
        })
    np.save(truth_path, truth)
    return folders["x"], folders["y"], truth


# ------------------------------------------------------------------------------------------ children


def child(method: str, src: str, tgt: str, out: str, threads: int, block_rows: int) -> None:
    """One measured run in a fresh process; prints a JSON line and saves the selected pairs."""
    import faiss

    faiss.omp_set_num_threads(threads)
    from bitextmine.mining import MineOptions, mine_stores
    from bitextmine.store import EmbeddingStore

    anon = _AnonPeak()
    t0 = time.perf_counter()
    xs, ys = EmbeddingStore(src), EmbeddingStore(tgt)
    opened = time.perf_counter() - t0
    rss_open = peak_rss_mib()
    info: dict = {}
    t = time.perf_counter()
    if method == "baseline":
        pairs = baseline(xs, ys, k=4)
    else:
        name, *given = method.split(":")
        kv = dict(g.split("=", 1) for g in given)
        index = "flat" if name == "exact" else "auto"
        budget = int(float(name.split("@", 1)[1])) if name.startswith("auto@") else None
        nprobe = int(kv["nprobe"]) if "nprobe" in kv else None
        rerank = int(kv["rerank"]) if "rerank" in kv else None
        from bitextmine.knn import auto_index

        if index == "auto":
            spec, params = auto_index(len(ys), ys.dim, memory_budget=budget)
            info["index"] = {"spec": spec, **params, "memory_budget": budget, **({"nprobe": nprobe} if nprobe else {})}
        res = mine_stores(xs, ys, MineOptions(k=4, index=index, block_rows=block_rows, memory_budget=budget, nprobe=nprobe,
                                              rerank=rerank))
        info["index_used"] = res.index
        pairs = np.stack([res.pairs.src, res.pairs.tgt], 1)
    seconds = time.perf_counter() - t
    np.save(out, pairs)
    print(json.dumps({"method": method, "seconds": round(seconds, 1), "open_seconds": round(opened, 1),
                      "peak_rss_mib": round(peak_rss_mib(), 1), "peak_rss_after_open_mib": round(rss_open, 1),
                      "peak_anon_mib": anon.stop(), "peak_anon_mib_by_phase": anon.by_phase(), "pairs": int(len(pairs)), **info}))


class _AnonPeak:
    """Largest RssAnon (memory the process owns, without the stores' file pages) sampled every 0.2 s
    on a thread, overall and by phase (:data:`PHASES`: the innermost bitextmine function the main
    thread is in when sampled); None off Linux."""

    def __init__(self) -> None:
        import threading

        self.peak, self.done, self.main = 0, threading.Event(), threading.get_ident()
        self.phases: dict[str, int] = {}
        self.ok = Path("/proc/self/status").is_file()
        if self.ok:
            threading.Thread(target=self._run, daemon=True).start()

    def _read(self) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0

    def _phase(self) -> str:
        f = sys._current_frames().get(self.main)
        while f is not None:
            for name, where in PHASES:
                if f.f_code.co_name == name and f.f_code.co_filename.endswith(where):
                    return name.strip("_")
            f = f.f_back
        return "other"

    def _run(self) -> None:
        while not self.done.wait(0.2):
            now = self._read()
            self.peak = max(self.peak, now)
            phase = self._phase()
            self.phases[phase] = max(self.phases.get(phase, 0), now)

    def stop(self) -> float | None:
        self.done.set()
        return round(max(self.peak, self._read()) / 1024, 1) if self.ok else None

    def by_phase(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in self.phases.items()}


#: (function, file) of the phases whose peak anonymous memory is reported, innermost first.
PHASES = [("train", "knn/centred.py"), ("build", "knn/centred.py"), ("_search_ivf_by_list", "knn/bylist.py"),
          ("_fuse", "knn/fuse.py"), ("select", "bitextmine/margin.py"), ("_refine", "bitextmine/mining.py"),
          ("rerank", "knn/rerank.py")]


def baseline(xs, ys, k: int) -> np.ndarray:
    """The straightforward recipe: everything in float32, IndexFlatIP both ways, numpy margin, Python greedy loop."""
    import faiss

    x = np.concatenate(list(xs.iter_blocks(1 << 20)))
    y = np.concatenate(list(ys.iter_blocks(1 << 20)))
    ix = faiss.IndexFlatIP(x.shape[1])
    ix.add(x)
    iy = faiss.IndexFlatIP(y.shape[1])
    iy.add(y)
    fd, fi = iy.search(x, k)  # x -> y
    bd, bi = ix.search(y, k)  # y -> x
    xm, ym = fd.mean(1), bd.mean(1)
    f_score = fd / ((xm[:, None] + ym[fi]) / 2)
    b_score = bd / ((ym[:, None] + xm[bi]) / 2)
    fb, bb = f_score.argmax(1), b_score.argmax(1)
    src = np.concatenate([np.arange(len(x)), bi[np.arange(len(y)), bb]])
    tgt = np.concatenate([fi[np.arange(len(x)), fb], np.arange(len(y))])
    score = np.concatenate([f_score[np.arange(len(x)), fb], b_score[np.arange(len(y)), bb]])
    used_s, used_t, out = set(), set(), []
    for i in np.argsort(-score, kind="stable"):
        s, t = int(src[i]), int(tgt[i])
        if s not in used_s and t not in used_t:
            used_s.add(s)
            used_t.add(t)
            out.append((s, t))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def run_child(method: str, src: Path, tgt: Path, out: Path, threads: int, block_rows: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "_child", method, str(src), str(tgt), str(out), str(threads), str(block_rows)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ checks


def pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def exact_local(xs, ys, sample: np.ndarray, k: int = 4, threads: int = 2, with_scores: bool = False):
    """Whether exact mining would select each sampled true pair (bool array), from local exact search;
    ``with_scores``: ``(selected, score)``, the pair's exact margin score (NaN where not chosen either way).

    For pair (s, t): exact k-NN of s (against all targets) and of t (against all sources), and of
    every candidate on the other side (their neighbourhood means enter the margins). The pair is
    taken when it is the forward best of s or the backward best of t, and neither s's forward best
    nor t's backward best is another pair scoring higher (the max strategy's greedy conflicts
    through other sentences' choices are not visible locally: the estimator is checked against a
    real exact run where one exists).
    """
    from bitextmine.knn import knn

    def rows(store, idx: np.ndarray) -> np.ndarray:
        return store.embeddings(np.asarray(idx, dtype=np.int64))

    s_ids, t_ids = sample[:, 0], sample[:, 1]
    fs_d, fs_i = knn(rows(xs, s_ids), ys, k)  # sources -> targets
    bt_d, bt_i = knn(rows(ys, t_ids), xs, k)  # targets -> sources
    tgt_need = np.unique(np.concatenate([fs_i.ravel(), t_ids]))
    src_need = np.unique(np.concatenate([bt_i.ravel(), s_ids]))
    ty_d, _ = knn(rows(ys, tgt_need), xs, k)  # neighbourhood means of those targets
    sx_d, _ = knn(rows(xs, src_need), ys, k)
    y_mean = dict(zip(tgt_need.tolist(), ty_d.mean(1).tolist()))
    x_mean = dict(zip(src_need.tolist(), sx_d.mean(1).tolist()))
    out = np.zeros(len(sample), dtype=bool)
    scores = np.full(len(sample), np.nan)
    for j, (s, t) in enumerate(sample.tolist()):
        f = [(fs_d[j, c] / ((x_mean[s] + y_mean[int(fs_i[j, c])]) / 2), int(fs_i[j, c])) for c in range(fs_i.shape[1])]
        b = [(bt_d[j, c] / ((y_mean[t] + x_mean[int(bt_i[j, c])]) / 2), int(bt_i[j, c])) for c in range(bt_i.shape[1])]
        f_score, f_best = max(f, key=lambda v: (v[0], -v[1]))
        b_score, b_best = max(b, key=lambda v: (v[0], -v[1]))
        score = f_score if f_best == t else (b_score if b_best == s else None)
        if score is None:
            continue
        scores[j] = score
        blocked = (f_best != t and f_score > score) or (b_best != s and b_score > score)
        out[j] = not blocked
    return (out, scores) if with_scores else out


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:6], int(sys.argv[6]), int(sys.argv[7]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--exact-max", type=int, default=100_000, help="largest N run with exact search and the baseline")
    ap.add_argument("--methods", nargs="+", default=["exact", "auto", "baseline"])
    ap.add_argument("--paired", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--block-rows", type=int, default=65536)
    ap.add_argument("--check-sample", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bitextmine-bench-mine")
    ap.add_argument("--name", default="mine")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    from bitextmine.store import EmbeddingStore

    result = {**header(), "benchmark": "mine", "dim": DIM, "paired_fraction": args.paired, "k": 4, "margin": "ratio",
              "strategy": "max", "threshold": None, "threads": args.threads, "block_rows": args.block_rows, "sizes": []}
    from bitextmine.knn.tiles import precision, scan_precision

    result.update(exact_precision=precision(), scan_precision=scan_precision())  # int8 / bf16 / fp32 on this CPU
    result["matmul_peak_at_start"] = matmul_peaks(args.threads, DIM)
    args.work.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        t = time.perf_counter()
        src, tgt, truth = write_folders(n, args.work, args.paired, args.seed)
        entry: dict = {"n": n, "true_pairs": int(len(truth)), "write_seconds": round(time.perf_counter() - t, 1), "runs": {}}
        print(f"N={n}: folders ready ({entry['write_seconds']} s)", flush=True)
        truth_set = pair_set(truth)
        selected: dict[str, set] = {}
        for method in args.methods:
            if method in ("exact", "baseline") and n > args.exact_max:
                entry["runs"][method] = {"skipped": f"N > --exact-max {args.exact_max}"}
                continue
            out = args.work / f"pairs-{n}-{method}.npy"
            r = run_child(method, src, tgt, out, args.threads, args.block_rows)
            got = pair_set(np.load(out))
            selected[method] = got & truth_set
            r["true_pairs_recovered"] = round(len(selected[method]) / len(truth), 5)
            entry["runs"][method] = r
            print(f"N={n} {method}: {r}", flush=True)
        if "exact" in selected:
            ex = selected["exact"]
            for method, got in selected.items():
                entry["runs"][method]["recovery_vs_exact"] = round(len(got & ex) / max(len(ex), 1), 5)
        approx = [m for m in selected if m.startswith("auto")]
        if args.check_sample and approx and n >= 100_000:
            rng = np.random.default_rng(args.seed + 1)
            sample = truth[np.sort(rng.choice(len(truth), size=min(args.check_sample, len(truth)), replace=False))]
            t = time.perf_counter()
            local = exact_local(EmbeddingStore(src), EmbeddingStore(tgt), sample, threads=args.threads)
            check = {"sample": int(len(sample)), "seconds": round(time.perf_counter() - t, 1),
                     "exact_selects_fraction": round(float(local.mean()), 5)}
            for m in approx:
                in_m = np.array([tuple(p) in selected[m] for p in sample.tolist()])
                check[f"{m}_recovery_vs_exact_estimate"] = round(float((local & in_m).sum() / max(local.sum(), 1)), 5)
            if "exact" in selected:
                in_exact = np.array([tuple(p) in selected["exact"] for p in sample.tolist()])
                check["estimator_agreement"] = round(float((in_exact == local).mean()), 5)
            entry["sampled_exact_check"] = check
            print(f"N={n} sampled exact check: {check}", flush=True)
        result["sizes"].append(entry)
        write_result(args.name, result)
    result["matmul_peak_at_end"] = matmul_peaks(args.threads, DIM)
    exact_runs = [(e["n"], e["runs"]["exact"]["seconds"]) for e in result["sizes"] if "seconds" in e["runs"].get("exact", {})]
    if exact_runs:
        n0, s0 = max(exact_runs)
        result["exact_time_estimates"] = {str(e["n"]): round(s0 * (e["n"] / n0) ** 2, 0) for e in result["sizes"] if e["n"] > n0}
        result["exact_time_estimate_rule"] = f"quadratic scaling from the exact run at N={n0}"
    path = write_result(args.name, result)
    print("written", path)


if __name__ == "__main__":
    main()
