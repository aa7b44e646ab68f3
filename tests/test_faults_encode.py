"""Faults and bad inputs of ``encode corpus``, the corpus reader, the embedding store, the embedding
cache and model recipes (issue 10): resume by content, damaged compressed input, one writer per
folder, confined and validated manifests, blank-only input, edited cached files, bad recipes, and
kill -9 at random points of ``encode corpus`` (slow). Each bad input: one line, no traceback,
nothing already written lost."""
from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.fs import OutputLock

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def run(*args, ok: bool = True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res




def encode(inp, out, model, *extra, ok: bool = True):
    return run("encode", "corpus", inp, "--out", out, "--model", model, *extra, ok=ok)


def table(res) -> str:
    """The summary table as one line of words (cells wrapped over several lines joined)."""
    return re.sub(r"[\s│┌┐└┘├┤┬┴┼─]+", " ", res.output)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def same_folder(a: Path, b: Path, *, inputs: bool = False) -> None:
    """Byte-identical shards; manifests equal but for the inputs' identity (path, size, mtime) unless ``inputs``."""
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        if name != "manifest.json":
            assert sa[name] == sb[name], name
    ma, mb = json.loads(sa["manifest.json"]), json.loads(sb["manifest.json"])
    if not inputs:
        ma.pop("inputs"), mb.pop("inputs")
    assert ma == mb


def crash_after(out: Path, shards: int) -> None:
    """Leave ``out`` as a run killed after ``shards`` finished shards would (manifest incomplete, later shards gone)."""
    m = json.loads((out / "manifest.json").read_text())
    for e in m["shards"][shards:]:
        (out / e["file"]).unlink()
    m.update(complete=False, shards=m["shards"][:shards])
    m.pop("count"), m.pop("read")
    (out / "manifest.json").write_text(json.dumps(m))


@pytest.fixture
def text(tmp_path) -> Path:
    p = tmp_path / "in.txt"
    p.write_text("\n".join(make_sentences(230, seed=4)) + "\n")
    return p


# ---------------------------------------------------------------------------------------------
# resume by content


def test_touching_the_input_after_a_crash_keeps_the_finished_shards(tiny_model, text, tmp_path):
    encode(text, tmp_path / "ref", tiny_model, "--shard-size", 50)
    shutil.copytree(tmp_path / "ref", tmp_path / "out")
    crash_after(tmp_path / "out", 2)
    st = text.stat()
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same lines, another modification time
    res = encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    assert "2 kept from an earlier run" in table(res) and "re-encoded" not in table(res)
    same_folder(tmp_path / "out", tmp_path / "ref")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["inputs"][0]["mtime_ns"] == st.st_mtime_ns + 10**9  # the manifest records the input as it is now
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))  # and a complete folder: nothing to embed
    res = encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    assert "5 kept from an earlier run" in table(res) and "embedded now 0 in" in table(res)


def test_strict_stop_then_replace_then_skip_keep_the_shards_before_the_bad_line(tiny_model, tmp_path):
    sents = make_sentences(400, seed=6)
    lines = [s.encode() for s in sents]
    lines[379] = b"ba\xffd " + lines[379]  # line 380 of 400
    p = tmp_path / "in.txt"
    p.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    res = encode(p, out, tiny_model, "--shard-size", 50, ok=False)
    assert "in.txt:380: invalid UTF-8" in one_line_error(res) and "--errors replace" in table(res)
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 7  # lines 1-350 are finished
    res = encode(p, out, tiny_model, "--shard-size", 50, "--errors", "replace")  # what the message advised
    assert "7 kept from an earlier run" in table(res) and "re-encoded" not in table(res)
    encode(p, tmp_path / "ref_replace", tiny_model, "--shard-size", 50, "--errors", "replace")
    same_folder(out, tmp_path / "ref_replace", inputs=True)
    assert json.loads((out / "manifest.json").read_text())["errors"] == "replace"
    # skip reads line 380 differently: the shard holding it (the 8th) and those after are encoded again
    res = encode(p, out, tiny_model, "--shard-size", 50, "--errors", "skip")
    assert "7 kept from an earlier run; re-encoded from shard 7: its input lines changed" in table(res)
    encode(p, tmp_path / "ref_skip", tiny_model, "--shard-size", 50, "--errors", "skip")
    same_folder(out, tmp_path / "ref_skip", inputs=True)


