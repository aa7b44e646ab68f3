"""The run folder: which folders are ours, one writer at a time, and starting over without losing anything else.

A run writes ``.bitextmine-run`` (a small JSON marker) into its folder before anything else, so a
folder is recognisably a run folder of ours when it has that marker, or — runs of earlier
versions — our ``config.toml`` (with its ``[objective]`` and ``[run]`` tables) next to
``checkpoints/`` or ``data_report.json``. Training refuses to write into (and ``overwrite``
refuses to delete) any other folder that is not empty: a typo such as ``--out .`` stops with a
one-line error and touches nothing. ``overwrite`` deletes the old run's files only after the
config, the model, the data and the folder have been checked (the data cache in ``<run>/data``
is kept: it is keyed by a fingerprint of the files and settings). A new folder of a run that
cannot start is removed again; one killed while starting keeps its marker, so a rerun resumes.

:class:`RunLock` holds :class:`bitextmine.fs.OutputLock` on the run folder (a sibling file
``.NAME.lock``) for the whole run, so two ``train`` runs into one folder cannot interleave; the
main process takes it and the other processes of a torchrun job learn its verdict.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from bitextmine import fs
from bitextmine.errors import BitextmineError, InputError
from bitextmine.training import distributed as D

MARKER = ".bitextmine-run"


def is_run_folder(path: Path) -> bool:
    """True when ``path`` is a run folder this package wrote (see the module docstring)."""
    if (path / MARKER).is_file():
        return True
    try:  # an earlier version's run: our config (its own sections and keys) next to checkpoints or a data report
        config = (path / "config.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    ours = all(k in config for k in ("[objective]", "rtl_weight", "[run]", "output_dir"))
    return ours and ((path / "checkpoints").is_dir() or (path / "data_report.json").is_file())


def _is_empty(path: Path) -> bool:
    return not any(path.iterdir())


def check_output(out: Path, *, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder that is not a run folder of ours."""
    if out.is_symlink() and not out.exists():
        raise InputError(f"{out} is a dangling symbolic link; choose another {{out}}", param="out")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a run folder; choose another {{out}}", param="out")
    if out.is_dir() and not _is_empty(out) and not is_run_folder(out):
        action = "delete" if overwrite else "write into"
        raise InputError(f"{out} is not empty and is not a bitextmine run folder (no {MARKER}); refusing to {action} "
                         "it: choose another {out}", param="out")


def claim(out: Path) -> tuple[bool, bool]:
    """Create ``out`` if needed and mark it as a run folder; returns (existed, was_empty) for :func:`abandon`."""
    existed = out.is_dir()
    was_empty = not existed or _is_empty(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).is_file():
            fs.atomic_write_json(out / MARKER, {"what": "bitextmine training run", "format": 1})
    except OSError as e:
        raise InputError(f"{out}: cannot create the run folder ({e.strerror or e}); choose another {{out}}", param="out") from None
    return existed, was_empty


def abandon(out: Path, existed: bool, was_empty: bool) -> None:
    """Undo :func:`claim` after a run that could not start: a folder it created goes, one that was empty is emptied."""
    if not was_empty:
        return
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def clear(out: Path, keep: set[str]) -> None:
    """Delete the previous run's files in ``out`` (never the marker or the names in ``keep``)."""
    if not is_run_folder(out):  # checked at the start too; the folder is locked, so this is a second look
        raise InputError(f"{out} is not a bitextmine run folder; refusing to delete it", param="out")
    for p in out.iterdir():
        if p.name == MARKER or p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    fs.fsync_dir(out)


class RunLock:
    """``with RunLock(out, info): ...`` — the main process holds the run folder's lock and checks the folder
    (:func:`check_output`); every process raises the same one-line error when either fails."""

    def __init__(self, out: Path, info: D.DistInfo, *, overwrite: bool) -> None:
        self.out, self.info, self.overwrite = out, info, overwrite
        self._lock: fs.OutputLock | None = None

    def __enter__(self) -> RunLock:
        problem: BitextmineError | None = None
        if self.info.is_main:
            try:
                self._acquire()
            except BitextmineError as e:
                problem = e
        message = D.broadcast_object(str(problem) if problem else None, self.info)
        if problem is not None:
            self._release()
            raise problem
        if message is not None:
            raise InputError(message)
        return self

    def _acquire(self) -> None:
        target = Path(os.path.abspath(self.out))
        if not target.name:
            raise InputError(f"{self.out} cannot be a run folder; choose another {{out}}", param="out")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{target.parent}: cannot create it ({e.strerror or e}); choose another {{out}}", param="out") from None
        lock = fs.OutputLock(target)
        try:
            lock.acquire()
        except OSError as e:
            raise InputError(f"{target}: cannot take the lock {lock.path} ({e.strerror or e}); choose another {{out}}",
                             param="out") from None
        self._lock = lock
        check_output(target, overwrite=self.overwrite)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __exit__(self, *exc: object) -> None:
        self._release()
