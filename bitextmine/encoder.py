"""Texts to embeddings: token-budget batches of length-sorted sentences, order restored.

Sorting by length before batching means each batch pads to a similar length, so little compute
is spent on padding; a token budget (rather than a fixed batch size) keeps each batch's memory
and latency similar whether sentences are short or long.

Speed (measured in ``benchmarks/encode.py``):

* Reduced precision is applied to the **weights** (a bf16/fp16 copy of the model), not through
  autocast: autocast re-casts every weight on every call, which costs more than the matrix
  multiplications of a small model. The caller's model is left untouched.
* On the CPU, batches run on ``workers`` threads at once, each with its own single-threaded
  intra-op pool (``torch.set_num_threads(1)`` is per thread). Independent batches need no
  barrier between the cores after every operation, which matters for the many small
  element-wise operations of a transformer and, even more, on a machine shared with other jobs.
  On a GPU there is one worker and batches are sized to the card's memory.
* BERT-family encoders (BERT, XLM-R, RoBERTa with absolute positions) run an unpadded forward
  (:class:`bitextmine.packed.PackedForward`): the linear layers, which hold nearly all the FLOPs,
  see only real tokens. Other architectures run the model's own forward on padded batches.
* CPU and GPU share one code path: tokenise, sort, cut into batches, run them, restore order.
  Tokenising calls the fast tokenizer's Rust core directly; :meth:`Encoder.encode_stream`
  tokenises the next chunk in a background thread while the model runs on the current one.

Reproducible bits: an embedding depends on the model, its recipe, the texts of the call and
:attr:`Encoder.numerics` (device type, dtype, token budget, forward path), not on threads or
workers: batches are cut from the length-sorted call by the token budget alone, and every CPU
batch runs on a worker with one intra-op thread (even a single batch), so its reductions run in
one fixed order. The GPU budget follows the card's total, not free, memory for the same reason.

:func:`load_encoder` builds an :class:`Encoder` from :class:`EncoderOptions`, the settings the
``encode``, ``mine`` and ``bench`` commands share.
"""
from __future__ import annotations

import numbers
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from bitextmine.errors import InputError
from bitextmine.tokenize import TokenizerProcesses, default_tokenize_workers, tokenize_texts

# Also re-exported from here: cpu_has_fast_bf16 (its home before), Precision, PackedForward and pool.
from bitextmine.models.loader import (
    LoadedModel,
    cast_copy,
    cast_in_place,
    load_model,
    resolve_precision,
)
from bitextmine.models.loader import cpu_has_fast_bf16 as cpu_has_fast_bf16
from bitextmine.models.recipe import POOLINGS, PRECISIONS, Pooling, Precision
from bitextmine.packed import ROW_BUCKET, PackedForward, pool

T = TypeVar("T")

#: Most CPU worker threads used by default (each runs one batch at a time with one intra-op thread).
MAX_DEFAULT_WORKERS = 32
#: Default CPU tokens per batch (batch size x padded length) and per-worker memory bound (small batches stay in cache).
CPU_TOKEN_BUDGET = 1024
#: GPU token budgets are sized to the card's total memory, within these bounds.
GPU_TOKEN_BUDGET = (16_384, 262_144)


@dataclass
class EncodeStats:
    sentences: int = 0
    tokens: int = 0  # real tokens fed to the model, special tokens included
    padded_tokens: int = 0  # tokens including padding
    truncated: int = 0  # sentences cut at max_tokens
    batches: int = 0


def default_workers(device: torch.device, threads: int | None = None) -> int:
    """Batches run at once: one per CPU thread (at most :data:`MAX_DEFAULT_WORKERS`), one on a GPU.

    The count changes speed only: embeddings do not depend on it (see the module's notes).
    """
    if device.type != "cpu":
        return 1
    threads = threads or torch.get_num_threads()
    return max(1, min(threads, MAX_DEFAULT_WORKERS))


