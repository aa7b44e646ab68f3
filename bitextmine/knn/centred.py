"""Centred probing: IVF search between two sets whose distributions are offset (CPU).

Each side is centred on its own mean before vectors are assigned to lists (k-means, filing and
probing all use centred vectors, with L2), while the lists store the original vectors and every
score is the exact inner product of the original vectors. Two languages' embeddings are offset
from each other; centring puts a sentence and its translation in nearby lists (on the mining
benchmark at 100k, 64 probes recover 99.4% of exact search's true pairs centred, 95.0% uncentred).
Used for ``"IVF{n},Flat"`` and ``"IVF{n},SQ..."`` specs (:func:`_centred_spec`), which is what
``"auto"`` picks below the PQ sizes. The lists come from L2 k-means, redrawn spherical where L2
leaves hub lists (:data:`LISTS`); :func:`~bitextmine.knn.knn_pair` assigns each side once for both
directions (``_Coarse.share``).
"""
from __future__ import annotations

import re
from collections.abc import Callable

import faiss
import numpy as np

from ..errors import InputError
from .assign import Int8Centroids, _assign
from .bylist import _search_ivf_by_list, reserve_lists
from .kmeans import kmeans
from .policy import _auto_nprobe, _default_train_size, _ivf_query_rows
from .sources import BlockSource, _blocks, _sample_rows
from .workers import _Workers, release_free_memory

_CENTRED = re.compile(r"^IVF(\d+),(Flat|SQfp16|SQbf16|SQ8|SQ6|SQ4)$", re.IGNORECASE)
#: How the lists are drawn: "l2" (k-means with L2 distances), "spherical" (unit centroids: a vector
#: goes to the list of largest inner product), or "auto": L2, unless its lists come out unbalanced,
#: then spherical. Measured at 100k (benchmarks/mine_speed.py, IVF1024, 64 probes): on near-isotropic
#: data L2 leaves short "hub" centroids (lists of 13 to 1,511 vectors: the probes scan 33% of the
#: pairs instead of 6.25%; spherical lists are even), while on the structured data L2 lists find
#: more of exact's true pairs (99.3% against 98.8%).
LISTS = "auto"
#: "auto" switches to spherical lists when a sample's probes would scan more than this many times
#: their share of the vectors (nprobe / nlist); L2 lists scan 1.08x on the structured data, 5.1x
#: on the near-isotropic data.
HUB_SCAN = 2.0
#: spherical k-means iterations after L2 k-means found hubs (started from its centroids, normalised).
SPHERICAL_REFINE = 4
#: k-means iterations on the whole training sample when it is too small for a warm start.
KMEANS_ITER = 10
#: (share, iterations, then iterations on the whole sample): k-means first runs on 1/share of the training
#: sample, then finishes on all of it from those centroids (the hub check, :data:`HUB_SCAN`, looks at the
#: finished centroids: warm ones on 1/4 of the rows can look hubby where the finished L2 lists are not).
#: Measured at 100k with FAISS's k-means (now :mod:`.kmeans`; IVF1024, 32,768 rows, 2 threads, AVX2 EPYC;
#: benchmarks/results/mine-speed-14k/14l.md):
#: k-means 5.1 -> 3.1 s on the structured data (true pairs found 85.71% -> 85.75%; exact search: 86.24%),
#: 7.9 -> 5.7 s on the near-isotropic data (L2, then spherical: 99.945% -> 99.962%).
KMEANS_WARM = (4, 6, 4)
#: bytes of list assignments (4 a probe) :func:`knn_pair` may keep between its two directions to
#: save assigning a side twice.
PROBE_CACHE = 256 * 2**20
_SQ_TYPES = {"sqfp16": "QT_fp16", "sqbf16": "QT_bf16", "sq8": "QT_8bit", "sq6": "QT_6bit", "sq4": "QT_4bit"}


def _centred_spec(spec: str) -> tuple[int, str] | None:
    """(nlist, codes) for the IVF specs searched with centred probing on the CPU, else None."""
    m = _CENTRED.match(spec.replace(" ", ""))
    if m is None or int(m.group(1)) < 1:
        return None
    codes = m.group(2).lower()
    if codes != "flat" and not hasattr(faiss.ScalarQuantizer, _SQ_TYPES[codes]):
        return None
    return int(m.group(1)), codes


