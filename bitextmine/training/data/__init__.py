"""Training data: parallel TSV files, the paper's filters, a dev split, language-balanced batches.

The pipeline, one module per step:

* :mod:`~bitextmine.training.data.pairs` finds the ``xx-en.tsv`` files, reads their pairs and
  holds the paper's filters;
* :mod:`~bitextmine.training.data.tokens` is the tokenised form (token layout, ragged int32 arrays);
* :mod:`~bitextmine.training.data.prepare` filters, splits and tokenises once per fingerprint,
  and :mod:`~bitextmine.training.data.cache` keeps the result on disk for later runs;
* :mod:`~bitextmine.training.data.batches` samples languages and pads micro-batches;
* :mod:`~bitextmine.training.data.devsets` reads the dev sets (Flores, held-out split, Tatoeba).

The names below are re-exported so ``from bitextmine.training.data import ...`` keeps working.
"""
from __future__ import annotations

from bitextmine.training.data.batches import Batch, Sampler, make_batch
from bitextmine.training.data.cache import FORMAT_VERSION, load_cache, save_cache
from bitextmine.training.data.devsets import FLORES, TATOEBA, DevSet, flores_dev, split_dev, tatoeba_dev
from bitextmine.training.data.pairs import FILTER_REASONS, filter_reason, find_train_files, read_tsv
from bitextmine.training.data.prepare import data_fingerprint, prepare_data, prepare_language
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout, token_layout

__all__ = [
    "FILTER_REASONS", "FLORES", "FORMAT_VERSION", "TATOEBA", "Batch", "DevSet", "LangData", "PreparedData", "Ragged", "Sampler",
    "TokenLayout", "data_fingerprint", "filter_reason", "find_train_files", "flores_dev", "load_cache", "make_batch",
    "prepare_data", "prepare_language", "read_tsv", "save_cache", "split_dev", "tatoeba_dev", "token_layout",
]
