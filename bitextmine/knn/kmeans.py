"""k-means for the coarse quantizer of centred probing (:mod:`.centred`), each iteration's assignment on int8 estimates.

Lloyd's iterations as FAISS runs them (``faiss.Kmeans``: L2, or spherical: the largest inner product and unit
centroids; an empty centroid takes half of a large one, FAISS's split), but every row goes to its nearest centroid
as :mod:`.assign` ranks the lists of centred probing: by int8 estimates of x.c (exact integer products, on VNNI /
AMX int8 units where the CPU has them), on the worker threads in fixed slices. A k-means assignment that swaps two
centroids scoring within ~1e-3 |x| |c| of each other changes nothing that matters: the centroids are the search's
own approximation, and the probes rank the lists the same way. The same centroids for any number of threads and on
any machine (integer products, sums in a fixed order). 100k x 100k (``benchmarks/mine_speed.py``, IVF1024,
32,768 training rows, AVX512-VNNI EPYC, 2 threads; ``mine-speed-14s39*``): the coarse training 0.8 -> 0.4 s on the
structured set, 1.6 -> 0.6 s on the near-isotropic set (L2, then spherical: hub lists); exact's true pairs found
99.399 -> 99.397% and 99.963 -> 99.959% (the int8 list ranking before it). Its objective on the tests' data is
FAISS's or lower (by 0.01% on the two sets of ``tests/test_knn_lists.py``).
"""
from __future__ import annotations

import numpy as np

from .assign import Int8Centroids, _nearest
from .workers import _torch_single, _Workers

#: Relative change of the two halves of a split centroid (FAISS's ``EPS``).
SPLIT = 1 / 1024


def kmeans(train: np.ndarray, nlist: int, seed: int, spherical: bool, init: np.ndarray | None, niter: int) -> np.ndarray:
    """(nlist, d) float32 centroids after ``niter`` iterations on ``train`` (n >= nlist rows), from ``init`` or from
    ``nlist`` distinct rows drawn with ``seed``; unit centroids and inner products when ``spherical``."""
    import torch

    x = np.ascontiguousarray(train, dtype=np.float32)
    n, xt = len(x), torch.from_numpy(x)
    rng = np.random.default_rng(seed)
    c = x[np.sort(rng.choice(n, nlist, replace=False))] if init is None else np.array(init, dtype=np.float32)
    c = _unit(c) if spherical else np.ascontiguousarray(c)
    with _Workers() as workers, _torch_single(True):
        for _ in range(niter):
            coded = Int8Centroids(c)
            half = None if spherical else 0.5 * np.einsum("ij,ij->i", c, c)
            near = np.concatenate(workers.map(lambda sl: _nearest(x[sl], c, half, 1, coded), workers.slices(n))).ravel()
            counts = np.bincount(near, minlength=nlist)
            full = np.flatnonzero(counts)
            sums = torch.zeros(c.shape).index_add_(0, torch.from_numpy(near), xt).numpy()  # row by row: fixed sums
            c = c.copy()
            c[full] = sums[full] / counts[full, None].astype(np.float32)
            _split_empty(c, counts, rng)
            if spherical:
                c = _unit(c)
    return c


def _split_empty(c: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> None:
    """In place: each empty centroid takes half of a centroid drawn with probability ~ its rows - 1 (both moved
    apart by :data:`SPLIT` a coordinate, alternately up and down), as FAISS's k-means does."""
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return
    counts = counts.astype(np.float64)
    fac = np.ones(c.shape[1], np.float32)
    fac[::2] += SPLIT
    fac[1::2] -= SPLIT
    for e in empty.tolist():
        weight = np.maximum(counts - 1, 0)
        if weight.sum() <= 0:
            return
        j = int(rng.choice(len(c), p=weight / weight.sum()))
        c[e], c[j] = c[j] * fac, c[j] / fac
        counts[e] = counts[j] // 2
        counts[j] -= counts[e]


def _unit(c: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), dtype=np.float32)
