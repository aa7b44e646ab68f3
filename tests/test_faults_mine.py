"""Faults and bad inputs of ``mine`` and ``bench`` (issue 10): each one a one-line error before any
embedding or search, nothing written lost; a full or read-only disk; planted symlinks; two writers
to one output; kill -9 at random points of ``python -m bitextmine mine`` (slow)."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.fs import OutputLock, atomic_writer

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def run(*args, ok: bool = True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




def leftovers(folder: Path) -> list[str]:
    """Temporary files and lock files (hidden names) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model):
    """Two embedding folders of 3,000 sentences each (1,500 shared) made with the tiny model, and one
    encoded with ids."""
    from bitextmine.encode_job import EncodeOptions, encode_corpus
    from bitextmine.encoder import Encoder
    from bitextmine.models.loader import load_model

    d = tmp_path_factory.mktemp("folders")
    s = make_sentences(4500, seed=31)
    (d / "a.txt").write_text("\n".join(s[:3000]) + "\n")
    (d / "b.txt").write_text("\n".join(s[1500:]) + "\n")
    (d / "ids.txt").write_text("".join(f"i{k}\t{t}\n" for k, t in enumerate(s[:50])))
    enc = Encoder(load_model(str(tiny_model)), precision="fp32")
    encode_corpus([str(d / "a.txt")], d / "ea", enc)
    encode_corpus([str(d / "b.txt")], d / "eb", enc)
    encode_corpus([str(d / "ids.txt")], d / "eids", enc, EncodeOptions(id_column=True))
    return d


@pytest.fixture
def no_search(monkeypatch):
    """Fail the test if a search starts (the error must come before it)."""
    import bitextmine.mining

    def searched(*a, **kw):
        raise AssertionError("the search ran before the error")

    monkeypatch.setattr(bitextmine.mining, "mine_stores", searched)


# ---------------------------------------------------------------------------------------------
# the catalogue: (name, how to build the command in tmp, what the one error line says)

def _locked(t, f, m):
    lock = OutputLock(t / "p.tsv").acquire()  # this (live) process holds it
    return ["mine", f / "ea", f / "eb", "--out", t / "p.tsv"], lock


CASES = {
    # output location, checked before any embedding (text inputs) or search (folders)
    "out in a missing folder": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", t / "nope" / "p.tsv"],
                                "no such folder"),
    "out under a file": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", f / "a.txt" / "p.tsv"], "is not a folder"),
    "out is a directory": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", t], "is a directory; --out needs a file"),
    "out is the source file": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", f / "a.txt"], "is also an input"),
    "out is the target file": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", f / "b.txt"], "is also an input"),
    "out links to an input": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", _link(t / "ln", f / "b.txt")],
                              "is also an input"),
    "out is a manifest": (lambda t, f, m: ["mine", f / "ea", f / "eb", "--out", f / "ea" / "manifest.json"],
                          "is inside the input folder"),
    "out is a new file in an input folder": (lambda t, f, m: ["mine", f / "ea", f / "eb", "--out", f / "eb" / "p.tsv"],
                                             "is inside the input folder"),
    "with-ids on text without id-column": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", t / "p.tsv", "--with-ids"],
                                           "--with-ids needs both sides encoded with --id-column"),
    "with-ids on folders without ids": (lambda t, f, m: ["mine", f / "eids", f / "eb", "--out", t / "p.tsv", "--with-ids"],
                                        "--with-ids needs both sides encoded with --id-column"),
    "threads -1": (lambda t, f, m: ["mine", f / "a.txt", f / "b.txt", "--out", t / "p.tsv", "--threads", "-1"],
                   "--threads must be at least 1"),
    "threads 0": (lambda t, f, m: ["mine", f / "ea", f / "eb", "--out", t / "p.tsv", "--threads", "0"], "--threads must be at least 1"),
    "output in use": (_locked, f"in use by PID {os.getpid()}"),
    # benchmarks
    "bench tatoeba threads -1": (lambda t, f, m: ["bench", "tatoeba", "--data", _tatoeba(t, 5, 5), "--langs", "aaa", "--threads", "-1"],
                                 "--threads must be at least 1"),
    "bench bucc threads 0": (lambda t, f, m: ["bench", "bucc", "--data", t, "--threads", "0"], "--threads must be at least 1"),
    "tatoeba sides of 1000 and 999 lines": (lambda t, f, m: ["bench", "tatoeba", "--data", _tatoeba(t, 1000, 999), "--langs", "aaa"],
                                            "has 1,000 lines but"),
    "bench json under a file": (lambda t, f, m: ["bench", "tatoeba", "--data", _tatoeba(t, 5, 5), "--langs", "aaa",
                                                 "--json", f / "a.txt" / "r.json"], "is not a folder; choose another --json"),
    "bench plots is a file": (lambda t, f, m: ["bench", "bucc", "--data", t, "--plots", f / "a.txt"], "is a file; --plots needs a folder"),
    "bucc gold of another split": (lambda t, f, m: ["bench", "bucc", "--data", _bucc_wrong_gold(t)], "none of its 12 gold pairs"),
}


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _tatoeba(t: Path, n_xx: int, n_eng: int) -> Path:
    d = t / "tatoeba"
    d.mkdir(exist_ok=True)
    s = make_sentences(max(n_xx, n_eng), seed=4)
    (d / "tatoeba.aaa-eng.aaa").write_text("\n".join(s[:n_xx]) + "\n")
    (d / "tatoeba.aaa-eng.eng").write_text("\n".join(s[:n_eng]) + "\n\n\n")  # trailing blank lines do not count
    return d


