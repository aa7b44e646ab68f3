"""Checkpoints: what a run saves so that a restart continues exactly, and how it is written safely.

``checkpoints/last/`` holds ``state.pt`` (trainable weights, optimizer, scheduler, grad scaler,
sampler cursors, the best checkpoint so far, and the fingerprints a resume must match) and one
``rng-rank<r>.pt`` per process (torch, CUDA, Python and NumPy generators). The folder is written
whole under a unique temporary name (:func:`bitextmine.fs.temp_dir`, the name broadcast to every
process) and swapped in with renames: the previous one is ``last.old`` until the new one is in
place, and a resume falls back to it. ``checkpoints/best/`` holds the best dev checkpoint's
weights (``model.pt``) and scores (``info.json``), each file replaced atomically.

torch names the archive inside a ``.pt`` file after the file it writes, less the last suffix; files
are written as ``NAME.tmp`` inside a unique temporary folder, so the archive is always ``NAME``
(``state.pt/data.pkl``, ...) as in every earlier checkpoint, whatever the folder is called.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bitextmine import fs
from bitextmine.errors import MismatchError
from bitextmine.training import distributed as D

CKPT_VERSION = 1
LAST, OLD, BEST = "last", "last.old", "best"


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
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
    """``{"dir", "state"}`` of the checkpoint to resume from (``last``, else ``last.old``), or None."""
    for name in (LAST, OLD):
        p = ckpt_dir / name / "state.pt"
        if p.is_file():
            return {"dir": p.parent, "state": torch.load(p, map_location="cpu", weights_only=False)}
    return None


def check_resumable(st: dict, out: Path, *, config_fingerprint: str, base_fingerprint: str, model_name: str, world: int) -> None:
    """Refuse a checkpoint written with another config, base model or number of processes."""
    if st.get("config_fingerprint") != config_fingerprint:
        raise MismatchError(f"{out} holds a run with a different config; resume with the same recipe and --set values, "
                            "or pass --overwrite (or another run.output_dir) to start over")
    if st.get("base_fingerprint") != base_fingerprint:
        raise MismatchError(f"{out}: the base model {model_name} changed since the checkpoint was written")
    if st.get("world") != world:
        raise MismatchError(f"{out}: checkpoint written by {st.get('world')} processes, resumed with {world}")


def restore(meta: dict, out: Path, model: torch.nn.Module, frozen: set[str], parts: dict[str, Any], rank: int) -> tuple[int, dict | None]:
    """Load a checkpoint found by :func:`find_last` into ``model``, ``parts`` ({"optimizer": ..., ...}) and
    this process's RNGs; returns (step, best)."""
    st = meta["state"]
    missing, unexpected = model.load_state_dict(st["model"], strict=False)
    if unexpected or set(missing) - frozen:
        raise MismatchError(f"{out}: checkpoint does not fit the model (missing {sorted(set(missing) - frozen)[:3]}, unexpected {unexpected[:3]})")
    for name, part in parts.items():
        part.load_state_dict(st[name])
    set_rng_state(torch.load(meta["dir"] / f"rng-rank{rank}.pt", map_location="cpu", weights_only=False))
    return int(st["step"]), st.get("best")


# ----------------------------------------------------------------------------- best


def save_best(ckpt_dir: Path, weights: dict, info: dict) -> None:
    """Replace ``checkpoints/best``: ``model.pt`` (the weights) and ``info.json`` (step, score, dev results)."""
    d = ckpt_dir / BEST
    d.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "info.json"):
        fs.remove_temps(d / name)
    save_torch(weights, d / "model.pt")
    fs.atomic_write_text(d / "info.json", json.dumps(info, indent=1))


def load_best(ckpt_dir: Path) -> dict | None:
    """The best checkpoint's weights, if one was saved."""
    p = ckpt_dir / BEST / "model.pt"
    return torch.load(p, map_location="cpu", weights_only=True) if p.is_file() else None
