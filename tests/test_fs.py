"""The filesystem rules: complete-or-absent files, no writing through planted names, one cache dir."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bitextmine import fs


def test_atomic_writer_replaces_only_when_complete(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with fs.atomic_writer(p) as fh:
            fh.write("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # the temporary file is gone
    fs.atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n"


def test_temporary_names_are_unique_hidden_and_recognised(tmp_path: Path) -> None:
    names = {fs.temp_name(tmp_path / "x.tsv").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".x.tsv") and fs.is_temp_name(n) for n in names)
    assert not fs.is_temp_name("x.tsv") and not fs.is_temp_name(".hidden")


def test_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    planted = tmp_path / "planted"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        fs.create_exclusive(planted, "w")
    assert victim.read_text() == "keep"


def test_json_and_bytes(tmp_path: Path) -> None:
    fs.atomic_write_json(tmp_path / "a.json", {"ü": 1})
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n "ü": 1\n}\n'
    fs.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert fs.file_sha256(tmp_path / "b.bin") == hashlib.sha256(b"\x00\x01").hexdigest()


def test_publish_dir(tmp_path: Path) -> None:
    tmp = fs.temp_dir(tmp_path / "model")
    (tmp / "w").write_text("x")
    fs.publish_dir(tmp, tmp_path / "model")
    assert (tmp_path / "model" / "w").read_text() == "x" and not tmp.exists()
    other = fs.temp_dir(tmp_path / "model")
    (other / "w").write_text("y")
    with pytest.raises(OSError):  # never replaces a finished folder
        fs.publish_dir(other, tmp_path / "model")


def test_default_cache_dir_expands_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BITEXTMINE_CACHE", "~/c")
    assert fs.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BITEXTMINE_CACHE")
    assert "bitextmine" in str(fs.default_cache_dir())


def test_file_identity_changes_with_content(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("a")
    a = fs.file_identity(p)
    p.write_text("ab")
    assert fs.file_identity(p) != a and a["path"] == str(p.resolve())


def test_output_lock_excludes_a_second_writer_and_recovers_stale_locks(tmp_path: Path) -> None:
    from bitextmine.errors import InputError

    target = tmp_path / "pairs.tsv"
    with fs.OutputLock(target) as lock:
        assert lock.path.exists()
        with pytest.raises(InputError, match=f"in use by PID {os.getpid()}"):
            fs.OutputLock(target).acquire()
    assert not lock.path.exists()
    import socket

    lock.path.write_text('{"pid": 999999999, "host": "%s"}' % socket.gethostname())  # a crashed writer's lock
    with fs.OutputLock(target):
        pass
    assert not lock.path.exists()


def test_lock_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "pairs.tsv"
    lock = fs.OutputLock(target)
    dead = lock.path.with_name(f".{lock.path.name}{fs.TMP_MARK}999999999-0a1b2c3d")  # killed before removing it
    live = lock.path.with_name(f".{lock.path.name}{fs.TMP_MARK}{os.getpid()}-0a1b2c3d")  # a live writer's
    for p in (dead, live):
        p.write_text('{"pid": 1}')
    with lock:
        assert not dead.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_an_empty_lock_left_by_a_killed_writer_is_taken_over_after_a_grace_period(tmp_path: Path) -> None:
    from bitextmine.errors import LockedError

    target = tmp_path / "out"
    lock = fs.OutputLock(target)
    lock.path.write_text("")  # killed between creating and filling it
    with pytest.raises(LockedError):  # too fresh: maybe its writer is still filling it
        fs.OutputLock(target).acquire()
    old = lock.path.stat().st_mtime - fs.LOCK_GRACE_S - 1
    os.utime(lock.path, (old, old))
    with fs.OutputLock(target):
        pass
