"""Centred probing: IVF search between two sets whose distributions are offset (CPU).

Each side is centred on its own mean before vectors are assigned to lists (k-means, filing and
probing all use centred vectors, with L2), while the lists store the original vectors and every
score is the exact inner product of the original vectors. Two languages' embeddings are offset
from each other; centring puts a sentence and its translation in nearby lists (on the mining
benchmark at 100k, 64 probes recover 99.4% of exact search's true pairs centred, 95.0% uncentred).
Used for ``"IVF{n},Flat"`` and ``"IVF{n},SQ..."`` specs (:func:`_centred_spec`), which is what
``"auto"`` picks below the PQ sizes.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import faiss
import numpy as np

from ..errors import InputError
from .bylist import _assign, _search_ivf_by_list
from .policy import _auto_nprobe, _default_train_size, _ivf_query_rows
from .sources import BlockSource, _blocks, _sample_rows
from .workers import _Workers

_CENTRED = re.compile(r"^IVF(\d+),(Flat|SQfp16|SQbf16|SQ8|SQ6|SQ4)$", re.IGNORECASE)
#: spherical k-means (unit centroids: a vector goes to the list of largest inner product) instead of L2.
#: Off: measured at 100k (benchmarks/mine_speed.py, IVF1024, 64 probes), L2 leaves short "hub"
#: centroids on near-isotropic data (lists of 13 to 1,511 vectors, 33% of the pairs scanned instead
#: of 6.25%; auto 2.9x the reference), spherical lists are even (auto 5.3x) but on the structured
#: data find 98.8% of exact's true pairs (L2: 99.3%), under the 99% the auto rule must keep.
SPHERICAL = False
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
    spherical: :data:`SPHERICAL`) runs on centred vectors from every side, database vectors are
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
        self.means = means
        self.samples = samples  # per side (at most 32,768 rows), for training scalar quantizers

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
        km = faiss.Kmeans(d, nlist, niter=10, seed=seed, spherical=SPHERICAL, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
        km.train(np.ascontiguousarray(train, dtype=np.float32))
        del train
        return cls(spec, d, km.centroids, means, [np.ascontiguousarray(x[:32_768]) for x in samples])

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
        with _Workers() as workers:
            for xb in _blocks(db, block_rows):
                lists = _assign(self.quantizer, xb - self.means[side], 1, workers).ravel()
                ivf.add_core(len(xb), faiss.swig_ptr(xb), None, faiss.swig_ptr(lists))
        return ivf

    def search(self, qs: BlockSource, q_side: int, db: BlockSource, d_side: int, k: int, nprobe: int | None,
               block_rows: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
        nprobe = _auto_nprobe(self.nlist) if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise InputError(f"{{param}} must be at least 1, got {nprobe}", param="nprobe")
        ivf = self.build(db, d_side, nprobe, block_rows)
        try:
            return _search_ivf_by_list(ivf, qs, k, _ivf_query_rows(block_rows, nprobe), progress, shift=self.means[q_side])
        finally:
            del ivf