def test_an_edited_input_is_encoded_again_from_its_first_changed_shard(tiny_model, text, tmp_path):
    encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    sents = text.read_text().splitlines()
    sents[120] = "a sentence edited after the run"  # in the third shard
    sents.append("and one appended")
    text.write_text("\n".join(sents) + "\n")
    res = encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    assert "2 kept from an earlier run; re-encoded from shard 2: its input lines changed" in table(res)
    encode(text, tmp_path / "ref", tiny_model, "--shard-size", 50)
    same_folder(tmp_path / "out", tmp_path / "ref", inputs=True)


def test_appending_to_an_input_does_not_leave_a_partial_shard_in_the_middle(tiny_model, text, tmp_path):
    encode(text, tmp_path / "out", tiny_model, "--shard-size", 100)  # 100 + 100 + 30
    with open(text, "a") as fh:
        fh.write("\n".join(make_sentences(40, seed=99)) + "\n")
    res = encode(text, tmp_path / "out", tiny_model, "--shard-size", 100)
    assert "re-encoded from shard 2: the input has more lines than when it was written" in table(res)
    encode(text, tmp_path / "ref", tiny_model, "--shard-size", 100)
    same_folder(tmp_path / "out", tmp_path / "ref", inputs=True)


def test_a_damaged_shard_is_encoded_again_on_resume(tiny_model, text, tmp_path):
    encode(text, tmp_path / "ref", tiny_model, "--shard-size", 50)
    shutil.copytree(tmp_path / "ref", tmp_path / "out")
    crash_after(tmp_path / "out", 3)
    shard = tmp_path / "out" / "shard-00001.arrow"
    shard.write_bytes(shard.read_bytes()[:-10])
    res = encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    assert "1 kept from an earlier run; re-encoded from shard 1: the shard file is damaged" in table(res)
    same_folder(tmp_path / "out", tmp_path / "ref")


@pytest.mark.parametrize("model_b,args,expect", [
    (False, ("--shard-size", "60"), "shard_size=50, this run has shard_size=60; rerun with --shard-size 50 to resume"),
    (False, ("--shard-size", "50", "--id-column"), "id_column=false, this run has id_column=true; rerun without --id-column to resume"),
    (False, ("--shard-size", "50", "--max-tokens", "16"), "another model or recipe"),
    (True, ("--shard-size", "50"), "holds embeddings of another model or recipe"),
])
def test_refusals_name_the_reason_and_the_smallest_fix(tiny_model, tiny_model_b, text, tmp_path, model_b, args, expect):
    out = tmp_path / "out"
    encode(text, out, tiny_model, "--shard-size", 50)
    before = snapshot(out)
    msg = one_line_error(encode(text, out, tiny_model_b if model_b else tiny_model, *args, ok=False))
    assert expect in msg and "--overwrite" in msg and "--out" in msg, msg
    if "model" in expect:
        assert f"rerun with --model {tiny_model} and the same recipe options to resume" in msg
    assert snapshot(out) == before


def test_another_file_into_a_folder_refuses_but_a_moved_one_resumes(tiny_model, text, tmp_path):
    out = tmp_path / "out"
    encode(text, out, tiny_model, "--shard-size", 50)
    moved = tmp_path / "moved.txt"
    shutil.copy(text, moved)
    res = encode(moved, out, tiny_model, "--shard-size", 50)  # same lines elsewhere: all shards kept
    assert "5 kept from an earlier run" in table(res)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(make_sentences(100, seed=77)) + "\n")
    before = snapshot(out)
    msg = one_line_error(encode(other, out, tiny_model, "--shard-size", 50, ok=False))
    assert "was encoded from" in msg and "other.txt" in msg and "shard-00000.arrow no longer matches" in msg and "--overwrite" in msg
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# damaged compressed input

TEXT = ("\n".join(make_sentences(3000, seed=8)) + "\n").encode()
COMPRESS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),  # like the zstd tool
}


def _damage(data: bytes, how: str) -> bytes:
    mid = len(data) // 2
    if how == "truncated":
        return data[:mid]
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]


@pytest.mark.parametrize("errors", ["strict", "replace"])
@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("fmt", sorted(COMPRESS))
def test_damaged_compressed_input_is_a_one_line_error(tiny_model, tmp_path, fmt, how, errors):
    """Never a shorter corpus with exit 0; garbage before a failed checksum is reported as corruption
    (not as invalid UTF-8 to be replaced), and replacing it does not hide the failure."""
    p = tmp_path / f"in.txt.{fmt}"
    p.write_bytes(_damage(COMPRESS[fmt](TEXT), how))
    msg = one_line_error(encode(p, tmp_path / "out", tiny_model, "--errors", errors, ok=False))
    assert str(p) in msg and ("ends early" if how == "truncated" else "corrupt") in msg, msg
    assert not (tmp_path / "out").exists()  # nothing half-encoded left behind


