"""The ``"auto"`` rule (bitextmine.knn.policy): index, lists, probes and training sample by size."""
from __future__ import annotations

import numpy as np
import pytest
from knn_cases import assert_knn_equal, small_data

from bitextmine.errors import InputError
from bitextmine.knn import auto_index, code_bytes, index_used, knn

GiB = 2**30


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return small_data()


def test_auto_index_rule() -> None:
    b = {"memory_budget": 4 * GiB}
    assert auto_index(1_000, 1024, **b) == ("flat", {})
    assert auto_index(99_999, 1024, **b) == ("flat", {})
    assert auto_index(100_000, 1024, **b) == ("IVF1024,SQfp16", {"nprobe": 64, "train_size": 32_768})
    assert auto_index(1_000_000, 384, **b) == ("IVF4096,SQfp16", {"nprobe": 64, "train_size": 131_072})
    assert auto_index(1_000_000, 1024, **b) == ("IVF4096,SQfp16", {"nprobe": 64, "train_size": 131_072})
    assert auto_index(3_000_000, 384, **b)[1]["nprobe"] == 128  # 8,192 lists: 1/64 of them
    assert auto_index(10_000_000, 384, **b) == ("IVF16384,SQ8", {"nprobe": 256, "train_size": 524_288})
    assert auto_index(100_000_000, 1024, **b) == ("OPQ32,IVF32768,PQ32", {"nprobe": 256, "train_size": 1_048_576})
    assert auto_index(1_000_000, 768, memory_budget=2**24)[0] == "OPQ8,IVF4096,PQ8"


def test_auto_nprobe_by_number_of_lists() -> None:
    from bitextmine.knn.policy import _auto_nprobe

    got = {nlist: _auto_nprobe(nlist) for nlist in (8, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)}
    assert got == {8: 8, 64: 16, 256: 16, 512: 32, 1024: 64, 2048: 64, 4096: 64, 8192: 128, 16384: 256, 65536: 256}


def test_the_tiers_follow_the_memory_budget() -> None:
    n, d = 10_000_000, 384
    # fp16 codes and ids: 776 bytes a vector (7.2 GiB at 10M); SQ8: 392 (3.7 GiB); OPQ+PQ64: 72 (0.7 GiB)
    assert code_bytes("IVF16384,SQfp16", d) == 776 and code_bytes("IVF16384,SQ8", d) == 392
    assert code_bytes("OPQ64,IVF16384,PQ64", d) == 72 and code_bytes("flat", d) == 1536 and code_bytes("HNSW32", d) is None
    assert auto_index(n, d, memory_budget=8 * GiB)[0] == "IVF16384,SQfp16"
    assert auto_index(n, d, memory_budget=4 * GiB)[0] == "IVF16384,SQ8"
    assert auto_index(n, d, memory_budget=1 * GiB)[0] == "OPQ64,IVF16384,PQ64"
    assert auto_index(n, d, memory_budget=300 * 2**20)[0] == "OPQ16,IVF16384,PQ16"  # 24 bytes a vector: 229 MiB
    for spec in ("IVF16384,SQfp16", "IVF16384,SQ8", "OPQ64,IVF16384,PQ64"):  # what auto picks fits the budget it was given
        budget = n * code_bytes(spec, d)
        assert auto_index(n, d, memory_budget=budget)[0] == spec
    # not even 8-byte codes fit: the largest product codes, their lists in a file
    assert auto_index(n, d, memory_budget=100 * 2**20)[0] == "OPQ64,IVF16384,PQ64,ondisk"
    assert code_bytes("OPQ64,IVF16384,PQ64,ondisk", d) == 72


def test_an_on_disk_index_without_the_room_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    """The free space of the temporary folder must hold ON_DISK_ROOM (4) times the codes and ids."""
    import shutil
    import tempfile
    from collections import namedtuple

    from bitextmine.knn import policy

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, policy.ON_DISK_ROOM * 10_000_000 * 72 - 1))
    with pytest.raises(InputError, match="on-disk index OPQ64,IVF16384,PQ64 of 10,000,000 vectors") as e:
        policy._resolve("auto", 10_000_000, 384, None, None, 100 * 2**20)
    assert e.value.param == "memory_budget" and "TMPDIR" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(InputError, match="on-disk"):
        policy._resolve("IVF16384,PQ64,ondisk", 10_000_000, 384, None, None)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, policy.ON_DISK_ROOM * 10_000_000 * 72))
    assert policy._resolve("auto", 10_000_000, 384, None, None, 100 * 2**20)[0].endswith(",ondisk")
    assert policy._resolve("auto", 10_000_000, 384, None, None, 8 * 2**30)[0] == "IVF16384,SQfp16"  # in memory: no check


