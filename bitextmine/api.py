"""The short calls behind ``import bitextmine as bm``: :func:`encode` and :func:`mine`.

Each picks the right level of the library for what it is given (texts or an encoder; paths,
embedding folders or arrays), so a notebook needs no deep imports.
"""
from __future__ import annotations

import functools
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from bitextmine.encoder import Encoder
    from bitextmine.mining import MineResult
    from bitextmine.margin import Candidates


@functools.lru_cache(maxsize=4)
def _encoder(**options: Any) -> Encoder:
    from bitextmine.encoder import EncoderOptions, load_encoder

    return load_encoder(EncoderOptions(**options))


def encode(texts: Sequence[str], model: str | Encoder = "default", **options: Any) -> np.ndarray:
    """Embed ``texts``: (n, dim) float32, L2-normalised when the model's recipe says so.

    ``model`` is a model name (``"default"``, a Hugging Face id or a folder; loaded once and kept
    for the next calls with the same options) or an :class:`~bitextmine.encoder.Encoder`.
    ``options`` are the other :class:`~bitextmine.encoder.EncoderOptions` fields (``precision``,
    ``device``, ``threads``...).
    """
    from bitextmine.encoder import Encoder

    enc = model if isinstance(model, Encoder) else _encoder(model=model, **options)
    return enc.encode(list(texts))


def mine(src: Any, tgt: Any, **options: Any) -> MineResult | Candidates:
    """Mine translation pairs between two sides.

    * two arrays (n, dim) → :func:`~bitextmine.mining.mine_embeddings`: :class:`~bitextmine.margin.Candidates`;
    * two :class:`~bitextmine.store.EmbeddingStore` → :func:`~bitextmine.mining.mine_stores`;
    * two paths (text files or embedding folders) → :func:`~bitextmine.mining.mine_files`.

    ``options``: the :class:`~bitextmine.mining.MineOptions` fields (``k``, ``margin``, ``threshold``...),
    plus for paths the keywords of :func:`~bitextmine.mining.mine_files` (``encoder``, ``output``,
    ``id_column``, ``cache_dir``...).
    """
    from bitextmine.mining import MineOptions, mine_embeddings, mine_files, mine_stores
    from bitextmine.store import EmbeddingStore

    names = {f.name for f in fields(MineOptions)}
    opts = MineOptions(**{k: v for k, v in options.items() if k in names})
    rest = {k: v for k, v in options.items() if k not in names}
    if isinstance(src, EmbeddingStore) and isinstance(tgt, EmbeddingStore):
        return mine_stores(src, tgt, opts, **rest)
    if isinstance(src, (str, Path)) and isinstance(tgt, (str, Path)):
        return mine_files(src, tgt, opts, **rest)
    return mine_embeddings(np.asarray(src) if not hasattr(src, "iter_blocks") else src,
                           np.asarray(tgt) if not hasattr(tgt, "iter_blocks") else tgt, opts)