def test_corrupt_deflate_data_is_not_a_zlib_traceback(tiny_model, tmp_path):
    data = bytearray(gzip.compress(TEXT))
    data[12] ^= 0xFF  # inside the first deflate block header: zlib.error, not a CRC failure
    p = tmp_path / "in.txt.gz"
    p.write_bytes(bytes(data))
    msg = one_line_error(encode(p, tmp_path / "out", tiny_model, ok=False))
    assert "in.txt.gz: corrupt gzip data (Error -3 while decompressing data" in msg


@pytest.mark.parametrize("skippable_first", [False, True])
def test_intact_multi_frame_zstd_reads_every_frame(tmp_path, skippable_first):
    """Frames one after another (``cat a.zst b.zst``), or each behind a skippable frame as pzstd writes them."""
    import struct

    from bitextmine.corpus import iter_lines

    z = zstandard.ZstdCompressor()
    skip = struct.pack("<II", 0x184D2A50, 4) + b"size" if skippable_first else b""
    p = tmp_path / "in.zst"
    p.write_bytes(skip + z.compress(TEXT[:1000]) + skip + z.compress(TEXT[1000:]))
    assert [ln.text for ln in iter_lines([str(p)])] == TEXT.decode().splitlines()


# ---------------------------------------------------------------------------------------------
# one writer per folder


def test_a_second_run_into_a_locked_folder_is_refused(tiny_model, text, tmp_path):
    out = tmp_path / "out"
    encode(text, out, tiny_model, "--shard-size", 50)
    before = snapshot(out)
    with OutputLock(out):  # another encode at work on it (this process)
        msg = one_line_error(encode(text, out, tiny_model, "--shard-size", 50, "--overwrite", ok=False))
    assert f"is in use by PID {os.getpid()}" in msg
    assert snapshot(out) == before
    assert not (tmp_path / ".out.lock").exists()


def test_a_stale_lock_is_taken_over_and_removed(tiny_model, text, tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / ".out.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    encode(text, tmp_path / "out", tiny_model, "--shard-size", 50)
    assert not (tmp_path / ".out.lock").exists()


# ---------------------------------------------------------------------------------------------
# manifests: confined shard names, fields that match the shards


@pytest.fixture
def folder(enc, text, tmp_path) -> Path:
    from bitextmine.encode_job import EncodeOptions, encode_corpus

    encode_corpus([str(text)], tmp_path / "emb", enc, EncodeOptions(shard_size=100))
    return tmp_path / "emb"


def _edit(folder: Path, change) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["../x/shard-00000.arrow", "/etc/passwd", "sub/shard-00000.arrow", "shard-00001.arrow", "",
                                  "shard-0.arrow", None, "shard-00000.arrow/../shard-00000.arrow"])
def test_shard_names_are_confined_to_plain_files_in_the_folder(folder, name):
    from bitextmine.errors import StoreError
    from bitextmine.store import EmbeddingStore

    def change(m):
        m["shards"][0]["file"] = name
    _edit(folder, change)
    with pytest.raises(StoreError, match="shards must be plain files named shard-00000.arrow"):
        EmbeddingStore(folder)


def test_a_shard_of_another_folder_is_never_opened(folder, tmp_path):
    """A manifest entry pointing at a sibling folder's real shard, size and SHA-256 right, is refused."""
    from bitextmine.errors import StoreError
    from bitextmine.store import EmbeddingStore

    shutil.copytree(folder, tmp_path / "other")

    def change(m):
        m["shards"][0]["file"] = "../other/shard-00000.arrow"
    _edit(folder, change)
    (folder / "shard-00000.arrow").unlink()
    with pytest.raises(StoreError, match="plain files"):
        EmbeddingStore(folder)


@pytest.mark.parametrize("change,expect", [
    (lambda m: m.update(dim=16), "shard holds 32-dim embeddings, the manifest says dim 16"),
    (lambda m: m.update(dim="32x"), "dim must be a positive integer"),
    (lambda m: m.update(dim=0), "dim must be a positive integer"),
    (lambda m: m.update(id_column=True), "lacks an id column, the manifest says id_column=true"),
    (lambda m: m.update(count=7), "count 7 differs from the shards' rows"),
    (lambda m: m["shards"][0].update(rows="100"), "rows must be a non-negative integer"),
    (lambda m: m["shards"][0].pop("bytes"), "bytes must be a non-negative integer"),
    (lambda m: m.pop("fingerprint"), "fingerprint must be a string"),
    (lambda m: m.update(shards={}), "shards must be a list"),
    (lambda m: m.update(version="1"), "version must be an integer"),
    (lambda m: m["shards"].__setitem__(0, "shard-00000.arrow"), "shard entry 0 must be an object"),
])
def test_edited_manifest_fields_are_store_errors(folder, change, expect):
    from bitextmine.errors import StoreError
    from bitextmine.store import EmbeddingStore

    _edit(folder, change)
    with pytest.raises(StoreError, match=expect.replace("(", r"\(")):
        EmbeddingStore(folder)


