"""Retrieval accuracy (precision at 1) of line-aligned embeddings on hand-made vectors: cosine
nearest neighbours, ties, duplicate targets, both directions, and the margin rescoring a hub away."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.errors import InputError
from bitextmine.retrieval import accuracy, nearest


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_accuracy_by_hand():
    x = unit(np.eye(4) + 0.1)
    assert accuracy(x, x) == (1.0, 1.0)
    y = x[[1, 0, 2, 3]]  # the first two targets swapped: 2 of 4 wrong each way
    assert accuracy(x, y) == (0.5, 0.5)
    # a duplicate target: both sources retrieve its first copy, so the second counts as an error
    x = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.1, 1]])
    y = x.copy()
    y[3] = y[2]
    fwd, _ = nearest(x, y)
    assert list(fwd) == [0, 1, 2, 2] and accuracy(x, y)[0] == 0.75
    # the directions differ: x[1] retrieves y[0] (wrong), but every target retrieves its own source
    x = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]])
    y = unit([[0.95, 0.3, 0], [0.3, 1, 0], [0, 0.1, 1]])
    assert list(nearest(x, y)[0]) == [0, 0, 2]
    assert accuracy(x, y) == (2 / 3, 1.0)
    with pytest.raises(InputError, match="line-aligned"):
        accuracy(x, y[:2])


def test_margin_retrieval_removes_a_hub():
    # y[0] is close to every source (a hub): cosine retrieves it for x[3]; the ratio margin does not
    x = unit([[0.96, 0.13, 0.2, 0.15], [0.02, 0.96, 0.24, 0.13], [0.03, 0.18, 0.97, 0.17], [0.17, 0.22, 0.11, 0.95]])
    y = unit([[0.46, 0.52, 0.53, 0.49], [-0.1, 0.89, 0.29, 0.32], [0.09, 0.18, 0.93, 0.3], [-0.55, 0.13, -0.28, 0.77]])
    assert list(nearest(x, y, "absolute")[0]) == [0, 1, 2, 0]
    assert list(nearest(x, y, "ratio", k=2)[0]) == [0, 1, 2, 3]


def test_empty_sides_are_an_input_error():
    empty = np.zeros((0, 3), dtype=np.float32)
    with pytest.raises(InputError, match="no sentences to evaluate"):
        accuracy(empty, empty)
    with pytest.raises(InputError, match="no sentences to evaluate"):
        nearest(empty, empty)
