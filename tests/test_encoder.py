"""The encoder's options and loader: EncoderOptions -> load_encoder -> Encoder, and precision names.

(Batching, the packed forward and throughput are covered in ``test_scale``; independence from
threads and workers in ``test_determinism``.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_sentences
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.encoder import (
    Encoder,
    EncoderOptions,
    Precision,
    load_encoder,
    resolve_precision,
)
from bitextmine.errors import InputError, ModelError
from bitextmine.models.loader import cast_copy, load_model
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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_load_encoder_equals_load_model_plus_encoder(tiny_model, precision) -> None:
    texts = make_sentences(40, seed=8) + ["le chat", "кот"]
    ours = load_encoder(EncoderOptions(model=str(tiny_model), precision=precision))
    theirs = Encoder(load_model(str(tiny_model)), precision=precision)
    np.testing.assert_array_equal(ours.encode(texts), theirs.encode(texts))
    # load_encoder owns its model: a reduced precision casts it in place, no fp32 copy kept beside it
    assert ours.model is ours.lm.model and next(ours.model.parameters()).dtype == ours.dtype
    if precision != "fp32":
        assert not any(p.requires_grad for p in ours.model.parameters())


def test_cast_copy_leaves_the_model_alone_and_keeps_shared_weights_shared(tiny_model) -> None:
    lm = load_model(str(tiny_model))
    model = lm.model
    model.shared = model.embeddings.word_embeddings.weight  # one parameter reached twice (tied weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = cast_copy(model, torch.bfloat16)
    assert clone is not None and clone is not model
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k])
    for name, p in clone.named_parameters():
        assert p.dtype == torch.bfloat16 and not p.requires_grad, name
        assert torch.equal(p, dict(model.named_parameters())[name].detach().to(torch.bfloat16)), name
    assert clone.shared is clone.embeddings.word_embeddings.weight
    assert clone.embeddings.position_ids.dtype == model.embeddings.position_ids.dtype  # integer buffers stay as they are


def test_bad_precision_and_budget_are_input_errors(tiny_model) -> None:
    with pytest.raises(InputError) as e:
        load_encoder(EncoderOptions(model=str(tiny_model), precision="fp64"))
    assert e.value.param == "precision" and str(e.value) == "precision must be one of auto, fp32, bf16, fp16"
    assert e.value.message_for({"precision": "--precision"}) == "--precision must be one of auto, fp32, bf16, fp16"
    with pytest.raises(InputError) as e:
        load_encoder(EncoderOptions(model=str(tiny_model), token_budget=0))
    assert e.value.param == "token_budget" and str(e.value) == "token_budget must be at least 1, got 0"


BAD_OPTIONS = [
    ({"threads": 0}, "threads", "threads must be at least 1, got 0"),
    ({"threads": -1}, "threads", "threads must be at least 1, got -1"),
    ({"threads": 1.5}, "threads", "threads must be a whole number, not 1.5"),
    ({"token_budget": -5}, "token_budget", "token_budget must be at least 1, got -5"),
    ({"max_tokens": -3}, "max_tokens", "max_tokens must be at least 2, got -3"),
    ({"max_tokens": 1}, "max_tokens", "max_tokens must be at least 2, got 1"),
    ({"pooling": "max"}, "pooling", "pooling must be one of mean, cls, not 'max'"),
    ({"prefix": 3}, "prefix", "prefix must be text, not 3"),
    ({"precision": "fp64"}, "precision", "precision must be one of auto, fp32, bf16, fp16"),
]


@pytest.mark.parametrize("kw,param,message", BAD_OPTIONS, ids=[m for _, _, m in BAD_OPTIONS])
def test_bad_options_are_input_errors_before_the_model_loads(tmp_path, keep_threads, kw, param, message) -> None:
    """A missing model folder would be a ModelError: the option is refused before anything loads."""
    threads = torch.get_num_threads()
    with pytest.raises(InputError) as e:
        load_encoder(EncoderOptions(model=str(tmp_path / "missing"), **kw))
    assert (e.value.param, str(e.value)) == (param, message)
    assert torch.get_num_threads() == threads
    with pytest.raises(ModelError, match="no such folder"):  # good options: the model is what fails
        load_encoder(EncoderOptions(model=str(tmp_path / "missing"), threads=1))


@pytest.mark.parametrize("args,message", [
    (["--threads", "0"], "error: --threads must be at least 1, got 0"),
    (["--threads", "-1"], "error: --threads must be at least 1, got -1"),
    (["--max-tokens", "1"], "error: --max-tokens must be at least 2, got 1"),
    (["--pooling", "max"], "error: --pooling must be one of mean, cls, not 'max'"),
    (["--batch-tokens", "0"], "error: --batch-tokens must be at least 1, got 0"),
])
def test_cli_bad_encoder_options_are_one_line_errors(tiny_model, tmp_path, keep_threads, args, message) -> None:
    src = tmp_path / "in.txt"
    src.write_text("the cat\nder hund\n")
    res = CliRunner().invoke(app, ["encode", "corpus", str(src), "--out", str(tmp_path / "out"), "--model", str(tiny_model), *args])
    assert res.exit_code == 2, res.output + repr(res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [message], res.output
    assert not (tmp_path / "out").exists()


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
    assert enc._backend() is not None
    enc._direct = False  # the wrapper path
    try:
        assert enc._backend() is None
        assert enc.tokenize(texts) == fast
    finally:
        enc._direct = True


def test_the_rust_tokenizer_is_shared_not_copied_and_wrapper_calls_do_not_leak_into_it(tiny_model):
    """No second copy of the tokenizer (~280 MB for the default model); what the wrapper's own calls
    leave set on the shared Rust tokenizer (truncation, padding) does not change our ids."""
    lm = load_model(str(tiny_model))
    enc = Encoder(lm, precision="fp32")
    texts = make_sentences(50, seed=3) + ["word " * 100]
    want = enc.tokenize(texts)
    assert enc._backend() is lm.tokenizer.backend_tokenizer
    lm.tokenizer(texts, truncation=True, max_length=5)
    lm.tokenizer(texts, padding="max_length", max_length=60)
    assert enc.tokenize(texts) == want
    assert max(len(s) for s in want) == lm.recipe.max_tokens and min(len(s) for s in want) < 12



@pytest.mark.parametrize("direct", [True, False])
def test_tokenizer_processes_give_the_same_ids_and_embeddings(tiny_model, direct):
    """encode_stream with tokenizer processes (as on a GPU host): the same ids, truncation count and
    embeddings as tokenising in this process, in order; the processes stop with close()."""
    texts = make_sentences(700, seed=8) + ["word " * 400, "", "x"]
    ref = Encoder(load_model(str(tiny_model)), precision="fp32", tokenize_workers=0)
    enc = Encoder(load_model(str(tiny_model)), precision="fp32", tokenize_workers=2)
    enc._direct = ref._direct = direct  # the Rust core (sent as JSON) or the transformers wrapper (pickled)
    assert ref.tokenize_workers == 0 and enc.tokenize_workers == 2
    try:
        assert enc._tokenize_ahead(texts) == ref.tokenize(texts)
        assert enc._tok_procs is not None and enc.stats.truncated == ref.stats.truncated > 0
        chunks = [texts[:300], texts[300:301], [], texts[301:]]
        got = list(enc.encode_stream(chunks))
        assert [c for c, _ in got] == chunks
        np.testing.assert_array_equal(np.concatenate([e for _, e in got]), ref.encode(texts))
    finally:
        enc.close()
    assert enc._tok_procs is None


def test_tokenizer_processes_default_to_none_on_the_cpu(tiny_model):
    from bitextmine.tokenize import default_tokenize_workers

    assert Encoder(load_model(str(tiny_model))).tokenize_workers == 0
    assert 1 <= default_tokenize_workers(torch.device("cuda")) <= 8
    with pytest.raises(InputError, match="tokenize_workers must be at least 0"):
        load_encoder(EncoderOptions(model=str(tiny_model), tokenize_workers=-1))


def test_cli_encode_with_tokenizer_processes_writes_the_same_embeddings(tiny_model, tmp_path) -> None:
    from bitextmine.store import EmbeddingStore

    src = tmp_path / "in.txt"
    src.write_text("\n".join(make_sentences(400, seed=5)) + "\n", encoding="utf-8")
    runner = CliRunner()
    for name, extra in (("procs", ["--tokenize-workers", "2"]), ("plain", [])):
        res = runner.invoke(app, ["encode", "corpus", str(src), "--out", str(tmp_path / name), "--model", str(tiny_model), *extra])
        assert res.exit_code == 0, res.output
    a, b = (EmbeddingStore(tmp_path / n).embeddings(np.arange(400)) for n in ("procs", "plain"))
    np.testing.assert_array_equal(a, b)
    res = runner.invoke(app, ["encode", "corpus", str(src), "--out", str(tmp_path / "bad"), "--model", str(tiny_model), "--tokenize-workers", "-1"])
    assert res.exit_code != 0 and "tokenize_workers must be at least 0" in res.output.replace("--tokenize-workers", "tokenize_workers")
    assert "Traceback" not in res.output


def test_tokenizer_processes_that_cannot_work_fall_back_with_a_warning(tiny_model, monkeypatch):
    """A pool that breaks (here: workers that die at start, as a script without a __main__ guard
    does under spawn) leaves a warning and in-process tokenising with the same ids, not an error."""
    import bitextmine.tokenize as tk

    monkeypatch.setattr(tk, "_init", _die_at_start)
    texts = make_sentences(300, seed=6)
    enc = Encoder(load_model(str(tiny_model)), precision="fp32", tokenize_workers=2)
    with pytest.warns(RuntimeWarning, match="tokenizer processes failed"):
        got = enc._tokenize_ahead(texts)
    assert got == enc.tokenize(texts)
    assert enc.tokenize_workers == 0 and enc._tok_procs is None


def _die_at_start(*_a) -> None:
    import os

    os._exit(3)
