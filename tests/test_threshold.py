"""A saved margin threshold applies only under the scoring it was tuned for."""
from __future__ import annotations

import json
import math
import re
import shutil

import pytest
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.errors import InputError
from bitextmine.margin import Margin
from bitextmine.models.recipe import Recipe, read_recipe
from bitextmine.threshold import SavedThreshold, resolve_threshold, save_threshold, saved_threshold
from conftest import make_sentences


def test_given_threshold_wins() -> None:
    saved = SavedThreshold(1.02, Margin.RATIO, 4)
    c = resolve_threshold(0.5, saved, "absolute", 2)
    assert (c.value, c.source, c.note) == (0.5, "given", None)


def test_saved_threshold_applies_only_to_its_scoring() -> None:
    saved = SavedThreshold(1.02, Margin.RATIO, 4)
    c = resolve_threshold(None, saved, Margin.RATIO, 4)
    assert (c.value, c.source, c.from_model) == (1.02, "model", True)
    for margin, k in [(Margin.ABSOLUTE, 4), (Margin.DISTANCE, 4), (Margin.RATIO, 8)]:
        c = resolve_threshold(None, saved, margin, k)
        assert c.value is None and c.source == "none"
        assert "1.02 (ratio margin, k=4)" in c.note and f"{margin.value} margin, k={k}" in c.note
    assert resolve_threshold(None, None, "ratio", 4).value is None


def test_nan_threshold_is_refused() -> None:
    with pytest.raises(InputError, match="threshold must be a number"):
        resolve_threshold(math.nan, None, "ratio", 4)


def test_legacy_recipe_means_ratio_k4_and_new_ones_record_scoring(tmp_path) -> None:
    assert saved_threshold({"threshold": 1.1}) == SavedThreshold(1.1, Margin.RATIO, 4)
    assert saved_threshold({"threshold": None}) is None and saved_threshold(None) is None
    (tmp_path / "config.json").write_text("{}")
    path = save_threshold(tmp_path, Recipe(), 0.7, "distance", 8)
    r = read_recipe(tmp_path)
    assert saved_threshold(r) == SavedThreshold(0.7, Margin.DISTANCE, 8)
    assert json.loads(path.read_text())["threshold_margin"] == "distance"


def test_threshold_is_not_part_of_the_fingerprint() -> None:
    a = Recipe()
    b = a.with_overrides(threshold=1.2, threshold_margin="absolute", threshold_k=2)
    assert a.embedding_part() == b.embedding_part()


def test_mine_with_absolute_margin_ignores_a_ratio_threshold(tiny_model, tmp_path) -> None:
    """The bug: a threshold saved for ratio margin (here 1.02) was applied to absolute cosines and kept nothing."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    save_threshold(model, read_recipe(model), 1.02, "ratio", 4)
    sents = make_sentences(30, seed=3)
    (tmp_path / "a.txt").write_text("\n".join(sents) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(reversed(sents)) + "\n")
    runner = CliRunner()
    common = ["mine", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--model", str(model), "--cache", str(tmp_path / "c")]
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "abs.tsv"), "--margin", "absolute"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "abs.tsv").read_text().splitlines()) == 30  # identical sentences: cosine 1 each
    assert "does not apply to absolute margin" in re.sub(r"[│\s]+", " ", res.output)  # the table wraps the note
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "ratio.tsv")])
    assert res.exit_code == 0 and "(model default)" in res.output
    kept = [float(ln.split("\t")[0]) for ln in (tmp_path / "ratio.tsv").read_text().splitlines()]
    assert kept and min(kept) >= 1.02
