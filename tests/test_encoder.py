"""The encoder's options and loader: EncoderOptions -> load_encoder -> Encoder, and precision names.

(Batching, the packed forward and throughput are covered in ``test_scale``.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_sentences

from bitextmine.encoder import (
    Encoder,
    EncoderOptions,
    Precision,
    load_encoder,
    resolve_precision,
)
from bitextmine.errors import InputError, ModelError
from bitextmine.models.recipe import Pooling


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_defaults() -> None:
    o = EncoderOptions()
    assert (o.model, o.precision, o.token_budget, o.device, o.threads) == ("default", "auto", None, "auto", None)
    assert (o.pooling, o.prefix, o.max_tokens) == (None, None, None)


def test_load_encoder_applies_every_option(tiny_model, keep_threads) -> None:
    enc = load_encoder(EncoderOptions(model=str(tiny_model), precision=Precision.FP32, token_budget=77, pooling=Pooling.CLS,
                                      prefix="q: ", max_tokens=9, threads=1, device="cpu"))
    assert isinstance(enc, Encoder) and torch.get_num_threads() == 1
    assert (enc.dtype, enc.token_budget, enc.device.type) == (torch.float32, 77, "cpu")
    r = enc.lm.recipe
    assert (r.pooling, r.prefix, r.max_tokens) == ("cls", "q: ", 9)
    assert enc.encode(["the cat", "der hund"]).shape == (2, 32)


def test_load_encoder_equals_load_model_plus_encoder(tiny_model) -> None:
    from bitextmine.models.loader import load_model

    texts = ["the cat sees the dog", "le chat", "кот"]
    ours = load_encoder(EncoderOptions(model=str(tiny_model), precision="fp32")).encode(texts)
    theirs = Encoder(load_model(str(tiny_model)), precision="fp32").encode(texts)
    np.testing.assert_array_equal(ours, theirs)


def test_bad_precision_and_budget_are_input_errors(tiny_model) -> None:
    with pytest.raises(InputError) as e:
        load_encoder(EncoderOptions(model=str(tiny_model), precision="fp64"))
    assert e.value.param == "precision" and str(e.value) == "precision must be one of auto, fp32, bf16, fp16"
    assert e.value.message_for({"precision": "--precision"}) == "--precision must be one of auto, fp32, bf16, fp16"
    with pytest.raises(InputError) as e:
        load_encoder(EncoderOptions(model=str(tiny_model), token_budget=0))
    assert e.value.param == "token_budget" and str(e.value) == "token_budget must be at least 1, got 0"


def test_model_errors_come_before_option_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such folder"):
        load_encoder(EncoderOptions(model=str(tmp_path / "missing"), precision="fp64"))


def test_precision_names_and_members_are_interchangeable() -> None:
    cpu = torch.device("cpu")
    assert [p.value for p in Precision] == ["auto", "fp32", "bf16", "fp16"]
    assert Precision("bf16") is Precision.BF16 and f"{Precision.BF16}" == "bf16" and str(Precision.FP16) == "fp16"
    assert resolve_precision(Precision.FP16, cpu) == resolve_precision("fp16", cpu) == torch.float16
    assert resolve_precision(Precision.AUTO, cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", cpu)


def test_encode_stream_reads_one_chunk_ahead_in_order(enc):
    """encode_stream: same embeddings as encode, in order; chunks are pulled and tokenised on the background thread."""
    import threading

    chunks = [make_sentences(n, seed=n) for n in (5, 17, 1, 0, 30)]
    pulled = []

    def source():
        for c in chunks:
            pulled.append(threading.current_thread().name)
            yield c

    out = list(enc.encode_stream(source()))
    assert [c for c, _ in out] == chunks
    for c, e in out:
        assert e.shape == (len(c), enc.dim)
        if c:
            np.testing.assert_allclose(e, enc.encode(c), atol=1e-6)
    assert pulled and all(name.startswith("bitextmine-tokenize") for name in pulled)

    def failing():
        yield chunks[0]
        raise InputError("bad line")

    it = enc.encode_stream(failing())
    assert next(it)[0] == chunks[0]
    with pytest.raises(InputError, match="bad line"):
        next(it)


def test_fast_tokenizer_path_equals_the_transformers_wrapper(enc):
    texts = make_sentences(300, seed=2) + ["word " * 400, "", "x"]  # one past max_tokens, empty, single char
    fast = enc.tokenize(texts)
    assert enc._fast is not None
    saved, enc._fast = enc._fast, None  # None: the wrapper path
    try:
        assert enc.tokenize(texts) == fast
    finally:
        enc._fast = saved

