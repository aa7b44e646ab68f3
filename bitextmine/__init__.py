"""bitextmine: find parallel sentences in large monolingual corpora.

The public API, imported lazily so that ``import bitextmine`` stays fast (no torch, no FAISS until
a name is used)::

    import bitextmine as bm
    x = bm.encode(["Der Hund bellt."])                      # (1, 384) float32
    pairs = bm.mine(x_de, x_en, k=4)                         # arrays → Candidates
    res = bm.mine("de.txt", "en.txt", output=bm.PairsOutput("pairs.tsv"))

Everything here is also importable from its module (listed in ``_EXPORTS``).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: Public name → the module that defines it.
_EXPORTS = {
    "encode": "bitextmine.api",
    "mine": "bitextmine.api",
    "load_model": "bitextmine.models.loader",
    "Encoder": "bitextmine.encoder",
    "EncoderOptions": "bitextmine.encoder",
    "load_encoder": "bitextmine.encoder",
    "encode_corpus": "bitextmine.encode_job",
    "encode_files": "bitextmine.encode_job",
    "EncodeOptions": "bitextmine.encode_job",
    "RayOptions": "bitextmine.ray_engine",
    "RayEncoder": "bitextmine.ray_engine",
    "FilterOptions": "bitextmine.filters",
    "filter_pairs": "bitextmine.filters",
    "filter_file": "bitextmine.filters",
    "EmbeddingStore": "bitextmine.store",
    "EmbeddingCache": "bitextmine.embed_cache",
    "MineOptions": "bitextmine.mining",
    "MineResult": "bitextmine.mining",
    "mine_files": "bitextmine.mining",
    "mine_stores": "bitextmine.mining",
    "mine_embeddings": "bitextmine.mining",
    "PairsOutput": "bitextmine.output",
    "write_pairs": "bitextmine.output",
    "score_pairs": "bitextmine.scoring",
    "score_files": "bitextmine.scoring",
    "import_embeddings": "bitextmine.importer",
    "Candidates": "bitextmine.margin",
    "Margin": "bitextmine.margin",
    "Strategy": "bitextmine.margin",
    "resolve_threshold": "bitextmine.threshold",
    "Errors": "bitextmine.corpus",
    "Event": "bitextmine.events",
    "BitextmineError": "bitextmine.errors",
    "InputError": "bitextmine.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bitextmine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
