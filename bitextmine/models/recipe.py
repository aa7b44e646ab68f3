"""A model's encoding recipe and fingerprint.

The recipe is everything besides the weights that decides an embedding: pooling, text prefix,
max tokens and normalisation. It lives in ``bitextmine_recipe.json`` inside a model folder
(written by the packaged-model converter and by ``bitextmine train``). The fingerprint hashes the
weights' identity together with the recipe, so embeddings made differently never get compared.

:class:`Pooling` and :class:`Precision` name the allowed values; both are ``str`` enums, so a plain
string (``"mean"``, ``"bf16"``) works wherever one is expected and JSON holds the bare value.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from bitextmine import fs
from bitextmine.errors import ModelError

RECIPE_FILE = "bitextmine_recipe.json"


class _StrEnum(str, enum.Enum):
    """``enum.StrEnum`` for Python 3.10: ``str()`` and f-strings give the bare value."""

    __str__ = str.__str__
    __format__ = str.__format__


class Pooling(_StrEnum):
    """How token states become one sentence vector."""

    MEAN = "mean"  # mean over the sentence's tokens (special tokens included, padding not)
    CLS = "cls"  # the first token's state


class Precision(_StrEnum):
    """The encoder's compute dtype (reduced precisions run a copy of the weights in that dtype)."""

    AUTO = "auto"  # bf16/fp16 on a GPU, bf16 on CPUs with native bf16 instructions, else fp32
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


POOLINGS = tuple(p.value for p in Pooling)
PRECISIONS = tuple(p.value for p in Precision)


@dataclass(frozen=True)
class Recipe:
    pooling: Pooling = Pooling.MEAN  # a Pooling or its string value; stored as a Pooling
    prefix: str = ""  # text put before every sentence, e.g. E5's "query: "
    max_tokens: int = 512  # longer inputs are truncated (special tokens included)
    normalize: bool = True  # L2-normalise embeddings (mining uses inner product = cosine)
    name: str = ""  # human-readable model name, informational only
    threshold: float | None = None  # default margin threshold for `mine` (set by `bench --save-threshold`)
    threshold_margin: str | None = None  # the margin kind it was tuned under (None: ratio, see bitextmine.threshold)
    threshold_k: int | None = None  # the k it was tuned under (None: 4)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        object.__setattr__(self, "pooling", Pooling(self.pooling))
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be at least 2")

    def embedding_part(self) -> dict:
        """The fields that change embeddings (name and the saved threshold do not)."""
        d = asdict(self)
        for key in ("name", "threshold", "threshold_margin", "threshold_k"):
            d.pop(key)
        return d

    def to_dict(self) -> dict:
        """The recipe as stored (recipe files, manifests); the threshold's scoring only when set."""
        d = asdict(self)
        for key in ("threshold_margin", "threshold_k"):
            if d[key] is None:
                d.pop(key)
        return d

    def with_overrides(self, **kw) -> "Recipe":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


#: The JSON values each recipe field accepts: (types, what to call them in a message).
_RECIPE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "pooling": ((str,), "a string"), "prefix": ((str,), "a string"), "max_tokens": ((int,), "an integer"),
    "normalize": ((bool,), "true or false"), "name": ((str,), "a string"), "threshold": ((int, float, type(None)), "a number or null"),
    "threshold_margin": ((str, type(None)), "a string or null"), "threshold_k": ((int, type(None)), "an integer or null"),
}


def read_recipe(folder: Path) -> Recipe | None:
    """The recipe stored in ``folder``, None if it has none; ModelError naming the file if it is unusable."""
    p = Path(folder) / RECIPE_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{p}: cannot read the recipe ({e})") from None
    except ValueError as e:
        raise ModelError(f"{p}: not valid JSON ({e}); fix the file, or delete it to use the model's defaults") from None
    if not isinstance(d, dict):
        raise ModelError(f"{p}: expected a JSON object of recipe fields, found {type(d).__name__}")
    for key, (types, want) in _RECIPE_TYPES.items():
        v = d.get(key)
        if key in d and (not isinstance(v, types) or (isinstance(v, bool) and bool not in types)):
            raise ModelError(f"{p}: {key} must be {want}, not {json.dumps(v, ensure_ascii=False)[:80]}")
    try:
        return Recipe.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{p}: {e}") from None


def write_recipe(folder: Path, recipe: Recipe) -> None:
    """Write the recipe atomically (temporary name, then rename)."""
    fs.atomic_write_json(Path(folder) / RECIPE_FILE, recipe.to_dict(), indent=2)


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
        if not p.is_file() or p.name == RECIPE_FILE or p.name.endswith(".tmp") or fs.is_temp_name(p.name):
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
