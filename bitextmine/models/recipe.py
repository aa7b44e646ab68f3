"""A model's encoding recipe and fingerprint.

The recipe is everything besides the weights that decides an embedding: pooling, text prefix,
max tokens and normalisation. It lives in ``bitextmine_recipe.json`` inside a model folder
(written by the packaged-model converter and by ``bitextmine train``). The fingerprint hashes the
weights' identity together with the recipe, so embeddings made differently never get compared.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

RECIPE_FILE = "bitextmine_recipe.json"
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class Recipe:
    pooling: str = "mean"  # "mean" over non-padding tokens, or "cls" (first token)
    prefix: str = ""  # text put before every sentence, e.g. E5's "query: "
    max_tokens: int = 512  # longer inputs are truncated (special tokens included)
    normalize: bool = True  # L2-normalise embeddings (mining uses inner product = cosine)
    name: str = ""  # human-readable model name, informational only
    threshold: float | None = None  # default margin threshold for `mine` (set by `bench --save-threshold`)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be at least 2")

    def embedding_part(self) -> dict:
        """The fields that change embeddings (name and threshold do not)."""
        d = asdict(self)
        d.pop("name")
        d.pop("threshold")
        return d

    def with_overrides(self, **kw) -> "Recipe":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def read_recipe(folder: Path) -> Recipe | None:
    p = Path(folder) / RECIPE_FILE
    if not p.is_file():
        return None
    return Recipe.from_dict(json.loads(p.read_text()))


def write_recipe(folder: Path, recipe: Recipe) -> None:
    """Write the recipe atomically (temporary name, then rename)."""
    p = Path(folder) / RECIPE_FILE
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(recipe), indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, p)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_identity(folder: Path, samples: int = 64, chunk: int = 1 << 16) -> str:
    """A cheap content hash of a model folder's weight and config files.

    Hashing every byte of a large checkpoint costs seconds on each load; instead each weight file
    contributes its size and ``samples`` chunks spread evenly through it, which differ between any
    two trained checkpoints. Config and tokenizer files are hashed whole.
    """
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == RECIPE_FILE or p.name.endswith(".tmp"):
            continue
        rel = p.relative_to(folder).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as fh:
            if p.suffix in WEIGHT_SUFFIXES and size > samples * chunk:
                step = (size - chunk) // (samples - 1)
                for i in range(samples):
                    fh.seek(i * step)
                    h.update(fh.read(chunk))
            elif p.suffix in WEIGHT_SUFFIXES or p.suffix in (".json", ".model", ".txt"):
                h.update(fh.read())
    return h.hexdigest()


def fingerprint(weights_id: str, recipe: Recipe) -> str:
    """Fingerprint of (weights, embedding-relevant recipe): 16 hex digits."""
    payload = json.dumps({"weights": weights_id, "recipe": recipe.embedding_part()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
