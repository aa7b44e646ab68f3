"""training.evaluate: dev retrieval p@1 through bitextmine.retrieval equals the plain argmax it replaced."""
from __future__ import annotations

import numpy as np
import pytest

from bitextmine.retrieval import accuracy
from bitextmine.training.config import EvalConfig
from bitextmine.training.data.devsets import DevSet
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, TokenLayout
from bitextmine.training.evaluate import dev_sets, evaluate


def argmax_p1(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The dev measure training used before: argmax of the cosine matrix, both ways (first index on ties)."""
    sim = x @ y.T
    gold = np.arange(len(x))
    return float((sim.argmax(1) == gold).mean()), float((sim.argmax(0) == gold).mean())


def test_accuracy_equals_the_plain_argmax_including_ties():
    rng = np.random.default_rng(0)
    for n in (2, 7, 50):
        x, y = rng.standard_normal((n, 8)).astype(np.float32), rng.standard_normal((n, 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = 0.3 * x + y / np.linalg.norm(y, axis=1, keepdims=True)
        assert accuracy(x, y) == argmax_p1(x, y)
    tied = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # rows 0 and 1 identical: ties go to the first
    assert accuracy(tied, tied) == argmax_p1(tied, tied) == (2 / 3, 2 / 3)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    from bitextmine.models.loader import load_model

    return load_model(str(tiny_model), device="cpu")


def test_evaluate_matches_the_plain_argmax_on_a_model(tiny_lm):
    from bitextmine.encoder import Encoder

    sets = [DevSet("split", "de", ["der baum haus", "das auto", "licht nacht tag", "der baum haus"],
                   ["the tree house", "the car", "light night day", "the tree"]),
            DevSet("split", "fr", ["le chat", "la maison"], ["the cat", "the house"]),
            DevSet("tatoeba", "de", ["der baum", "das buch"], ["the tree", "the book"])]
    tiny_lm.model.train()
    got = evaluate(tiny_lm.model, tiny_lm.tokenizer, tiny_lm.recipe, sets, "fp32")
    assert tiny_lm.model.training  # mode restored
    enc = Encoder(tiny_lm, precision="fp32")
    tiny_lm.model.eval()
    for s in sets:
        assert got[s.name]["langs"][s.lang] == list(argmax_p1(enc.encode(s.src), enc.encode(s.tgt)))
    assert got["split"]["mean"] == pytest.approx(np.mean([v for p in got["split"]["langs"].values() for v in p]))
    assert set(got) == {"split", "tatoeba"}


def test_dev_sets_follow_the_recipe(tmp_path):
    lay = TokenLayout((0,), (2,), (), 1, 4, 16)
    empty = Ragged.from_lists([])
    data = PreparedData({"de": LangData(empty, empty, empty, [("a", "b"), ("c", "d"), ("e", "f")]),
                         "fr": LangData(empty, empty, empty, [("g", "h")])}, lay, {}, "fp")
    (tmp_path / "tat").mkdir()
    (tmp_path / "tat" / "tatoeba.deu-eng.deu").write_text("x\ny\n")
    (tmp_path / "tat" / "tatoeba.deu-eng.eng").write_text("u\nv\n")
    sets = dev_sets(EvalConfig(select_on="split", max_pairs=2, report_dirs=[str(tmp_path / "tat")]), data)
    assert [(s.name, s.lang, s.src, s.tgt) for s in sets] == [("split", "de", ["a", "c"], ["b", "d"]), ("tat", "de", ["x", "y"], ["u", "v"])]
    assert dev_sets(EvalConfig(select_on="none"), data) == []
