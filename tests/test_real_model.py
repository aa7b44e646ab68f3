"""The packaged default model, end to end on real sentences (offline; converts once into the user cache)."""
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.encoder import Encoder, cpu_has_fast_bf16
from bitextmine.models.loader import load_model
from sentences import SENTENCES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_lm():
    return load_model("default")


def test_default_recipe(default_lm):
    r = default_lm.recipe
    assert (r.pooling, r.prefix, r.max_tokens, r.normalize) == ("mean", "query: ", 512, True)
    assert default_lm.dim == 384


def _mine_example(tmp_path, *threshold: str) -> list[list[str]]:
    out = tmp_path / "pairs.tsv"
    res = CliRunner().invoke(app, ["mine", str(EXAMPLES / "de-en.de"), str(EXAMPLES / "de-en.en"), "--out", str(out),
                                   "--with-lines", "--cache", str(tmp_path / "cache"), *threshold])
    assert res.exit_code == 0, res.output
    return [ln.split("\t") for ln in out.read_text().splitlines()]


def test_mines_every_hidden_pair_of_the_example(tmp_path):
    gold = {tuple(map(int, ln.split("\t"))) for ln in (EXAMPLES / "de-en.gold").read_text().splitlines()}
    rows = _mine_example(tmp_path, "--threshold", "0")
    assert len(rows) > len(gold)
    best = {(int(r[3]), int(r[4])) for r in rows[: len(gold)]}
    assert best == gold
    # and the gold pairs are separated from the rest by a margin gap, so a threshold can isolate them
    scores = [float(r[0]) for r in rows]
    assert scores[len(gold) - 1] > scores[len(gold)] + 0.01
    # the model's saved threshold (tuned on held-out training-domain pairs) applies without --threshold:
    # every hidden pair and only pairs at or above it (the best wrong pair sits just below it, 1.240 in bf16
    # and 1.244 in fp32 against 1.247, too close to assert on every CPU)
    thr = load_model("default").recipe.threshold
    assert thr is not None and thr < scores[len(gold) - 1]
    kept = _mine_example(tmp_path)
    assert gold <= {(int(r[3]), int(r[4])) for r in kept} and min(float(r[0]) for r in kept) >= thr
    assert len(kept) == sum(sc >= thr for sc in scores)


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16; auto precision stays fp32")
def test_bf16_keeps_cosine_to_fp32(default_lm):
    fp32 = Encoder(default_lm, precision="fp32").encode(SENTENCES)
    bf16 = Encoder(default_lm, precision="bf16").encode(SENTENCES)
    cos = (fp32 * bf16).sum(1)
    assert cos.min() >= 0.999, f"min cosine {cos.min():.5f}"


def test_batching_does_not_change_embeddings(default_lm):
    texts = SENTENCES[:60]
    enc = Encoder(default_lm, precision="fp32", token_budget=256)
    batched = enc.encode(texts)
    single = np.concatenate([enc.encode([t]) for t in texts[:12]])
    assert np.abs(batched[:12] - single).max() < 1e-4
