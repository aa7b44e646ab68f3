"""Tokenising, in this process or in a pool of processes that feed a GPU.

:func:`tokenize_texts` is the one tokenising routine (:meth:`bitextmine.encoder.Encoder.tokenize` calls
it). :class:`TokenizerProcesses` runs it in worker processes: on a GPU host one Python thread cannot
turn text into token lists as fast as the card embeds them (the Rust tokenizer is parallel, but the
lists it returns are built, truncated and handed over under the GIL, which the thread feeding the GPU
needs too). Each chunk is cut into one piece per process; the pieces come back in order, so the ids
are exactly those of :func:`tokenize_texts` on the whole chunk. This module imports neither torch
nor transformers, so the processes (started with ``spawn``: no copy of a CUDA context) start fast.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


def tokenize_texts(tok: Any, texts: list[str], prefix: str, max_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids of ``texts`` (``prefix`` and special tokens added, truncated to ``max_tokens`` keeping the
    final special token) and how many were truncated. ``tok``: a fast tokenizer's Rust core
    (:class:`tokenizers.Tokenizer`, called directly: what the transformers wrapper runs, without its
    overhead) or a transformers tokenizer."""
    from tokenizers import Tokenizer

    if not texts:  # (transformers' wrapper fails on an empty batch)
        return [], 0
    texts = [prefix + t for t in texts] if prefix else texts
    if isinstance(tok, Tokenizer):
        # The wrapper sets padding and truncation before each of its calls; what its last call
        # left set is no setting of anyone's. Encode with neither (truncation is done below).
        if tok.truncation is not None:
            tok.no_truncation()
        if tok.padding is not None:
            tok.no_padding()
        fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
        ids = [e.ids for e in fast(texts, add_special_tokens=True)]
    else:  # truncating one token past the limit tells truncated sentences apart from ones that fit exactly
        ids = tok(texts, add_special_tokens=True, truncation=True, max_length=max_tokens + 1,
                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    cut = 0
    for i, seq in enumerate(ids):
        if len(seq) > max_tokens:
            ids[i] = seq[: max_tokens - 1] + seq[-1:]
            cut += 1
    return ids, cut


#: Most tokenizer processes feeding a GPU (:func:`default_tokenize_workers`).
MAX_TOKENIZE_WORKERS = 8


def default_tokenize_workers(device: Any) -> int:
    """Tokenizer processes feeding :meth:`~bitextmine.encoder.Encoder.encode_stream` on ``device`` (a
    torch device): on a GPU one per 2 CPU cores, at most :data:`MAX_TOKENIZE_WORKERS`; none on the CPU,
    whose cores run the model."""
    if device.type == "cpu":
        return 0
    return max(1, min(MAX_TOKENIZE_WORKERS, _cores() // 2))


def _cores() -> int:
    """CPUs this process may run on (its affinity mask; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_mine: tuple | None = None  # in a worker process: (tokenizer, prefix, max_tokens)


def _init(tok: Any, prefix: str, max_tokens: int, rayon_threads: int) -> None:
    global _mine
    os.environ["RAYON_NUM_THREADS"] = str(rayon_threads)  # before the Rust pool starts: the processes share the cores
    if isinstance(tok, str):  # a fast tokenizer travels as its JSON
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tok)
    _mine = (tok, prefix, max_tokens)


def _run(texts: list[str]) -> tuple[list[list[int]], int]:
    assert _mine is not None, "not a tokenizer process"
    return tokenize_texts(_mine[0], texts, _mine[1], _mine[2])


class TokenizerProcesses:
    """``workers`` processes tokenising with ``tok`` (a :class:`tokenizers.Tokenizer` or a picklable
    transformers tokenizer); :meth:`tokenize` = :func:`tokenize_texts` on the whole list."""

    def __init__(self, tok: Any, prefix: str, max_tokens: int, workers: int) -> None:
        from tokenizers import Tokenizer

        self.workers = int(workers)
        payload = tok.to_str() if isinstance(tok, Tokenizer) else tok
        rayon = max(1, _cores() // self.workers)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(payload, prefix, max_tokens, rayon))

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], int] | None:
        """:func:`tokenize_texts` of ``texts``, or None (with a warning; the pool is stopped) when the
        processes cannot work: a tokenizer that does not pickle, or a script without an
        ``if __name__ == "__main__":`` guard, which ``spawn`` runs again in every process."""
        step = max(64, -(-len(texts) // self.workers))
        ids: list[list[int]] = []
        cut = 0
        try:
            for part, c in self._pool.map(_run, [texts[a : a + step] for a in range(0, len(texts), step)]):
                ids += part
                cut += c
        except (BrokenProcessPool, pickle.PicklingError, TypeError, AttributeError, RuntimeError, OSError) as e:
            warnings.warn(f"tokenizer processes failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); "
                          "tokenising in this process instead", RuntimeWarning, stacklevel=3)
            self.close()
            return None
        return ids, cut

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        except Exception:  # a broken pool has nothing left to stop
            pass
