"""A model's recipe: pooling names, the recipe file and the fingerprint."""
from __future__ import annotations

import json

import pytest

from bitextmine.models.recipe import RECIPE_FILE, Pooling, Recipe, fingerprint, read_recipe, weights_identity, write_recipe


def test_pooling_strings_become_members() -> None:
    r = Recipe(pooling="cls")
    assert r.pooling is Pooling.CLS and r.pooling == "cls" and f"{r.pooling}" == "cls"
    assert r == Recipe(pooling=Pooling.CLS) and Recipe().pooling is Pooling.MEAN
    with pytest.raises(ValueError, match="pooling must be one of mean, cls, not 'max'"):
        Recipe(pooling="max")
    with pytest.raises(ValueError, match="max_tokens must be at least 2"):
        Recipe(max_tokens=1)


def test_fingerprint_is_stable() -> None:
    """Embedding folders written before keep matching: these values must never change."""
    assert fingerprint("abc", Recipe()) == "4237363954ad3c09"
    assert fingerprint("abc", Recipe(pooling=Pooling.CLS, prefix="q: ")) == "5ce11baacb83c706"
    assert fingerprint("abc", Recipe(name="x", threshold=1.1)) == fingerprint("abc", Recipe())  # informational fields


def test_recipe_file_round_trip(tmp_path) -> None:
    r = Recipe(pooling="cls", name="x", threshold=1.05)
    write_recipe(tmp_path, r)
    assert [p.name for p in tmp_path.iterdir()] == [RECIPE_FILE]  # no temporary file left
    assert (tmp_path / RECIPE_FILE).read_text() == (
        '{\n  "pooling": "cls",\n  "prefix": "",\n  "max_tokens": 512,\n  "normalize": true,\n  "name": "x",\n  "threshold": 1.05\n}\n'
    )
    assert read_recipe(tmp_path) == r and read_recipe(tmp_path / "none") is None
    assert Recipe.from_dict({**json.loads((tmp_path / RECIPE_FILE).read_text()), "unknown": 1}) == r


def test_weights_identity_ignores_the_recipe_and_temporary_files(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"w" * 100)
    before = weights_identity(tmp_path)
    write_recipe(tmp_path, Recipe())
    (tmp_path / ".model.safetensors.tmp-123-abcd").write_bytes(b"partial")
    (tmp_path / "old.json.tmp").write_text("{}")
    assert weights_identity(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"v" * 100)
    assert weights_identity(tmp_path) != before
