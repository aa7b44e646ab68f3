"""``mine --engine ray`` (issue 12, the mining half): the database split into shard parts over a pool of
Ray search actors gives the same neighbours, similarities, pairs and scores as the local engine with
the same index settings (exact, centred IVF with flat and fp16 codes, FAISS's own IVF codes, the auto
rule's mixed directions, de-duplicated sides). One local Ray runtime (2 CPUs) serves the module.

Without ray installed only the tests of the missing-package error run.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time

import numpy as np
import pytest
from conftest import one_line_error
from test_scale import structured, write_store
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.errors import InputError
from bitextmine.mining import MineOptions, mine_embeddings, mine_stores

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install -e '.[ray]')")
runner = CliRunner()
BLOCK = 256  # rows per search block: several parts per side on these few thousand rows


def run(*args):
    return runner.invoke(app, [str(a) for a in args])




@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    """3,000 source rows in shards of 700 and 900 rows, 2,000 target rows in shards of 600 (random, with true pairs)."""
    x, y, _ = structured(3000, seed=5)
    base = tmp_path_factory.mktemp("ray-mine")
    return write_store(base / "x", x, [700, 900]), write_store(base / "y", y[:2000], [600])


def same_pairs(a, b) -> None:
    assert len(a.pairs) > 100
    for f in ("src", "tgt", "score"):
        assert np.array_equal(getattr(a.pairs, f), getattr(b.pairs, f)), f


# ---------------------------------------------------------------------------------------------
# without a Ray runtime (these run first, before the module's runtime starts)


def test_ray_not_installed_is_a_one_line_error(sides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    line = one_line_error(run("mine", sides[0].folder, sides[1].folder, "--out", tmp_path / "o.tsv", "--engine", "ray"))
    assert "needs the ray package" in line and "bitextmine[ray]" in line
    assert not (tmp_path / "o.tsv").exists()


def test_ray_flags_without_the_ray_engine_are_refused(sides, tmp_path):
    res = run("mine", sides[0].folder, sides[1].folder, "--out", tmp_path / "o.tsv", "--workers", "2")
    assert res.exit_code == 2 and "--workers" in res.output and "--engine ray" in res.output
    assert not (tmp_path / "o.tsv").exists()


def test_the_engine_needs_folders_and_ray_options():
    from bitextmine.ray_engine import RayOptions

    with pytest.raises(InputError, match="engine needs embedding folders"):
        mine_embeddings(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), engine=RayOptions())
    with pytest.raises(InputError, match="engine must be a RayOptions"):
        MineOptions(engine="ray")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="workers must be a whole number"):
        MineOptions(engine=RayOptions(workers=0))


@needs_ray
def test_an_unreachable_address_is_a_one_line_error_within_seconds(sides, tmp_path):
    import ray

    assert not ray.is_initialized()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    line = one_line_error(run("mine", sides[0].folder, sides[1].folder, "--out", tmp_path / "o.tsv", "--engine", "ray",
                              "--address", f"127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 30
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in line and "--address" in line
    assert not (tmp_path / "o.tsv").exists() and not ray.is_initialized()


@needs_ray
def test_mixed_model_fingerprints_are_refused_before_any_work(tmp_path):
    import ray

    x, y, _ = structured(300, seed=2)
    a, b = write_store(tmp_path / "a", x, [100], fingerprint="aaaa"), write_store(tmp_path / "b", y, [100], fingerprint="bbbb")
    line = one_line_error(run("mine", a.folder, b.folder, "--out", tmp_path / "o.tsv", "--engine", "ray", "--workers", 1))
    assert "different models" in line and "aaaa" in line and "bbbb" in line
    assert not (tmp_path / "o.tsv").exists() and not ray.is_initialized()  # refused before Ray was even started


# ---------------------------------------------------------------------------------------------
# on one local Ray runtime


@pytest.fixture(scope="module")
def runtime():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def search(runtime):
    """Two search actors, for one test (the runtime's 2 CPUs are then free for the next one's)."""
    from bitextmine.ray_engine import RayOptions
    from bitextmine.ray_mine import RaySearch

    with RaySearch(RayOptions(workers=2)) as rs:
        yield rs


@needs_ray
@pytest.mark.parametrize(("index", "nprobe"), [("flat", None), ("IVF16,Flat", None), ("IVF16,SQfp16", 4), ("IVF16,SQ8", 3), ("OPQ8,IVF16,PQ8", 4)])
def test_knn_pair_on_ray_equals_the_local_search(search, sides, index, nprobe):
    """Same D and I both ways, bit for bit: per-part search merged exactly (product codes behind a rotation too)."""
    from bitextmine.knn import knn_pair
    from bitextmine.ray_mine import parts

    xs, ys = sides
    assert len(parts(xs, BLOCK)) >= 3 and len(parts(ys, BLOCK)) >= 3
    local = knn_pair(xs, ys, 4, index, block_rows=BLOCK, nprobe=nprobe)
    ray = search.knn_pair(xs, ys, 4, index, block_rows=BLOCK, nprobe=nprobe)
    for (dl, il), (dr, ir) in zip(local, ray):
        assert dl.shape == dr.shape and np.array_equal(il, ir) and np.array_equal(dl, dr)
    assert search.engine["index"]["forward"].startswith(index)


@needs_ray
@pytest.mark.parametrize("index", ["flat", "IVF16,Flat", "IVF16,SQfp16"])
def test_mine_stores_on_ray_gives_the_local_pairs_and_scores(runtime, sides, index):
    from bitextmine.ray_engine import RayOptions

    opts = MineOptions(index=index, block_rows=BLOCK)
    local = mine_stores(*sides, opts)
    ray = mine_stores(*sides, MineOptions(index=index, block_rows=BLOCK, engine=RayOptions(workers=2)))
    same_pairs(local, ray)
    assert local.engine is None
    assert ray.engine["name"] == "ray" and ray.engine["workers"] == 2 and ray.engine["nodes"] == 1
    assert ray.engine["index"]["backward"].startswith(index)


@needs_ray
def test_auto_with_a_direction_each_dedup_and_a_one_way_margin(runtime, sides, monkeypatch):
    """auto: exact one way and IVF the other (trained for its own database); de-duplicated sides (product codes re-ranked
    from their rows too); one search only."""
    from bitextmine.knn import policy
    from bitextmine.ray_engine import RayOptions

    monkeypatch.setattr(policy, "AUTO_FLAT_BELOW", 2500)  # y (2,000) searched exactly, x (3,000) with an IVF
    ray = RayOptions(workers=2)
    for kw in ({"index": "auto"}, {"index": "IVF16,Flat", "dedup": True}, {"index": "IVF16,Flat", "margin": "absolute", "strategy": "forward"},
               {"index": "OPQ8,IVF16,PQ8", "nprobe": 4, "dedup": True}):  # re-ranked on the actors from the de-duplicated rows
        local = mine_stores(*sides, MineOptions(block_rows=BLOCK, **kw))
        on_ray = mine_stores(*sides, MineOptions(block_rows=BLOCK, engine=ray, **kw))
        same_pairs(local, on_ray)
        if kw["index"] == "auto":
            assert on_ray.engine["index"]["forward"] == "flat" and on_ray.engine["index"]["backward"].startswith("IVF256,SQfp16")


@needs_ray
def test_cli_engine_ray_writes_the_local_output_and_records_the_engine(runtime, sides, tmp_path):
    xs, ys = sides
    args = ("mine", xs.folder, ys.folder, "--index", "IVF16,SQfp16", "--nprobe", 4)
    res = run(*args, "--out", tmp_path / "local.tsv", "--report", tmp_path / "local.json")
    assert res.exit_code == 0, res.output
    res = run(*args, "--out", tmp_path / "ray.tsv", "--report", tmp_path / "ray.json", "--engine", "ray", "--workers", 2)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "Ray: 2 workers on 1 nodes" in res.output and "IVF16,SQfp16 (nprobe 4)" in res.output
    assert (tmp_path / "ray.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()
    assert len((tmp_path / "ray.tsv").read_text().splitlines()) > 100
    local, ray = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert local["engine"] == {"name": "local"}
    assert ray["engine"] == {"name": "ray", "workers": 2, "nodes": 1, "cpus_per_worker": 1.0,
                             "index": {"forward": "IVF16,SQfp16 (nprobe 4)", "backward": "IVF16,SQfp16 (nprobe 4)"}}
    assert {k: v for k, v in ray.items() if k not in ("engine", "seconds", "out", "report")} == \
           {k: v for k, v in local.items() if k not in ("engine", "seconds", "out", "report")}


@needs_ray
def test_a_graph_index_and_too_many_workers_are_one_line_errors(runtime, sides, tmp_path):
    base = ("mine", sides[0].folder, sides[1].folder, "--out", tmp_path / "o.tsv", "--engine", "ray")
    line = one_line_error(run(*base, "--index", "HNSW32", "--workers", 1))
    assert "--index HNSW32 is a graph" in line and "IVF" in line
    line = one_line_error(run(*base, "--workers", 5))
    assert "holds at most 2 workers" in line and "--workers" in line
    assert not (tmp_path / "o.tsv").exists()
