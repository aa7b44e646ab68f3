"""A model's saved margin threshold: where it is stored, and when it may be used.

``bench bucc --save-threshold`` tunes the margin threshold with the best F1 and stores it in the
model's recipe (``bitextmine_recipe.json``, copied into every embedding manifest), together with the
scoring it was tuned under: the margin kind and k. A margin value only means something under that
scoring — a ratio threshold of 1.02 under the absolute margin (a cosine) keeps nothing — so
:func:`resolve_threshold` applies a saved threshold only when margin and k match, and otherwise
applies none and says why. Recipes written before the scoring was recorded could only be saved with
the ratio margin and k=4, so that is what they mean.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bitextmine.errors import InputError, ModelError
from bitextmine.margin import Margin, parse_margin

#: The scoring of thresholds saved before the recipe recorded it (the only one --save-threshold allowed).
LEGACY_SCORING = (Margin.RATIO, 4)


@dataclass(frozen=True)
class SavedThreshold:
    value: float
    margin: Margin  # the margin kind it was tuned under
    k: int  # the neighbourhood size it was tuned under

    def describe(self) -> str:
        return f"{self.value:g} ({self.margin.value} margin, k={self.k})"


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold a mining run applies: ``value`` (None = keep all) and where it came from."""

    value: float | None
    source: str  # "given", "model" (the saved one) or "none"
    note: str | None = None  # set when a saved threshold exists but was not applied

    @property
    def from_model(self) -> bool:
        return self.source == "model"


def saved_threshold(recipe: Any) -> SavedThreshold | None:
    """The threshold saved in a recipe (a :class:`~bitextmine.models.recipe.Recipe` or its dict form)."""
    d = asdict(recipe) if recipe is not None and not isinstance(recipe, dict) else (recipe or {})
    value = d.get("threshold")
    if value is None:
        return None
    margin = d.get("threshold_margin") or LEGACY_SCORING[0].value
    k = d.get("threshold_k") or LEGACY_SCORING[1]
    return SavedThreshold(float(value), parse_margin(margin), int(k))


def resolve_threshold(given: float | None, saved: SavedThreshold | None, margin: Margin | str, k: int) -> ThresholdChoice:
    """The threshold to apply: ``given`` if any, else ``saved`` when tuned for this margin and k."""
    if given is not None:
        if math.isnan(given):
            raise InputError("{param} must be a number, not NaN", param="threshold")
        return ThresholdChoice(float(given), "given")
    if saved is None:
        return ThresholdChoice(None, "none")
    m = parse_margin(margin)
    if (saved.margin, saved.k) != (m, k):
        return ThresholdChoice(None, "none", f"the model's threshold {saved.describe()} does not apply to "
                                             f"{m.value} margin, k={k}")
    return ThresholdChoice(saved.value, "model")


def save_threshold(model_folder: str | Path, recipe: Any, value: float, margin: Margin | str, k: int) -> Path:
    """Store ``value`` (tuned under ``margin`` and ``k``) in the model's recipe file, so ``mine`` uses
    it by default for that model with the same scoring.

    ``recipe`` is the model's current :class:`~bitextmine.models.recipe.Recipe` (as loaded). The
    threshold is not part of the fingerprint, so existing embeddings stay valid.
    """
    from bitextmine.models.recipe import RECIPE_FILE, read_recipe, write_recipe

    folder = Path(model_folder)
    base = read_recipe(folder) or recipe
    new = base.with_overrides(threshold=float(value), threshold_margin=parse_margin(margin).value, threshold_k=int(k))
    try:
        write_recipe(folder, new)
    except OSError as e:
        raise ModelError(f"cannot write {folder / RECIPE_FILE}: {e.strerror or e}") from None
    return folder / RECIPE_FILE