@pytest.mark.parametrize(("rows", "nlist"), [(20_000, 32), (50_000, 64)])
def test_an_on_disk_index_writes_no_more_than_the_room_the_check_asks_for(tmp_path, monkeypatch, rows, nlist) -> None:
    """check_disk asks for ON_DISK_ROOM times the codes and ids: the blocks the lists' file takes once the
    database is in stay within it (FAISS grows the lists by doubling and frees their old room; at these
    sizes 3.26x and 2.62x, over the 2x the check asked for before)."""
    import tempfile

    from bitextmine.knn import policy
    from bitextmine.knn.ivf import _fill, _new_index, _train
    from bitextmine.knn.sources import _as_source

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x = np.random.default_rng(0).standard_normal((rows, 64), dtype=np.float32)
    spec, db = f"IVF{nlist},PQ8,ondisk", _as_source(x, "db")
    index = _new_index(spec, 64)
    _train(index, spec, [db], 10_000, 0, 65_536, False)
    built, _ = _fill(index, spec, db, 8, False, 65_536)
    (path,) = tmp_path.iterdir()
    written, data = path.stat().st_blocks * 512, rows * policy.code_bytes(spec, 64)
    assert built.ntotal == rows and data < written <= policy.ON_DISK_ROOM * data, (written / data)


def test_on_disk_lists_of_killed_jobs_are_removed_by_the_next_one(tmp_path, monkeypatch) -> None:
    """A job killed mid-search leaves its lists' file (no finaliser runs); the next on-disk check or index on
    the host removes those of processes that are gone, and leaves a live process's and other hosts' alone."""
    import gc
    import tempfile

    from bitextmine import fs
    from bitextmine.knn.policy import LISTS_PREFIX, check_disk

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tag = fs.process_tag()
    host = tag.split("@", 1)[1]
    dead = tmp_path / f"{LISTS_PREFIX}999999999@{host}-abc.ivfdata"
    live = tmp_path / f"{LISTS_PREFIX}{tag}-abc.ivfdata"
    elsewhere = tmp_path / f"{LISTS_PREFIX}999999999@another_{host}-abc.ivfdata"
    for p in (dead, live, elsewhere):
        p.write_bytes(b"\0" * 64)
    check_disk("IVF16,PQ8,ondisk", 2000, 32)  # the check before any work sweeps first: their room is free
    assert not dead.exists() and live.exists() and elsewhere.exists()
    dead.write_bytes(b"\0" * 64)  # and the index itself, where the check did not run (a Ray worker's TMPDIR)
    xb = np.random.default_rng(0).normal(size=(2000, 32)).astype(np.float32)
    knn(xb[:100], xb, 4, index="IVF16,PQ8,ondisk", nprobe=4, train_size=2000)
    gc.collect()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name])


def test_on_disk_lists_give_the_in_memory_neighbours_and_leave_no_file(tmp_path, monkeypatch) -> None:
    """``,ondisk``: the same codes in a memory-mapped file under TMPDIR, searched by list to the same bits;
    the file is there while the index is, removed after; FAISS's resize messages never reach stdout."""
    import gc
    import tempfile

    import bitextmine.knn as knn_mod

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rng = np.random.default_rng(1)
    xb = rng.normal(size=(3000, 32)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    for spec in ("IVF16,PQ8", "OPQ8,IVF16,PQ8"):  # (IVF…,Flat/SQ… in memory are probed centred: not comparable)
        ref = knn(xb[:400], xb, 4, index=spec, nprobe=5, train_size=3000)
        seen = []
        real = knn_mod._search  # what the one-way search calls

        def search(index, *a, **kw):
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
            return real(index, *a, **kw)

        monkeypatch.setattr(knn_mod, "_search", search)
        got = knn(xb[:400], xb, 4, index=spec + ",ondisk", nprobe=5, train_size=3000)
        monkeypatch.setattr(knn_mod, "_search", real)
        gc.collect()
        assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith("bitextmine-lists-"), seen
        assert not list(tmp_path.iterdir())
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_the_default_budget_is_a_quarter_of_memory() -> None:
    import os

    from bitextmine.knn import default_memory_budget

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert default_memory_budget() == int(ram * 0.25)
    assert auto_index(10_000_000, 384) == auto_index(10_000_000, 384, memory_budget=int(ram * 0.25))


def test_index_used_reports_what_the_search_resolves() -> None:
    b = 4 * GiB
    assert index_used("auto", 1_000, 2_000, 384, memory_budget=b) == "flat"
    assert index_used("auto", 1_000_000, 1_000_000, 384, memory_budget=b) == "IVF4096,SQfp16 (nprobe 64)"
    assert index_used("auto", 50_000, 1_000_000, 384, memory_budget=b) == "IVF4096,SQfp16 (nprobe 64) / flat"
    assert index_used("IVF64,Flat", 10, 10, 8) == "IVF64,Flat (nprobe 16)"
    assert index_used("IVF64,Flat", 10, 10, 8, nprobe=4) == "IVF64,Flat (nprobe 4)"
    assert index_used("HNSW16", 10, 10, 8) == "HNSW16"


def test_an_opq_pq_index_searches() -> None:
    """The codes auto falls back to (a learned rotation, then product codes) build and search through our path."""
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(4000, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[:200] + 0.05 * rng.normal(size=(200, 16)).astype(np.float32)
    D, I = knn(xq, xb, 3, index="OPQ8,IVF16,PQ8", nprobe=16)
    assert I.shape == (200, 3) and np.mean(I[:, 0] == np.arange(200)) > 0.8  # product codes: close, not exact


def test_auto_small_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    xq, xb = data
    D, I = knn(xq, xb, 3, index="auto")
    assert_knn_equal(D, I, xq, xb, 3)
