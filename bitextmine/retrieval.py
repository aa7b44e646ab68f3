"""Retrieval accuracy (precision at 1) of line-aligned embeddings, the one home of that measure.

Used by ``bench tatoeba`` and by training's dev evaluation: row ``i`` of ``x`` is the translation
of row ``i`` of ``y``; a retrieval is correct when the nearest row on the other side is the aligned one.
Plain numpy; the similarity matrix is built whole (Tatoeba and dev sets are a few thousand lines).
"""
from __future__ import annotations

import numpy as np

from bitextmine.errors import InputError
from bitextmine.margin import Margin, apply_margin, knn_means


def nearest(x: np.ndarray, y: np.ndarray, margin: Margin | str = Margin.ABSOLUTE, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour of each row of ``x`` among ``y`` and vice versa: ``(x→y, y→x)`` indices.

    ``absolute`` is plain cosine (rows are L2-normalised); ``ratio``/``distance`` rescore each
    row's ``k`` nearest neighbours with the margin against both sides' neighbourhood means, as
    LASER's xSIM does. Ties go to the smallest index.
    """
    m = Margin(margin)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    sims = x @ y.T  # (n, m); Tatoeba files are small
    if sims.size == 0:
        raise InputError("no sentences to evaluate")
    if m is Margin.ABSOLUTE:
        return sims.argmax(axis=1), sims.argmax(axis=0)  # argmax returns the first (smallest) index on ties
    kx, ky = min(k, sims.shape[1]), min(k, sims.shape[0])
    ix = np.argsort(-sims, axis=1, kind="stable")[:, :kx]  # (n, kx) ids into y
    iy = np.argsort(-sims.T, axis=1, kind="stable")[:, :ky]  # (m, ky) ids into x
    dx = np.take_along_axis(sims, ix, axis=1)
    dy = np.take_along_axis(sims.T, iy, axis=1)
    mx, my = knn_means(dx, ix), knn_means(dy, iy)
    sx = apply_margin(dx, (mx[:, None] + my[ix]) / 2, m)
    sy = apply_margin(dy, (my[:, None] + mx[iy]) / 2, m)
    return np.take_along_axis(ix, sx.argmax(axis=1)[:, None], axis=1)[:, 0], np.take_along_axis(iy, sy.argmax(axis=1)[:, None], axis=1)[:, 0]


def accuracy(x: np.ndarray, y: np.ndarray, margin: Margin | str = Margin.ABSOLUTE, k: int = 4) -> tuple[float, float]:
    """(x→y, y→x) accuracy when row ``i`` of ``x`` is the translation of row ``i`` of ``y``."""
    if len(x) != len(y):
        raise InputError(f"the two sides have {len(x)} and {len(y)} sentences; Tatoeba files are line-aligned")
    if len(x) == 0:
        raise InputError("no sentences to evaluate")
    fwd, bwd = nearest(x, y, margin, k)
    ref = np.arange(len(x))
    return float((fwd == ref).mean()), float((bwd == ref).mean())
