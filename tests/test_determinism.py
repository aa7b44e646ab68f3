"""Embeddings do not depend on the thread count or the number of workers (issue 10, item 8).

The embedding cache, the resume check of ``encode corpus`` and the manifest do not record
threads, so a job resumed or cached under another ``--threads`` must write the same bytes.
Batches are cut by the token budget alone and every CPU batch runs on a worker thread with one
intra-op thread (also a single batch, also with one worker), so each batch's reductions have one
order. What the bits do depend on besides model, recipe and texts is :attr:`Encoder.numerics`.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import make_sentences, need_shared

from bitextmine.encoder import Encoder
from bitextmine.models.loader import load_model


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def varied_texts(n: int = 300) -> list[str]:
    """``n`` texts of varied lengths: sentences, one-word and empty texts, and ones past max_tokens."""
    base = make_sentences(n, seed=21)
    out = []
    for i, s in enumerate(base):
        if i % 10 == 3:
            s = " ".join(base[i : i + 4])  # long (past the tiny model's 32 tokens)
        elif i % 10 == 7:
            s = s.split()[0]  # one word
        out.append(s)
    return out + ["", "x"]


def embed(lm, threads: int, *, precision: str = "fp32", workers: int | None = None, token_budget: int | None = None,
          packed: bool = True, stream: bool = True, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(one call, one call per text for the first 30, a stream of uneven chunks, numerics) with torch at ``threads``."""
    torch.set_num_threads(threads)
    enc = Encoder(lm, precision=precision, workers=workers, token_budget=token_budget, packed=packed)
    try:
        whole = enc.encode(texts)
        singles = np.concatenate([enc.encode([t]) for t in texts[:30]])
        chunks = [texts[a:b] for a, b in zip((0, 7, 100, 101), (7, 100, 101, len(texts)))]
        streamed = np.concatenate([e for _, e in enc.encode_stream(chunks)]) if stream else whole
        return whole, singles, streamed, enc.numerics
    finally:
        enc.close()


def assert_same_bytes(a, b) -> None:
    for x, y in zip(a[:3], b[:3]):
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), f"{int((x != y).any(1).sum())} of {len(x)} rows differ, max {float(np.abs(x - y).max()):.3g}"
    assert a[3] == b[3]


@pytest.mark.parametrize("precision,packed", [("fp32", True), ("bf16", True), ("fp32", False)], ids=["fp32", "bf16", "fp32-padded"])
def test_tiny_model_same_bytes_whatever_threads_and_workers(tiny_model, keep_threads, precision, packed) -> None:
    lm = load_model(str(tiny_model), device="cpu")
    texts = varied_texts()
    ref = embed(lm, 1, precision=precision, packed=packed, token_budget=128, texts=texts)
    assert ref[0].shape == (len(texts), lm.dim)
    for threads, workers in [(2, None), (2, 1), (4, None), (4, 3), (1, 2)]:
        assert_same_bytes(embed(lm, threads, precision=precision, workers=workers, packed=packed, token_budget=128, texts=texts), ref)


def test_every_cpu_batch_runs_with_one_intra_op_thread(tiny_model, keep_threads) -> None:
    """Also a single batch with the caller at 2 threads, and workers fewer than threads: neither may
    run a batch with more than one intra-op thread (more threads split reductions differently)."""
    lm = load_model(str(tiny_model), device="cpu")
    seen: list[tuple[int, str]] = []
    for threads, workers in [(2, None), (4, 2), (1, None)]:
        torch.set_num_threads(threads)
        enc = Encoder(lm, precision="fp32", workers=workers)
        forward = enc._forward
        enc._forward = lambda seqs, f=forward: (seen.append((torch.get_num_threads(), threading.current_thread().name)), f(seqs))[1]
        try:
            enc.encode(["the cat"])  # one batch
            enc.encode(make_sentences(200, seed=2))  # several
        finally:
            enc.close()
        assert torch.get_num_threads() == threads  # the caller's setting is left as it was
    assert seen and all(n == 1 and name.startswith("bitextmine-encode") for n, name in seen), seen


def test_numerics_name_what_the_bits_depend_on(tiny_model, keep_threads) -> None:
    lm = load_model(str(tiny_model), device="cpu")
    torch.set_num_threads(1)
    one = Encoder(lm, precision="fp32").numerics
    torch.set_num_threads(2)
    assert Encoder(lm, precision="fp32", workers=3).numerics == one == {"device": "cpu", "dtype": "float32", "token_budget": 1024, "forward": "packed"}
    assert Encoder(lm, precision="bf16").numerics["dtype"] == "bfloat16"
    assert Encoder(lm, precision="fp32", token_budget=64).numerics["token_budget"] == 64
    assert Encoder(lm, precision="fp32", packed=False).numerics["forward"] == "model"


def real_sentences(n: int = 300) -> list[str]:
    """``n`` sentences: half Chinese, half English from the BUCC 2018 zh-en sample (tests/sentences.py without it)."""
    try:
        folder = need_shared("bucc2018", "zh-en")
    except pytest.skip.Exception:
        from sentences import SENTENCES

        return (SENTENCES * (n // len(SENTENCES) + 1))[:n]
    out = []
    for side in ("zh", "en"):
        with open(folder / f"zh-en.sample.{side}", encoding="utf-8") as f:
            out += [next(f).rstrip("\n").split("\t", 1)[1] for _ in range(n // 2)]
    return out


@pytest.mark.slow
def test_default_model_same_bytes_with_1_and_2_threads(keep_threads) -> None:
    """The packaged model at its CPU default precision (bf16 only where the CPU has it: minutes otherwise)."""
    lm = load_model("default", device="cpu")
    texts = real_sentences()
    ref = embed(lm, 1, precision="auto", stream=False, texts=texts)
    assert_same_bytes(embed(lm, 2, precision="auto", stream=False, texts=texts), ref)
