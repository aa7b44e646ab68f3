"""Checkpoints: what a run saves so that a restart continues exactly, and how it is written and read safely.

``checkpoints/last/`` holds ``state.pt`` (trainable weights, optimizer, scheduler, grad scaler,
sampler cursors, the best checkpoint so far, the CPU thread count, and the fingerprints a resume
must match) and one ``rng-rank<r>.pt`` per process (torch, CUDA, Python and NumPy generators,
as tensors and plain numbers). The folder is written whole under a unique temporary name
(:func:`bitextmine.fs.temp_dir`, the name broadcast to every process) and swapped in with
renames: the previous one is ``last.old`` until the new one is in place, and a resume falls back
to it. ``checkpoints/best/`` (the best dev checkpoint's weights ``model.pt`` and scores
``info.json``) is swapped in the same way, so its two files always belong to one step.

Every file is read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
run folder from someone else cannot run code (a refusal is a one-line
:class:`~bitextmine.errors.StoreError`). RNG files of earlier versions held a NumPy array; they
are read with exactly the NumPy names that array needs allowed.

torch names the archive inside a ``.pt`` file after the file it writes, less the last suffix; files
are written as ``NAME.tmp`` inside a unique temporary folder, so the archive is always ``NAME``
(``state.pt/data.pkl``, ...) as in every earlier checkpoint, whatever the folder is called.
"""
from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bitextmine import fs
from bitextmine.errors import MismatchError, StoreError
from bitextmine.training import distributed as D

CKPT_VERSION = 1
RNG_VERSION = 2  # 1: NumPy's state as a pickled array; 2: tensors and plain numbers only
LAST, OLD, BEST = "last", "last.old", "best"


# ----------------------------------------------------------------------------- safe reading