class _Coarse:
    """A coarse quantizer for IVF search between two sets whose distributions are offset.

    Each set (side) is centred on its own mean before it is assigned to lists: k-means (L2, or
    spherical: :data:`LISTS`) runs on centred vectors from every side, database vectors are
    filed under the list of their centred value, and queries probe the lists nearest to their centred value. Embeddings of two
    languages differ by a language offset (about 0.2 in cosine units for multilingual-E5 on
    FLORES); without centring a sentence and its translation often fall in distant lists.
    Only the probing changes: the lists store the original vectors and every score is the
    inner product of the original query and database vectors.
    """

    def __init__(self, spec: str, d: int, centroids: np.ndarray, means: list[np.ndarray], samples: list[np.ndarray]) -> None:
        self.spec, self.d = spec, d
        self.nlist, self.codes = _centred_spec(spec)  # type: ignore[misc]
        self.quantizer = faiss.IndexFlatL2(d)
        self.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        self.coded = Int8Centroids(self.quantizer.reconstruct_n(0, self.nlist)) if Int8Centroids.exact(d) else None  # .assign
        self.means = means
        self.samples = samples  # per side (at most 32,768 rows), for training scalar quantizers
        # Assignments kept between the two directions of knn_pair (``share``): a side's rows are
        # probed as queries one way and filed as database the other; both are the same product
        # with the centroids. Filed lists (4 bytes a row) are kept from the probing; the probes
        # themselves where they fit PROBE_CACHE bytes. Off for a quantizer used on other data later.
        self.share = False
        self._filed: dict[int, np.ndarray] = {}
        self._probes: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def train(cls, spec: str, sources: list[BlockSource], train_size: int | None, seed: int, block_rows: int, fit: list[int]) -> _Coarse:
        """Means of every source (from a sample), k-means on the centred samples of the sources in ``fit``."""
        nlist, _ = _centred_spec(spec)  # type: ignore[misc]
        d = sources[0].dim
        total = sum(len(sources[i]) for i in fit)
        size = train_size if train_size is not None else _default_train_size(total, nlist)
        size = max(1, min(int(size), total))
        samples, means = [], []
        for i, src in enumerate(sources):
            share = size // len(fit) if i in fit else min(len(src), 16_384)
            share = max(1, min(share, len(src)))
            sample = _sample_rows(src, share, seed + i, block_rows) if len(src) else np.zeros((1, d), np.float32)
            samples.append(sample)
            means.append(sample.mean(axis=0).astype(np.float32))
        train = np.concatenate([samples[i] - means[i] for i in fit])
        if len(train) < nlist:
            raise InputError(f"cannot train FAISS index {spec!r}: {len(train)} training vectors for {nlist} lists")
        train = np.ascontiguousarray(train, dtype=np.float32)
        spherical = LISTS == "spherical"
        warm = _warm_start(train, nlist, seed, spherical)
        centroids = _kmeans(train, nlist, seed, spherical, init=warm, niter=KMEANS_ITER if warm is None else KMEANS_WARM[2])
        if LISTS == "auto" and _scan_ratio(centroids, train, _auto_nprobe(nlist), seed) > HUB_SCAN:
            centroids = _kmeans(train, nlist, seed, True, init=centroids, niter=SPHERICAL_REFINE)
        del train
        return cls(spec, d, centroids, means, [np.ascontiguousarray(x[:32_768]) for x in samples])

    def build(self, db: BlockSource, side: int, nprobe: int, block_rows: int) -> faiss.IndexIVF:
        """The database of ``side`` filed into inverted lists (codes of the original vectors)."""
        metric = faiss.METRIC_INNER_PRODUCT
        if self.codes == "flat":
            ivf = faiss.IndexIVFFlat(self.quantizer, self.d, self.nlist, metric)
        else:
            qtype = getattr(faiss.ScalarQuantizer, _SQ_TYPES[self.codes])
            ivf = faiss.IndexIVFScalarQuantizer(self.quantizer, self.d, self.nlist, qtype, metric, False)
        ivf.train(self.samples[side])  # the quantizer is trained: this trains the codes only
        ivf.nprobe = nprobe
        filed = self._filed.get(side) if self.share else None
        if filed is not None and len(filed) != len(db):
            filed = None
        keep = self.share and filed is None and len(db) * nprobe * 4 <= PROBE_CACHE
        probes = np.empty((len(db), nprobe), np.int32) if keep else None
        with _Workers() as workers:
            if filed is None:  # first pass: the list of every row (and its probes, when they are kept)
                filed, r0 = np.empty(len(db), np.int32), 0
                for xb in _blocks(db, block_rows):
                    r1 = r0 + len(xb)
                    if probes is not None:  # this side is probed the other way: assign its probes now
                        probes[r0:r1] = _assign(self.quantizer, xb - self.means[side], nprobe, workers, self.coded)
                        filed[r0:r1] = probes[r0:r1, 0]
                    else:
                        filed[r0:r1] = _assign(self.quantizer, xb - self.means[side], 1, workers, self.coded).ravel()
                    r0 = r1
                if self.share:
                    self._filed[side] = filed  # filed again without assigning
        reserve_lists(ivf, filed)
        r0 = 0
        for xb in _blocks(db, block_rows):  # second pass: the codes, into lists sized beforehand
            r1 = r0 + len(xb)
            lists = filed[r0:r1].astype(np.int64)
            ivf.add_core(len(xb), faiss.swig_ptr(xb), None, faiss.swig_ptr(lists))
            r0 = r1
        release_free_memory()
        if probes is not None:
            self._probes[(side, nprobe)] = probes
        return ivf

    def _probe(self, side: int, n: int, nprobe: int) -> Callable[[int, np.ndarray, _Workers], np.ndarray]:
        """The lists the queries of ``side`` probe, block by block: from the cache when the side was
        assigned while filed, else computed (and, when sharing, its filed lists kept)."""
        cached = self._probes.get((side, nprobe)) if self.share else None
        if cached is not None and len(cached) != n:
            cached = None
        filed = np.empty(n, np.int32) if self.share and side not in self._filed else None

        def probe(q0: int, xq: np.ndarray, workers: _Workers) -> np.ndarray:
            if cached is not None:
                return cached[q0 : q0 + len(xq)].astype(np.int64)
            lists = _assign(self.quantizer, xq - self.means[side], nprobe, workers, self.coded)
            if filed is not None:
                filed[q0 : q0 + len(xq)] = lists[:, 0]
                if q0 + len(xq) == n:
                    self._filed[side] = filed
            return lists

        return probe

    def search(self, qs: BlockSource, q_side: int, db: BlockSource, d_side: int, k: int, nprobe: int | None,
               block_rows: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
        nprobe = _auto_nprobe(self.nlist) if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise InputError(f"{{param}} must be at least 1, got {nprobe}", param="nprobe")
        ivf = self.build(db, d_side, nprobe, block_rows)
        try:
            return _search_ivf_by_list(ivf, qs, k, _ivf_query_rows(block_rows, nprobe, qs.dim), progress,
                                       probe=self._probe(q_side, len(qs), nprobe))
        finally:
            del ivf
            self._probes.pop((q_side, nprobe), None)  # each side is probed once
            release_free_memory()


def _kmeans(train: np.ndarray, nlist: int, seed: int, spherical: bool, init: np.ndarray | None = None,
            niter: int = KMEANS_ITER) -> np.ndarray:
    """(nlist, d) centroids of ``train`` after ``niter`` iterations from a random start, or from ``init``
    (normalised when ``spherical``): :func:`.kmeans.kmeans` (int8 estimates), FAISS's k-means past :data:`.int8.CODES_DIM`."""
    if Int8Centroids.exact(train.shape[1]):
        return kmeans(train, nlist, seed, spherical, init, niter)
    km = faiss.Kmeans(train.shape[1], nlist, niter=niter, seed=seed, spherical=spherical, min_points_per_centroid=1,
                      max_points_per_centroid=1 << 20)
    if init is not None and spherical:
        init = init / np.maximum(np.linalg.norm(init, axis=1, keepdims=True), 1e-12)
    km.train(train, init_centroids=None if init is None else np.ascontiguousarray(init, dtype=np.float32))
    return km.centroids


def _warm_start(train: np.ndarray, nlist: int, seed: int, spherical: bool) -> np.ndarray | None:
    """Centroids from k-means on a share of the training sample (:data:`KMEANS_WARM`), for the full
    sample to finish in fewer iterations; None when that share would hold under 4 rows a list."""
    share, niter, _ = KMEANS_WARM
    m = len(train) // share
    if m < 4 * nlist:
        return None
    pick = np.sort(np.random.default_rng(seed).choice(len(train), m, replace=False))
    return _kmeans(np.ascontiguousarray(train[pick]), nlist, seed, spherical, niter=niter)


def _scan_ratio(centroids: np.ndarray, train: np.ndarray, nprobe: int, seed: int) -> float:
    """How many times its share (nprobe / nlist) of the vectors a query's probes would scan, estimated
    on the training sample: lists filled with up to 8 * nlist of its vectors, probed by 1,024 others."""
    nlist = len(centroids)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train))
    fill, probe = train[pick[: 8 * nlist]], train[pick[8 * nlist : 8 * nlist + 1024]]
    if not len(probe):
        probe = fill[:1024]
    q = faiss.IndexFlatL2(train.shape[1])
    q.add(np.ascontiguousarray(centroids, dtype=np.float32))
    with _Workers() as workers:
        sizes = np.bincount(_assign(q, fill, 1, workers).ravel(), minlength=nlist)
        lists = _assign(q, probe, nprobe, workers)
    scanned = sizes[lists].sum(axis=1).mean() / max(len(fill), 1)
    return float(scanned / (min(nprobe, nlist) / nlist))