def _bucc_wrong_gold(t: Path) -> Path:
    from bucc_cases import make_split, write_files

    files, _ = make_split("de", "sample", 1)
    other, _ = make_split("de", "training", 2)
    files["de-en.sample.gold"] = other["de-en.training.gold"]  # ids of another split
    write_files(t / "bucc", files)
    return t / "bucc"


@pytest.mark.parametrize("name", list(CASES))
def test_fault_catalogue(name, folders, tiny_model, tmp_path, no_search):
    make, expect = CASES[name]
    work = tmp_path / "w"
    work.mkdir()
    before = {p: p.read_bytes() for p in folders.rglob("*") if p.is_file()}
    args = make(work, folders, tiny_model)
    lock = None
    if isinstance(args, tuple):
        args, lock = args
    try:
        res = run(*args, "--model", tiny_model, "--cache", tmp_path / "cache", ok=False)
    finally:
        if lock is not None:
            lock.release()
    line = one_line_error(res)
    assert expect in line, line
    assert "Traceback" not in res.output
    assert not (tmp_path / "cache").exists()  # nothing was embedded
    assert {p: p.read_bytes() for p in folders.rglob("*") if p.is_file()} == before  # no input touched
    assert not any(p.name.startswith(".") and p.is_file() for p in folders.rglob("*"))  # no lock or temp in the inputs
    if (work / "p.tsv").exists():
        pytest.fail("an output was written")