def test_encode_into_a_folder_with_an_edited_manifest_names_the_fix(tiny_model, folder, text):
    _edit(folder, lambda m: m["shards"][0].update(file="/etc/passwd"))
    msg = one_line_error(encode(text, folder, tiny_model, "--shard-size", 100, ok=False))
    assert "plain files" in msg and "use --overwrite to encode into" in msg
    encode(text, folder, tiny_model, "--shard-size", 100, "--overwrite")  # the fix works
    from bitextmine.store import EmbeddingStore

    assert len(EmbeddingStore(folder)) == 230


# ---------------------------------------------------------------------------------------------
# blank-only input


def test_blank_only_input_leaves_no_folder_that_asks_for_a_rerun(tiny_model, tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text("\n   \n\t\n\n")
    msg = one_line_error(encode(p, tmp_path / "out", tiny_model, ok=False))
    assert "blank.txt: no sentences" in msg and "rerun" not in msg
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    one_line_error(encode(p, tmp_path / "mine", tiny_model, ok=False))
    assert list((tmp_path / "mine").iterdir()) == []
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no lock or temporary file left


# ---------------------------------------------------------------------------------------------
# the embedding cache


def test_cache_misses_a_file_edited_with_size_and_mtime_kept(enc, tmp_path):
    from bitextmine.embed_cache import EmbeddingCache

    p = tmp_path / "a.txt"
    sents = make_sentences(20, seed=2)
    p.write_text("\n".join(sents) + "\n")
    st = p.stat()
    first = EmbeddingCache(enc, tmp_path / "c").open(p)
    assert first.column("text", np.array([0])) == [sents[0]]
    edited = sents[0][::-1]  # same bytes, another order: same size
    p.write_text("\n".join([edited] + sents[1:]) + "\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    cache = EmbeddingCache(enc, tmp_path / "c")
    again = cache.open(p)
    assert cache.encoded == [str(p)] and again.column("text", np.array([0])) == [edited]
    shutil.copy(p, tmp_path / "copy.txt")  # the same content elsewhere: a hit
    cache = EmbeddingCache(enc, tmp_path / "c")
    assert cache.open(tmp_path / "copy.txt").folder == again.folder and cache.encoded == []


def test_cache_waits_for_another_process_embedding_the_same_file(enc, tmp_path):
    """Two mine runs on one new file: the second waits for the first's lock instead of failing, then uses its result."""
    import threading

    from bitextmine.corpus import Errors
    from bitextmine.embed_cache import EmbeddingCache, cache_folder

    p = tmp_path / "a.txt"
    p.write_text("\n".join(make_sentences(30, seed=3)) + "\n")
    folder = cache_folder(str(p), enc.lm.fingerprint, False, Errors.STRICT, tmp_path / "c", enc.numerics)
    folder.parent.mkdir(parents=True)
    lock = OutputLock(folder.resolve()).acquire()  # "another process" is embedding it
    events: list = []
    cache = EmbeddingCache(enc, tmp_path / "c", listener=events.append)
    got: list = []
    t = threading.Thread(target=lambda: got.append(cache.open(p)), daemon=True)
    t.start()
    for _ in range(600):
        if any(e.kind == "start" and e.what.startswith("waiting for another process") for e in events):
            break
        time.sleep(0.05)
    assert not got and any(e.what.startswith("waiting") for e in events)
    lock.release()
    t.join(120)
    assert len(got[0]) == 30 and cache.encoded == [str(p)]


# ---------------------------------------------------------------------------------------------
# model recipes


@pytest.mark.parametrize("content,expect", [
    ("{not json", "not valid JSON"),
    ('["mean"]', "expected a JSON object"),
    ('{"pooling": "max"}', "pooling must be one of mean, cls"),
    ('{"max_tokens": "32"}', 'max_tokens must be an integer, not "32"'),
    ('{"max_tokens": 1}', "max_tokens must be at least 2"),
    ('{"normalize": "yes"}', "normalize must be true or false"),
])
def test_a_bad_recipe_file_is_a_model_error_naming_it(tiny_model, text, tmp_path, content, expect):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "bitextmine_recipe.json").write_text(content)
    msg = one_line_error(encode(text, tmp_path / "out", model, ok=False))
    assert "bitextmine_recipe.json" in msg and expect in msg, msg


# ---------------------------------------------------------------------------------------------
# kill -9

#: A fork server: imports the CLI, torch and transformers once, then runs ``bitextmine`` in a forked
#: child per JSON argv line read from stdin, answering "pid" then "exit status" for each. A child is
#: the ``python -m bitextmine`` process of a real run, without paying the imports every time.
FORK_SERVER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)  # no OpenMP pool in the server: forking after one starts is not safe
import bitextmine.cli, bitextmine.cli.encode, bitextmine.encode_job, bitextmine.encoder
from bitextmine.models.loader import load_model
load_model(sys.argv[1])  # loads transformers' lazy modules once, before forking
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1); os.dup2(fd, 2)
        sys.argv = ["bitextmine", *argv]
        code = 0
        try:
            bitextmine.cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