def _legacy_numpy_globals() -> list:
    """The NumPy names a version-1 RNG file needs: a uint32 array and its dtype, under NumPy 2's and 1's module names."""
    core = getattr(np, "_core", None) or np.core
    rec = core.multiarray._reconstruct
    names = [rec, (rec, "numpy.core.multiarray._reconstruct"), (rec, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 pickles the dtype's class too
    return names + ([dtypes.UInt32DType] if dtypes is not None else [])


def safe_load(path: Path, *, legacy_rng: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that would run code, or does not read, is a
    one-line :class:`StoreError` (the file is never unpickled with arbitrary globals)."""
    allow = getattr(torch.serialization, "safe_globals", None) if legacy_rng else None
    try:
        if allow is not None:
            with allow(_legacy_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported operand" in msg or "invalid load key" in msg:  # not a pickle at all
            raise StoreError(f"{path}: not a readable checkpoint file (not a torch archive); delete it to resume "
                             "from an earlier checkpoint, or start over") from None
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        what = f"it names {m.group(1)}" if m else "it holds more than tensors and plain values"
        raise StoreError(f"{path}: refused to load: {what}, and loading it could run code; a checkpoint holds only "
                         "tensors and plain values. Delete the file if you do not trust it (the run then resumes "
                         "from an earlier checkpoint or starts over)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StoreError(f"{path}: not a readable checkpoint file ({first[:160]}); delete it to resume from an "
                         "earlier checkpoint, or start over") from None


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """Every generator a training step draws from, as tensors and plain numbers (loadable with weights_only)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    st = {"version": RNG_VERSION, "torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [str(name), torch.from_numpy(np.asarray(key, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    version, python = st.get("version", 1), st["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if version >= 2:
        name, key, pos, has_gauss, gauss = st["numpy"]
        np.random.set_state((name, key.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    else:
        np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------- files and folders


def _save_synced(obj: Any, folder: Path, name: str) -> Path:
    """``torch.save`` as ``folder/(name + ".tmp")``, synced: torch names the archive after the file less
    its last suffix, so the archive is ``name`` whatever the file becomes (as in every earlier checkpoint)."""
    path = folder / (name + ".tmp")
    torch.save(obj, path)
    fs.fsync_file(path)
    return path


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` that replaces ``path`` atomically (written in a unique temporary folder beside it)."""
    tmp = fs.temp_dir(path)
    try:
        fs.commit(_save_synced(obj, tmp, path.name), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- last: save, find, restore


def trainable_state(model: torch.nn.Module, frozen: set[str]) -> dict:
    """The weights a checkpoint keeps: every tensor of the state dict but the frozen parameters, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def save_last(ckpt_dir: Path, info: D.DistInfo, state: Callable[[], dict]) -> None:
    """Write ``checkpoints/last``: every process its RNG state, the main process ``state()`` (all processes call this)."""
    tmp = None
    if info.is_main:
        fs.remove_temps(ckpt_dir / LAST)
        tmp = fs.temp_dir(ckpt_dir / LAST)
    tmp = D.broadcast_object(tmp, info)
    name = f"rng-rank{info.rank}.pt"
    fs.commit(_save_synced(rng_state(), tmp, name), tmp / name)
    D.barrier(info)
    if info.is_main:
        fs.commit(_save_synced(state(), tmp, "state.pt"), tmp / "state.pt")
        fs.replace_dir(tmp, ckpt_dir / LAST, ckpt_dir / OLD)
    D.barrier(info)


def find_last(ckpt_dir: Path) -> dict | None:
    """``{"dir", "state"}`` of the checkpoint to resume from (``last``, else ``last.old``), or None.

    Raises :class:`StoreError` for a file that would run code or does not read."""
    for name in (LAST, OLD):
        p = ckpt_dir / name / "state.pt"
        if p.is_file():
            st = safe_load(p)
            if not isinstance(st, dict) or "step" not in st:
                raise StoreError(f"{p}: not a training checkpoint (no step); delete it, or start over")
            return {"dir": p.parent, "state": st}
    return None


def _restart_hint() -> str:
    return "pass {overwrite} (or choose another {out}) to start over"


def check_resumable(st: dict, out: Path, *, config_fingerprint: str, base_fingerprint: str, model_name: str, world: int,
                    data: dict | None = None) -> None:
    """Refuse a checkpoint written with another config, base model, number of processes or training data.

    ``data``: ``{"fingerprint", "content": {lang: digest}, "files": {lang: [path, ...]}}`` of the prepared data."""
    params = ("overwrite", "out")
    if st.get("config_fingerprint") != config_fingerprint:
        raise MismatchError(f"{out} holds a run with a different config; resume with the same config (recipe and "
                            "overrides), or " + _restart_hint(), param=params)
    if st.get("base_fingerprint") != base_fingerprint:
        raise MismatchError(f"{out}: the base model {model_name} changed since the checkpoint was written; resume with "
                            "the same model, or " + _restart_hint(), param=params)
    if st.get("world") != world:
        raise MismatchError(f"{out}: checkpoint written by {st.get('world')} processes, resumed with {world}; resume "
                            f"with {st.get('world')}, or " + _restart_hint(), param=params)
    if data is not None:
        what = data_changes(st, data)
        if what:
            raise MismatchError(f"{out}: the training data changed since the checkpoint at step {st.get('step')} was "
                                f"written ({what}); resume with the same data, or " + _restart_hint(), param=params)


def data_changes(st: dict, data: dict) -> str:
    """What differs between the data a checkpoint was trained on and ``data`` ("" when nothing does).

    Content digests decide (a file touched or copied with its content kept is the same data); a
    checkpoint of an earlier version without digests compares the data fingerprint (file size and
    modification time)."""
    old = st.get("data_content")
    if not isinstance(old, dict):
        if st.get("data_fingerprint") in (None, data["fingerprint"]):
            return ""
        return "the training files' size or modification time"
    new = data["content"]
    parts = []
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    if added:
        parts.append("languages added: " + ", ".join(added))
    if removed:
        parts.append("languages removed: " + ", ".join(removed))
    if not added and not removed and list(new) != list(old):
        parts.append("language order: " + ", ".join(old) + " -> " + ", ".join(new))
    old_files = st.get("data_files") or {}
    for lang in [k for k in new if k in old and new[k] != old[k]]:
        now = [Path(p).name for p in data["files"].get(lang, [])]
        then = [Path(p).name for p in old_files.get(lang, [])]
        files = [f"{n} added" for n in now if n not in then] + [f"{n} gone" for n in then if n not in now]
        if not files:
            files = [f"{n} changed" for n in now] or ["its pairs changed"]
        parts.append(f"{lang}: " + ", ".join(files))
    return "; ".join(parts)


def restore(meta: dict, out: Path, model: torch.nn.Module, frozen: set[str], parts: dict[str, Any], rank: int) -> tuple[int, dict | None]:
    """Load a checkpoint found by :func:`find_last` into ``model``, ``parts`` ({"optimizer": ..., ...}) and
    this process's RNGs; returns (step, best)."""
    st = meta["state"]
    missing, unexpected = model.load_state_dict(st["model"], strict=False)
    if unexpected or set(missing) - frozen:
        raise MismatchError(f"{out}: checkpoint does not fit the model (missing {sorted(set(missing) - frozen)[:3]}, unexpected {unexpected[:3]})")
    for name, part in parts.items():
        try:
            part.load_state_dict(st[name])
        except (KeyError, ValueError) as e:
            raise MismatchError(f"{out}: the checkpoint's {name} state does not fit this run ({e}); "
                                + _restart_hint(), param=("overwrite", "out")) from None
    rng = safe_load(meta["dir"] / f"rng-rank{rank}.pt", legacy_rng=True)
    try:
        set_rng_state(rng)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise StoreError(f"{meta['dir'] / f'rng-rank{rank}.pt'}: not an RNG state ({e}); delete it to resume from an "
                         "earlier checkpoint, or start over") from None
    return int(st["step"]), st.get("best")


# ----------------------------------------------------------------------------- best


def save_best(ckpt_dir: Path, weights: dict, info: dict) -> None:
    """Replace ``checkpoints/best`` as one folder: ``model.pt`` (the weights) and ``info.json`` (step, score, dev results)."""
    final = ckpt_dir / BEST
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fs.remove_temps(final)
    tmp = fs.temp_dir(final)
    try:
        fs.commit(_save_synced(weights, tmp, "model.pt"), tmp / "model.pt")
        with fs.atomic_writer(tmp / "info.json") as fh:
            fh.write(json.dumps(info, indent=1))
        fs.replace_dir(tmp, final, ckpt_dir / (BEST + ".old"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when published


def _best_dir(ckpt_dir: Path) -> Path | None:
    for name in (BEST, BEST + ".old"):  # .old: killed between the two renames
        if (ckpt_dir / name / "model.pt").is_file():
            return ckpt_dir / name
    return None


def load_best(ckpt_dir: Path) -> dict | None:
    """The best checkpoint's weights, if one was saved."""
    d = _best_dir(ckpt_dir)
    return safe_load(d / "model.pt") if d is not None else None


def best_info(ckpt_dir: Path) -> dict | None:
    """The best checkpoint's ``info.json`` (step, score, set, eval), if one was saved and reads."""
    d = _best_dir(ckpt_dir)
    if d is None:
        return None
    try:
        info = json.loads((d / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and {"step", "score", "set"} <= set(info) else None