def test_bucc_gold_with_some_absent_ids_warns(tiny_model, tmp_path):
    """Gold pairs naming ids that are not in the data: a warning line and a field in the JSON."""
    from bucc_cases import make_split, write_files

    files, _ = make_split("de", "sample", 1)
    files["de-en.sample.gold"] += "de-sa999998\ten-sa999999\nde-sa999997\ten-sa000001\n"  # 2 of 14 cannot be found
    write_files(tmp_path / "bucc", files)
    res = run("bench", "bucc", "--data", tmp_path / "bucc", "--model", tiny_model, "--cache", tmp_path / "c",
              "--json", tmp_path / "r.json")
    warn = [ln for ln in res.output.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "2 of 14 gold pairs" in warn[0] and "recall at most 85.7%" in warn[0], res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["results"][0]["tune"]["gold_missing"] == 2 and doc["results"][0]["tune"]["gold"] == 14


# ---------------------------------------------------------------------------------------------
# disks: read-only, full


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A small tmpfs at ``folder`` (skips the test where mounting is not allowed)."""
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({getattr(e, 'stderr', b'') or e!s}); the disk-full case needs one")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False, capture_output=True)


def test_read_only_folder_fails_before_the_search(folders, tmp_path, no_search):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        res = run("mine", folders / "ea", folders / "eb", "--out", ro / "p.tsv", ok=False)
        assert "cannot create a file in" in one_line_error(res) and "Read-only file system" in res.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_permissions_fail_before_the_search(folders, tmp_path, no_search):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run("mine", folders / "ea", folders / "eb", "--out", ro / "p.tsv", ok=False)
        assert "cannot create a file in" in one_line_error(res)
    finally:
        ro.chmod(0o755)


def test_disk_full_keeps_the_previous_file(folders, tmp_path):
    with tmpfs(tmp_path / "small", "size=64k") as small:
        out = small / "p.tsv"
        out.write_text("the previous pairs\n")
        res = run("mine", folders / "ea", folders / "eb", "--out", out, "--with-lines", ok=False)  # ~250 KB of pairs
        line = one_line_error(res)
        assert f"{out}: cannot write the pairs (No space left on device); the previous file is kept" in line
        assert out.read_text() == "the previous pairs\n"
        assert leftovers(small) == []  # no partial temporary file, no lock
        res = run("mine", folders / "ea", folders / "eb", "--out", out, "--top", "5")  # fits: written
        assert len(out.read_text().splitlines()) == 5 and leftovers(small) == []


# ---------------------------------------------------------------------------------------------
# planted files and two writers


def test_a_symlink_at_the_old_temporary_name_is_not_written_through(folders, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "p.tsv"
    for planted in (tmp_path / "p.tsv.tmp", tmp_path / ".p.tsv.tmp"):
        planted.symlink_to(victim)
    run("mine", folders / "ea", folders / "eb", "--out", out, "--top", "10")
    assert victim.read_text() == "precious\n" and len(out.read_text().splitlines()) == 10
    assert (tmp_path / "p.tsv.tmp").is_symlink()


def test_a_symlink_at_out_is_replaced_not_followed(folders, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "p.tsv"
    out.symlink_to(victim)
    run("mine", folders / "ea", folders / "eb", "--out", out, "--top", "10")
    assert victim.read_text() == "precious\n" and not out.is_symlink() and len(out.read_text().splitlines()) == 10


def test_a_symlink_at_the_lock_name_is_refused_not_followed(folders, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / ".p.tsv.lock").symlink_to(victim)
    res = run("mine", folders / "ea", folders / "eb", "--out", tmp_path / "p.tsv", ok=False)
    assert "is in use" in one_line_error(res)
    assert victim.read_text() == "precious\n" and not (tmp_path / "p.tsv").exists()


def test_a_stale_lock_and_temporary_files_of_a_killed_run_are_cleaned(folders, tmp_path):
    out = tmp_path / "p.tsv"
    import socket

    (tmp_path / ".p.tsv.lock").write_text(json.dumps({"pid": 999999999, "host": socket.gethostname()}))
    (tmp_path / ".p.tsv.tmp-12345-deadbeef").write_text("half a fi")
    run("mine", folders / "ea", folders / "eb", "--out", out, "--top", "3")
    assert len(out.read_text().splitlines()) == 3 and leftovers(tmp_path) == []


def test_two_atomic_writers_never_mix(tmp_path):
    """Two writers interleaved on one path: each writes its own temporary file; the file is always one
    complete output (the last renamed), never a mixture."""
    out = tmp_path / "p.tsv"
    a, b = "".join(f"a{i}\n" for i in range(1000)), "".join(f"b{i}\n" for i in range(10))
    with atomic_writer(out) as fa:
        fa.write(a[:500])
        with atomic_writer(out) as fb:
            fb.write(b)
            fa.write(a[500:])
        assert out.read_text() == b
    assert out.read_text() == a and leftovers(tmp_path) == []


def _mine_cmd(folders: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bitextmine", "mine", str(folders / "ea"), str(folders / "eb"), "--out", str(out),
            "--with-lines", *extra]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "BITEXTMINE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}


def test_two_mine_runs_to_one_out(folders, tmp_path):
    """Two processes at once: one writes, the other is refused naming its PID (or runs after it);
    the file holds one complete output, never a mixture or the loser's claimed success."""
    out = tmp_path / "p.tsv"
    run("mine", folders / "ea", folders / "eb", "--out", tmp_path / "full.tsv", "--with-lines")
    run("mine", folders / "ea", folders / "eb", "--out", tmp_path / "top.tsv", "--with-lines", "--top", "7")
    full, top = (tmp_path / "full.tsv").read_bytes(), (tmp_path / "top.tsv").read_bytes()
    procs = [subprocess.Popen(_mine_cmd(folders, out, *extra), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for extra in ((), ("--top", "7"))]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    winners = [i for i, (rc, _) in enumerate(results) if rc == 0]
    for rc, err in results:
        assert rc == 0 or (rc == 2 and "is in use by PID" in err and "Traceback" not in err), err
    assert winners, results
    if len(winners) == 1:  # the other was refused: the file is the winner's
        assert out.read_bytes() == (full, top)[winners[0]]
    else:  # one ran after the other
        assert out.read_bytes() in (full, top)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# kill -9


def _writing(folder: Path, prefix: str) -> bool:
    """A temporary file with data in it (not the empty probe of the output check) exists."""
    for n in os.listdir(folder):
        if n.startswith(prefix):
            with contextlib.suppress(OSError):
                if (folder / n).stat().st_size > 0:
                    return True
    return False


@pytest.mark.slow
def test_kill_9_never_leaves_a_partial_output(folders, tmp_path):
    """``python -m bitextmine mine`` killed 20 times at seeded random points (half of them the moment
    its temporary output appears): the output is always the previous complete file or the new
    complete one; a final run gives the reference bytes and leaves no temporary or lock file."""
    out = tmp_path / "p.tsv"
    run("mine", folders / "ea", folders / "eb", "--out", tmp_path / "ref.tsv", "--with-lines")
    ref = (tmp_path / "ref.tsv").read_bytes()
    run("mine", folders / "ea", folders / "eb", "--out", out, "--with-lines", "--top", "11")
    previous = out.read_bytes()
    assert previous != ref and len(ref) > 100_000
    rng = random.Random(10)
    env = _env(tmp_path)
    t0 = time.perf_counter()
    p = subprocess.Popen(_mine_cmd(folders, tmp_path / "timing.tsv"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.wait(timeout=300) == 0
    full = time.perf_counter() - t0
    assert (tmp_path / "timing.tsv").read_bytes() == ref
    kills = 0
    for i in range(20):
        p = subprocess.Popen(_mine_cmd(folders, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2 == 0:  # at a random time of the run
            deadline = time.perf_counter() + rng.uniform(0.2, 1.05) * full
            while time.perf_counter() < deadline and p.poll() is None:
                time.sleep(0.005)
        else:  # while the pairs are being written
            delay = rng.uniform(0, 0.003)
            while p.poll() is None and not _writing(tmp_path, ".p.tsv.tmp-"):
                time.sleep(0.001)
            time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
        now = out.read_bytes()
        assert now in (previous, ref), f"kill {i}: a partial output of {len(now)} bytes"
        previous = now if now == ref else previous
    assert kills >= 12  # most runs were really killed, not finished
    p = subprocess.run(_mine_cmd(folders, out), env=env, check=False, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert out.read_bytes() == ref
    assert [n for n in leftovers(tmp_path)] == []


def test_bench_result_locations_are_checked_and_a_failed_write_is_one_error(tmp_path, monkeypatch):
    import errno

    from bitextmine.bench.common import check_location, write_json
    from bitextmine.errors import InputError

    check_location(tmp_path / "new" / "deeper" / "r.json", "json")  # created when written
    check_location(tmp_path / "plots", "plots", folder=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file; plots needs a folder"):
        check_location(tmp_path / "f", "plots", folder=True)
    with pytest.raises(InputError, match="is a directory; json needs a file name"):
        check_location(tmp_path, "json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probes left nothing
    (tmp_path / "r.json").write_text("{}\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match=r"r.json: cannot write the results \(No space left on device\); the previous file is kept"):
        write_json(tmp_path / "r.json", {"a": 1})
    monkeypatch.undo()
    assert (tmp_path / "r.json").read_text() == "{}\n" and leftovers(tmp_path) == []