def gpu_token_budget(device: torch.device, hidden: int, intermediate: int, dtype: torch.dtype) -> int:
    """Tokens per batch for a CUDA device: a quarter of its total memory over a per-token activation estimate.

    Total, not free, memory: the budget decides which sentences share a batch, and that changes
    the last bits of their embeddings, so it must not depend on what other processes hold when a
    job starts or resumes. (On a card that others fill, pass a smaller budget explicitly.)
    """
    try:
        total = torch.cuda.get_device_properties(device).total_memory
    except Exception:  # no driver / not a CUDA device
        return GPU_TOKEN_BUDGET[0]
    item = torch.finfo(dtype).bits // 8
    per_token = 8 * (hidden + intermediate) * item  # live activations of one layer, with slack
    lo, hi = GPU_TOKEN_BUDGET
    return int(max(lo, min(hi, total // 4 // max(per_token, 1))))


class Encoder:
    """Embeds lists of sentences with a loaded model and its recipe.

    ``precision`` picks the compute dtype ("auto", "fp32", "bf16", "fp16"); reduced precisions run
    a copy of the model with weights in that dtype (the caller's model is not modified).
    ``token_budget`` bounds batch size x padded length (default: 1,024 on the CPU, sized to the
    card's memory on a GPU). ``workers``: batches run at once (default: one per CPU thread, up to
    32; one on a GPU), each with one intra-op thread: speed only, the output does not change.
    ``tokenize_workers``: processes that tokenise the chunks of :meth:`encode_stream` ahead of the model
    (default :func:`default_tokenize_workers`: on a GPU half the CPU cores, up to 8; none on the CPU):
    speed only, the ids are the same.
    ``packed=False`` forces the model's own padded forward even where the unpadded one applies.
    Output: float32 (n, dim), L2-normalised when the recipe says so, in input order.
    """

    def __init__(
        self,
        lm: LoadedModel,
        *,
        precision: Precision | str = Precision.AUTO,
        token_budget: int | None = None,
        workers: int | None = None,
        packed: bool = True,
        tokenize_workers: int | None = None,
    ) -> None:
        self.lm = lm
        self.device = next(lm.model.parameters()).device
        self.dtype = resolve_precision(precision, self.device)
        self.model = lm.model
        self._autocast = False
        if next(lm.model.parameters()).dtype != self.dtype:
            cast = cast_copy(lm.model, self.dtype)
            if cast is None:
                self._autocast = True
            else:
                self.model = cast
        cfg = getattr(lm.model, "config", None)
        self.packed = PackedForward.build(self.model) if packed else None
        if token_budget is None:
            if self.device.type == "cuda":
                hidden = int(getattr(cfg, "hidden_size", 1024))
                token_budget = gpu_token_budget(self.device, hidden, int(getattr(cfg, "intermediate_size", 4 * hidden)), self.dtype)
            else:
                token_budget = CPU_TOKEN_BUDGET
        if token_budget < 1:
            raise ValueError(f"token_budget must be at least 1, got {token_budget}")
        self.token_budget = int(token_budget)
        threads = torch.get_num_threads()
        self.workers = int(workers) if workers is not None else default_workers(self.device, threads)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.device.type != "cpu":
            self.workers = 1
        self.threads_per_worker = 1  # whatever the thread count: each batch's reductions in one fixed order
        self.tokenize_workers = default_tokenize_workers(self.device) if tokenize_workers is None else int(tokenize_workers)
        if self.tokenize_workers < 0:
            raise ValueError(f"tokenize_workers must be at least 0, got {self.tokenize_workers}")
        self._tok_procs: TokenizerProcesses | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self.stats = EncodeStats()
        tok = lm.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._direct = True  # call the fast tokenizer's Rust core directly where it can be (False: always the wrapper)

    @property
    def dim(self) -> int:
        return self.lm.dim

    @property
    def numerics(self) -> dict:
        """What the embeddings' bits depend on besides the model, its recipe and each call's texts (not threads).

        A folder or cache that keeps embeddings across runs should record it and not mix values.
        """
        forward = "autocast" if self._autocast else "packed" if self.packed is not None else "model"
        return {"device": self.device.type, "dtype": str(self.dtype).removeprefix("torch."), "token_budget": self.token_budget, "forward": forward}

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text with the recipe's prefix and special tokens, truncated to max_tokens.

        A truncated sentence keeps its final special token.
        """
        r = self.lm.recipe
        with self._tok_lock:
            ids, cut = tokenize_texts(self._backend() or self.lm.tokenizer, texts, r.prefix, r.max_tokens)
        self.stats.truncated += cut
        return ids

    def _backend(self):
        """The fast tokenizer's own Rust tokenizer, shared, not copied (a copy of the default model's costs ~280 MB); None if slow."""
        tok = self.lm.tokenizer
        return getattr(tok, "backend_tokenizer", None) if self._direct and getattr(tok, "is_fast", False) else None

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Split indices, sorted by length (longest first), into batches within the token budget."""
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            size = max(1, self.token_budget // max(longest, 1))
            out.append(order[start : start + size])
            start += size
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: float32 array (len(texts), dim) in the same order."""
        return self.encode_ids(self.tokenize(texts)) if texts else np.empty((0, self.dim), dtype=np.float32)

    def encode_stream(self, chunks: Iterable[T], texts: Callable[[T], list[str]] | None = None) -> Iterator[tuple[T, np.ndarray]]:
        """Embed chunk after chunk: yields ``(chunk, embeddings)`` in order.

        One background thread pulls the next chunk from ``chunks`` (reading input, say) and
        tokenizes it while the model embeds the current one, so on a GPU the tokenizer's time
        is hidden. ``texts(chunk)`` gives a chunk's sentences (default: the chunk is a list of
        strings). At most one chunk is read ahead; errors from ``chunks`` are raised here.
        """
        it = iter(chunks)
        get = texts or (lambda c: c)
        done = object()

        def prepare():
            chunk = next(it, done)
            return (chunk, None) if chunk is done else (chunk, self._tokenize_ahead(get(chunk)))

        pool = ThreadPoolExecutor(1, thread_name_prefix="bitextmine-tokenize")
        try:
            ahead = pool.submit(prepare)
            while True:
                chunk, ids = ahead.result()
                if chunk is done:
                    return
                ahead = pool.submit(prepare)
                yield chunk, (self.encode_ids(ids) if ids else np.empty((0, self.dim), dtype=np.float32))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _tokenize_ahead(self, texts: list[str]) -> list[list[int]]:
        """:meth:`tokenize` in the tokenizer processes, if any (started here; dropped if they fail)."""
        if self.tokenize_workers < 1 or not texts:
            return self.tokenize(texts)
        if self._tok_procs is None:
            r = self.lm.recipe
            with self._tok_lock:  # the Rust tokenizer's JSON, with no wrapper call half-way through
                self._tok_procs = TokenizerProcesses(self._backend() or self.lm.tokenizer, r.prefix, r.max_tokens, self.tokenize_workers)
        got = self._tok_procs.tokenize(texts)
        if got is None:
            self._tok_procs, self.tokenize_workers = None, 0
            return self.tokenize(texts)
        self.stats.truncated += got[1]
        return got[0]

    def encode_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Embed token id lists from :meth:`tokenize`: float32 array (len(ids), dim) in the same order."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if not ids:
            return out
        lengths = np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids))
        batches = self.batches(lengths)
        jobs = ([ids[i] for i in idx] for idx in batches)
        if self.device.type == "cpu":  # on the workers even for one batch: the caller's thread count must not matter
            results = self._executor().map(self._forward, jobs)
        else:
            results = map(self._forward, jobs)
        for idx, emb in zip(batches, results):
            out[idx] = emb
        self.stats.sentences += len(ids)
        self.stats.tokens += int(lengths.sum())
        return out

    def close(self) -> None:
        """Stop the worker threads and tokenizer processes (they are restarted when needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._tok_procs is not None:
            self._tok_procs.close()
            self._tok_procs = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
        procs = getattr(self, "_tok_procs", None)
        if procs is not None:
            procs._pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            main_threads = torch.get_num_threads()
            ready = threading.Barrier(self.workers + 1)
            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bitextmine-encode",
                                      initializer=_init_worker, initargs=(self.threads_per_worker, ready))
            for _ in range(self.workers):  # one submit per thread: all start and initialise now
                pool.submit(int)
            ready.wait()
            # torch.set_num_threads also sets the default that threads started later inherit;
            # give it back to the caller's setting (the workers keep their own).
            torch.set_num_threads(main_threads)
            self._pool = pool
        return self._pool

    def _inputs(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    @torch.inference_mode()
    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        if self.packed is not None and not self._autocast:
            with self._lock:  # token rows of the linear layers (rounded up to ROW_BUCKET)
                self.stats.padded_tokens += -(-sum(len(q) for q in seqs) // ROW_BUCKET) * ROW_BUCKET
                self.stats.batches += 1
            emb = self.packed(seqs, self.lm.recipe.pooling, self.device)
            return self._finish(emb)
        input_ids, mask = self._inputs(seqs)
        with self._lock:
            self.stats.padded_tokens += input_ids.numel()
            self.stats.batches += 1
        if self.device.type == "cuda":
            input_ids = input_ids.pin_memory().to(self.device, non_blocking=True)
            mask = mask.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self._autocast):
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self._finish(pool(hidden.float(), mask, self.lm.recipe.pooling))

    def _finish(self, emb: torch.Tensor) -> np.ndarray:
        if self.lm.head is not None:
            emb = self.lm.head(emb)
        if self.lm.recipe.normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu().numpy()


def _init_worker(threads: int, ready: threading.Barrier) -> None:
    """Worker thread set-up: its own intra-op thread count (OpenMP and MKL settings are per thread)."""
    torch.get_num_threads()  # initialise this thread's settings from the process default first
    torch.set_num_threads(threads)
    ready.wait()


@dataclass
class EncoderOptions:
    """Which model to load and how to run it: what ``encode``, ``mine`` and ``bench`` share."""

    model: str = "default"  # "default" (the packaged E5-small), a local model folder or a Hugging Face id
    precision: Precision = Precision.AUTO  # compute dtype; a plain string ("bf16") works too
    token_budget: int | None = None  # tokens per batch and worker; None: 1,024 on CPUs, sized to the card's memory on a GPU
    pooling: Pooling | None = None  # overrides the model's pooling (None: keep the recipe's)
    prefix: str | None = None  # overrides the text put before every sentence (None: keep the recipe's)
    max_tokens: int | None = None  # overrides the truncation length (None: keep the recipe's)
    threads: int | None = None  # torch CPU threads for the whole process, at least 1 (None: leave torch's setting)
    device: str = "auto"  # "auto" (a CUDA GPU when present, else the CPU), "cpu", "cuda" or "cuda:N"
    tokenize_workers: int | None = None  # tokenizer processes feeding the model (None: half the cores, up to 8, on a GPU; 0 on the CPU)


def check_options(opts: EncoderOptions) -> None:
    """Raise InputError (``param`` names the field) for an option that cannot work; the model and device are load_model's."""
    for name, least in (("threads", 1), ("token_budget", 1), ("max_tokens", 2), ("tokenize_workers", 0)):
        v = getattr(opts, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            raise InputError(f"{{param}} must be a whole number, not {v!r}", param=name)
        if v is not None and v < least:
            raise InputError(f"{{param}} must be at least {least}, got {v}", param=name)
    if opts.precision not in PRECISIONS:
        raise InputError(f"{{param}} must be one of {', '.join(PRECISIONS)}", param="precision")
    if opts.pooling is not None and opts.pooling not in POOLINGS:
        raise InputError(f"{{param}} must be one of {', '.join(POOLINGS)}, not {opts.pooling!r}", param="pooling")
    if opts.prefix is not None and not isinstance(opts.prefix, str):
        raise InputError(f"{{param}} must be text, not {opts.prefix!r}", param="prefix")


def load_encoder(opts: EncoderOptions) -> Encoder:
    """Load ``opts.model`` with its recipe overrides and build an :class:`Encoder` for it.

    Options are checked first (:func:`check_options`), then torch's CPU thread count is set when
    ``opts.threads`` is given, then the model loads (:class:`~bitextmine.errors.ModelError`).
    For a reduced precision the fresh model is cast in place, keeping no full-precision copy
    beside it (same embeddings as ``Encoder(load_model(...), precision=...)``).
    """
    check_options(opts)
    if opts.threads is not None:
        torch.set_num_threads(int(opts.threads))
    lm = load_model(opts.model, device=opts.device, pooling=opts.pooling, prefix=opts.prefix, max_tokens=opts.max_tokens)
    dtype = resolve_precision(opts.precision, next(lm.model.parameters()).device)
    if dtype != torch.float32:
        cast_in_place(lm.model, dtype)  # ours alone: nobody else holds this model
    return Encoder(lm, precision=opts.precision, token_budget=opts.token_budget, tokenize_workers=opts.tokenize_workers)