class ForkServer:
    def __init__(self, tmp_path: Path, model: Path) -> None:
        env = {**os.environ, "BITEXTMINE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        self.p = subprocess.Popen([sys.executable, "-c", FORK_SERVER, str(model)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                  text=True)
        self.log = tmp_path / "run.log"

    def start(self, argv: list[str]) -> int:
        self.p.stdin.write(json.dumps([argv, str(self.log)]) + "\n")
        self.p.stdin.flush()
        return int(self.p.stdout.readline())

    def wait(self) -> int:
        """The exit status (os.waitpid's) of the child started last."""
        return int(self.p.stdout.readline())

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def _shards_done(out: Path) -> int:
    """Finished shards of a run in progress (-1 before its manifest is written or once complete)."""
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return -1
    return -1 if m.get("complete") else len(m["shards"])


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_identical_folders(tiny_model, tmp_path):
    """``bitextmine encode corpus`` killed with SIGKILL at 20+ seeded random points (after a random
    number of finished shards plus a random delay, or at a random time from the start), one to
    three times per folder, each folder then rerun to completion: shards and manifest
    byte-identical to an uninterrupted run's, every shard a killed run left finished already
    identical, no temporary or lock file left."""
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(make_sentences(2000, seed=12)) + "\n")
    n_shards = 40
    server = ForkServer(tmp_path, tiny_model)

    def argv(out: Path) -> list[str]:
        return ["encode", "corpus", str(inp), "--out", str(out), "--model", str(tiny_model), "--shard-size", "50", "--threads", "1"]

    def complete(out: Path) -> None:
        server.start(argv(out))
        assert server.wait() == 0, server.log.read_text()
        assert snapshot(out) == ref, out
        assert not [f.name for f in tmp_path.iterdir() if f.name.startswith(".")]  # no lock or temporary file

    try:
        server.start(argv(tmp_path / "ref"))  # the first run also waits for the server's imports
        assert server.wait() == 0, server.log.read_text()
        ref = snapshot(tmp_path / "ref")
        assert len(ref) == n_shards + 1
        t0 = time.perf_counter()
        complete(tmp_path / "timing")  # an uninterrupted run gives the same bytes again
        full = time.perf_counter() - t0
        rng = random.Random(2024)
        kills = cycle = 0
        while kills < 20:
            assert cycle < 16, f"only {kills} runs were still running when killed"
            out = tmp_path / f"out{cycle}"
            for attempt in range(rng.choice((1, 2, 3))):
                pid = server.start(argv(out))
                if rng.random() < 0.25:  # at a random time from the start (model loading included)
                    time.sleep(rng.uniform(0, full))
                else:  # after a random number of finished shards, plus up to about a shard's time
                    target = rng.randrange(0, n_shards)
                    deadline = time.perf_counter() + 3 * full
                    while _shards_done(out) < target and time.perf_counter() < deadline:
                        time.sleep(0.002)
                    time.sleep(rng.uniform(0, full / n_shards))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kills += os.WIFSIGNALED(server.wait())
                if (out / "manifest.json").exists():
                    for e in json.loads((out / "manifest.json").read_text())["shards"]:  # what a killed run kept is right
                        assert (out / e["file"]).read_bytes() == ref[e["file"]], (cycle, attempt, e["file"])
            complete(out)
            shutil.rmtree(out)
            cycle += 1
    finally:
        server.close()
