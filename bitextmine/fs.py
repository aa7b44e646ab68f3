"""The filesystem rules every writer follows, in one place.

* Nothing is ever written under its final name: :func:`atomic_writer` writes a unique temporary
  file beside the destination (created with ``O_EXCL``, so a planted file or symlink is never
  written through), flushes and fsyncs it, renames it over the destination and fsyncs the folder.
  A failure removes the temporary file and leaves the destination as it was.
* Folders are built under a unique temporary name (:func:`temp_dir`) and published with one rename
  (:func:`publish_dir`).
* :func:`default_cache_dir` is the one user cache location (``$BITEXTMINE_CACHE`` or the platform's).
* :func:`file_identity` is what identifies an input file cheaply (path, size, mtime).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import IO, Any, Iterator

#: Temporary names look like ``.NAME.tmp-PID-RANDOM``: hidden, unique, recognisable for clean-up.
TMP_MARK = ".tmp-"


def default_cache_dir() -> Path:
    """``$BITEXTMINE_CACHE`` if set (``~`` expanded), else the platform's user cache folder."""
    env = os.environ.get("BITEXTMINE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bitextmine"))


def temp_name(path: str | Path) -> Path:
    """A fresh temporary path in the same folder as ``path`` (same filesystem, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def commit(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished, synced temporary file over ``path`` and sync the folder."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def create_exclusive(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> IO[Any]:
    """Open a new file for writing; fails if anything (file or symlink) already has that name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(str(path), flags, 0o644)
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding=encoding, newline="")


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """``with atomic_writer(p) as fh: ...`` — ``p`` appears complete or not at all.

    ``mode`` is ``"w"`` (text, no newline translation) or ``"wb"``.
    """
    path = Path(path)
    tmp = temp_name(path)
    fh = create_exclusive(tmp, mode, encoding)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        commit(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_writer(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """``obj`` as UTF-8 JSON (non-ASCII kept) plus a final newline, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def temp_dir(final: str | Path) -> Path:
    """Create and return a fresh temporary folder beside ``final`` (mode 0755, unlike mkdtemp's 0700,
    so a shared cache stays readable)."""
    tmp = temp_name(final)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: str | Path, final: str | Path) -> None:
    """Rename the finished folder ``tmp`` to ``final`` (fails if ``final`` exists and is not empty)."""
    os.rename(tmp, final)
    fsync_dir(Path(final).parent)


def remove_temps(final: Path) -> None:
    """Delete the temporary siblings of ``final`` (``.NAME.tmp-PID-RANDOM``) that a killed run left behind."""
    for p in final.parent.glob(f".{glob.escape(final.name)}{TMP_MARK}*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def fsync_tree(folder: Path) -> None:
    """Make every file under ``folder`` durable before the folder is published by a rename."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)


def replace_dir(tmp: Path, final: Path, old: Path | None = None) -> None:
    """Swap the finished folder ``tmp`` in as ``final``; the previous ``final`` is ``old`` until then."""
    old = old or final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    publish_dir(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path: str | Path) -> dict[str, Any]:
    """Absolute path, size and modification time: a cheap key for caches and resume checks."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


#: An empty or unreadable lock file this old is taken over (its writer died before filling it).
LOCK_GRACE_S = 10.0


class OutputLock:
    """``with OutputLock(target): ...`` — one writer at a time for an output (file or folder).

    The lock is a sibling file ``.NAME.lock`` created with ``O_EXCL`` holding the owner's PID and
    host. A second writer gets a one-line InputError naming the PID; a lock whose process is gone
    (same host, PID not alive) is stale and taken over. The lock is removed on exit.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(os.path.abspath(target))  # '.', 'dir/..' have no usable name
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self._held = False

    def acquire(self) -> "OutputLock":
        import socket

        from bitextmine.errors import InputError, LockedError

        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = self._create(me)
            except FileExistsError:
                owner = self._owner()
                if self._stale(owner, me["host"]):
                    with contextlib.suppress(OSError):
                        self.path.unlink()  # stale: its process is gone
                    continue
                who = f"PID {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
                raise LockedError(f"{self.target} is in use by {who}; wait for it to finish, or remove {self.path} "
                                  "if that process is gone") from None
            if fd is not None:
                with os.fdopen(fd, "w") as fh:
                    json.dump(me, fh)
            self._held = True
            self._remove_dead_temps()
            return self
        raise InputError(f"{self.target}: cannot take the lock {self.path}")

    def _create(self, me: dict) -> int | None:
        """Create the lock file already holding ``me`` (written to a temporary name, then hard-linked to the
        lock's name, which fails if it exists), so another process never reads an empty lock. Where the
        file system has no hard links: create it empty with ``O_EXCL`` and return its descriptor to fill."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        tmp = temp_name(self.path)
        try:
            with os.fdopen(os.open(str(tmp), flags, 0o644), "w") as fh:
                json.dump(me, fh)
            try:
                os.link(tmp, self.path)
                return None
            except FileExistsError:
                raise
            except OSError:
                pass  # no hard links here
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return os.open(str(self.path), flags, 0o644)

    def _remove_dead_temps(self) -> None:
        """Delete the lock's temporary siblings (``.NAME.lock.tmp-PID-RANDOM``, :meth:`_create`) whose process
        is gone: a writer killed between writing one and removing it leaves it behind."""
        for p in self.path.parent.glob(f".{glob.escape(self.path.name)}{TMP_MARK}*"):
            pid = p.name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _stale(self, owner: dict | None, host: str) -> bool:
        """A lock whose process is gone (same host), or one left empty by a writer killed between
        creating and filling it (older than :data:`LOCK_GRACE_S`)."""
        if owner is None:
            try:
                return time.time() - self.path.stat().st_mtime > LOCK_GRACE_S
            except OSError:
                return True  # removed meanwhile: try again
        return owner.get("host") == host and not _pid_alive(int(owner.get("pid", -1)))

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def process_tag() -> str:
    """``PID@HOST`` of this process, for names of temporary files that :func:`remove_dead_process_files` may sweep."""
    import socket

    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())
    return f"{os.getpid()}@{host}"


def remove_dead_process_files(folder: str | Path, prefix: str) -> None:
    """Delete the files ``{prefix}{PID}@{HOST}-…`` in ``folder`` (names from :func:`process_tag`) left by
    processes of this host that are gone: killed jobs leave their temporary files behind."""
    host = process_tag().split("@", 1)[1]
    for p in Path(folder).glob(f"{glob.escape(prefix)}*@{glob.escape(host)}-*"):
        pid = p.name[len(prefix):].split("@", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                p.unlink()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True
