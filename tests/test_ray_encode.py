"""``encode corpus --engine ray`` (issue 12, the encode half): a pool of Ray encoder actors gives shard
files byte-identical to the local engine, manifests equal but for the ``engine`` record, resumes like
a local run, and survives a worker process that dies. One local Ray runtime (2 CPUs) serves the
module; the two-node loopback cluster with a worker killed mid-encode is a slow test.

Without ray installed only the tests of the missing-package error run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_sentences, one_line_error
from typer.testing import CliRunner

from bitextmine.cli import app
from bitextmine.encode_job import EncodeOptions, encode_corpus, encode_files
from bitextmine.encoder import EncoderOptions, load_encoder

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install -e '.[ray]')")
runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
OPTS = {"shard_size": 100, "chunk_size": 30}  # several chunks per shard, the last shard partly filled


def run(*args):
    return runner.invoke(app, [str(a) for a in args])




def same_folder(local: Path, ray: Path) -> dict:
    """Byte-identical shard files; manifests equal once the Ray one's ``engine`` record is taken out (returned)."""
    a, b = ({f.name: f.read_bytes() for f in sorted(d.iterdir())} for d in (local, ray))
    assert sorted(a) == sorted(b)
    for name in a:
        if name != "manifest.json":
            assert a[name] == b[name], name
    ma, mb = json.loads(a["manifest.json"]), json.loads(b["manifest.json"])
    engine = mb.pop("engine")
    assert "engine" not in ma and ma == mb
    return engine


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ray-in") / "in.txt"
    p.write_text("\n".join(make_sentences(430, seed=7)) + "\n")
    return p


@pytest.fixture(scope="module")
def reference(tiny_model, text, tmp_path_factory) -> Path:
    """The local engine's folder for ``text``."""
    out = tmp_path_factory.mktemp("ray-ref") / "local"
    encode_files([str(text)], out, EncoderOptions(model=str(tiny_model)), EncodeOptions(**OPTS))
    return out


# ---------------------------------------------------------------------------------------------
# without a Ray runtime (these run first, before the module's runtime starts)


def test_ray_not_installed_is_a_one_line_error(tiny_model, text, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    line = one_line_error(run("encode", "corpus", text, "--out", tmp_path / "o", "--model", tiny_model, "--engine", "ray"))
    assert "needs the ray package" in line and "bitextmine[ray]" in line
    assert not (tmp_path / "o").exists()


def test_ray_flags_without_the_ray_engine_are_refused(tiny_model, text, tmp_path):
    res = run("encode", "corpus", text, "--out", tmp_path / "o", "--model", tiny_model, "--workers", "2")
    assert res.exit_code == 2 and "--workers" in res.output and "--engine ray" in res.output
    assert not (tmp_path / "o").exists()


def test_workers_that_disagree_are_refused_before_any_work():
    """Mixed model fingerprints or numerics across actors (other files or hardware on some nodes), or a worker's own error."""
    from bitextmine import __version__
    from bitextmine.cli.shared import flag
    from bitextmine.errors import MismatchError, ModelError
    from bitextmine.ray_engine import check_agree

    n = {"device": "cpu", "dtype": "float32", "token_budget": 1024, "forward": "packed"}
    a = {"error": None, "version": __version__, "fingerprint": "aaaa", "dim": 32, "numerics": n}
    assert check_agree([a, dict(a)]) is a
    with pytest.raises(MismatchError, match="Ray workers 0 and 1 would compute different embeddings.*aaaa.*bbbb") as e:
        check_agree([a, {**a, "fingerprint": "bbbb"}])
    assert "--precision, --device and --batch-tokens" in e.value.message_for({p: flag(p) for p in e.value.params})
    with pytest.raises(MismatchError, match="bfloat16 on cpu"):
        check_agree([a, {**a, "numerics": {**n, "dtype": "bfloat16"}}])
    with pytest.raises(MismatchError, match="runs bitextmine 0.0.1"):
        check_agree([a, {**a, "version": "0.0.1"}])
    with pytest.raises(ModelError, match="on a Ray worker: model x: no such folder") as e:
        check_agree([a, {"error": ("ModelError", "{param} x: no such folder", ("model",))}])
    assert e.value.params == ("model",)


@needs_ray
def test_an_unreachable_address_is_a_one_line_error_within_seconds(tiny_model, text, tmp_path):
    import ray

    assert not ray.is_initialized()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    line = one_line_error(run("encode", "corpus", text, "--out", tmp_path / "o", "--model", tiny_model, "--engine", "ray",
                              "--address", f"127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 30
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in line and "--address" in line
    assert not (tmp_path / "o").exists() and not ray.is_initialized()


# ---------------------------------------------------------------------------------------------
# on one local Ray runtime


@pytest.fixture(scope="module")
def runtime():
    import ray

    # 4 logical CPUs (Ray's count, not the machine's): the shared pool's 2 actors and 2 more for a test's own pool
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def pool(runtime, tiny_model):
    """Two encoder actors shared by the library tests (the model loads once per actor)."""
    from bitextmine.ray_engine import RayEncoder, RayOptions

    with RayEncoder(EncoderOptions(model=str(tiny_model)), RayOptions(workers=2)) as enc:
        yield enc


@needs_ray
def test_cli_engine_ray_is_byte_identical_to_the_local_engine(runtime, tiny_model, text, tmp_path):
    """The CLI (default chunking: one chunk per shard here) with two actors, against the CLI's local run."""
    args = ("encode", "corpus", text, "--model", tiny_model, "--shard-size", 100)
    res = run(*args, "--out", tmp_path / "local")
    assert res.exit_code == 0, res.output
    res = run(*args, "--out", tmp_path / "ray", "--engine", "ray", "--workers", 2, "--cpus-per-worker", 1)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "Ray: 2 workers on 1 nodes" in res.output
    engine = same_folder(tmp_path / "local", tmp_path / "ray")
    assert engine == {"name": "ray", "workers": 2, "nodes": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}


@needs_ray
def test_library_pool_matches_the_local_engine_and_its_summary(pool, tiny_model, reference, text, tmp_path):
    local = load_encoder(EncoderOptions(model=str(tiny_model)))
    assert pool.numerics == local.numerics and pool.lm.fingerprint == local.lm.fingerprint and pool.dim == local.dim
    s = encode_corpus([str(text)], tmp_path / "ray", pool, EncodeOptions(**OPTS))
    sl = encode_corpus([str(text)], tmp_path / "local", local, EncodeOptions(**OPTS))
    assert (s.sentences, s.shards, s.resumed_shards, s.encoded) == (sl.sentences, sl.shards, 0, sl.encoded) == (430, 5, 0, 430)
    assert s.truncated == sl.truncated > 0 and s.read == sl.read  # truncations are counted on the actors
    same_folder(reference, tmp_path / "ray")
    texts = make_sentences(50, seed=9)
    assert pool.encode(texts).tobytes() == local.encode(texts).tobytes()


@needs_ray
def test_an_interrupted_ray_run_resumes_and_either_engine_finishes_it(pool, tiny_model, reference, text, tmp_path):
    seen = []

    def stop_in_the_third_shard(e):
        seen.append(e.n)
        if sum(seen) >= 250:
            raise KeyboardInterrupt

    for finish_with in ("ray", "local"):
        out = tmp_path / finish_with
        with pytest.raises(KeyboardInterrupt):
            encode_corpus([str(text)], out, pool, EncodeOptions(**OPTS), listener=stop_in_the_third_shard)
        seen.clear()
        m = json.loads((out / "manifest.json").read_text())
        assert not m["complete"] and len(m["shards"]) == 2 and m["engine"]["name"] == "ray"
        enc = pool if finish_with == "ray" else load_encoder(EncoderOptions(model=str(tiny_model)))
        s = encode_corpus([str(text)], out, enc, EncodeOptions(**OPTS))
        assert (s.resumed_shards, s.encoded, s.sentences) == (2, 230, 430)
        if finish_with == "ray":
            same_folder(reference, out)
        else:  # a local run finishing a Ray folder writes the local manifest: identical folders
            assert {f.name: f.read_bytes() for f in out.iterdir() if f.name != "manifest.json"} == \
                   {f.name: f.read_bytes() for f in reference.iterdir() if f.name != "manifest.json"}
            assert json.loads((out / "manifest.json").read_text()) == json.loads((reference / "manifest.json").read_text())


@needs_ray
def test_a_local_partial_folder_is_finished_by_the_ray_engine(pool, tiny_model, reference, text, tmp_path):
    out = tmp_path / "o"
    encode_files([str(text)], out, EncoderOptions(model=str(tiny_model)), EncodeOptions(**OPTS))
    m = json.loads((out / "manifest.json").read_text())  # as if killed after 3 shards
    for e in m["shards"][3:]:
        (out / e["file"]).unlink()
    m.update(complete=False, shards=m["shards"][:3])
    m.pop("count"), m.pop("read")
    (out / "manifest.json").write_text(json.dumps(m))
    s = encode_corpus([str(text)], out, pool, EncodeOptions(**OPTS))
    assert (s.resumed_shards, s.encoded) == (3, 130)
    same_folder(reference, out)


@needs_ray
def test_an_actor_process_that_dies_is_restarted_and_the_output_is_identical(pool, reference, text, tmp_path, monkeypatch):
    from bitextmine.ray_engine import DIE_ONCE_ENV

    marker = tmp_path / "died"
    monkeypatch.setenv(DIE_ONCE_ENV, str(marker))  # the first actor call to create it exits its process (os._exit)
    before = set(pool.pids())
    s = encode_corpus([str(text)], tmp_path / "ray", pool, EncodeOptions(**OPTS))
    assert marker.exists(), "no actor died: the test hook did not fire"
    assert len(set(pool.pids()) - before) == 1  # one actor runs in a new process, restarted by Ray
    assert s.encoded == 430
    same_folder(reference, tmp_path / "ray")


@needs_ray
def test_more_workers_than_the_cluster_holds_is_a_one_line_error(runtime, tiny_model, text, tmp_path):
    line = one_line_error(run("encode", "corpus", text, "--out", tmp_path / "o", "--model", tiny_model, "--engine", "ray",
                              "--workers", 5, "--cpus-per-worker", 1))
    assert "holds at most 4 workers" in line and "--workers" in line
    assert not (tmp_path / "o").exists()


@needs_ray
def test_a_model_missing_on_the_workers_is_their_one_line_model_error(runtime, text, tmp_path):
    line = one_line_error(run("encode", "corpus", text, "--out", tmp_path / "o", "--model", tmp_path / "no-such-model",
                              "--engine", "ray", "--workers", 1))
    assert "on a Ray worker" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# two nodes on loopback, a worker process killed mid-encode, then mining across both nodes
# (slow: two clusters' start-up)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(mark: str, roots: tuple[Path, ...] | list[Path] = ()) -> list:
    """Every process started for this test's cluster: they inherit the marker in their environment, or (Ray's
    agents, whose process titles overwrite what /proc shows of it) hold log files open under its temp dirs."""
    import psutil

    under = tuple(f"{r}/" for r in roots)
    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get("BITEXTMINE_TEST_CLUSTER") == mark or (under and any(f.path.startswith(under) for f in p.open_files())):
                found.append(p)
    return found


def _cmdline(p) -> str:
    import psutil

    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _stop(mark: str, roots: list[Path]) -> None:
    """Stop this cluster's processes by their ids (never `ray stop`: it stops every Ray on the machine)."""
    import psutil

    procs = _ours(mark, roots)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


@needs_ray
@pytest.mark.slow
def test_two_node_cluster_survives_a_killed_worker_mid_encode_and_mines_as_locally(tiny_model, tmp_path):
    text = tmp_path / "big.txt"
    text.write_text("\n".join(make_sentences(8_000, seed=11)) + "\n")
    ref = tmp_path / "local"
    encode_files([str(text)], ref, EncoderOptions(model=str(tiny_model)), EncodeOptions(shard_size=250))
    other = tmp_path / "other.txt"  # the other side to mine against: some of the same sentences among new ones
    other.write_text("\n".join(make_sentences(8_000, seed=11)[::4] + make_sentences(3_000, seed=12)) + "\n")
    tgt = tmp_path / "tgt"
    encode_files([str(other)], tgt, EncoderOptions(model=str(tiny_model)), EncodeOptions(shard_size=400))
    mine_args = ["--index", "IVF16,SQfp16", "--nprobe", "4", "--threshold", "0"]
    res = run("mine", ref, tgt, "--out", tmp_path / "local.tsv", *mine_args)
    assert res.exit_code == 0, res.output

    mark = f"bitextmine-{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "BITEXTMINE_TEST_CLUSTER": mark, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    roots = [Path(tempfile.mkdtemp(prefix="bmray")) for _ in range(2)]  # short: Ray's socket paths must fit 107 bytes
    logs = tmp_path / "logs"
    logs.mkdir()
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    procs = []
    try:
        with open(logs / "head.log", "wb") as log:
            procs.append(subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                                           "--temp-dir", str(roots[0]), *common], env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + 120
        while time.time() < deadline:  # the head answers
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        with open(logs / "worker.log", "wb") as log:
            procs.append(subprocess.Popen([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(roots[1]), *common],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        check = (f"import ray,time; ray.init(address='127.0.0.1:{port}', log_to_driver=False)\n"
                 "while len([n for n in ray.nodes() if n['Alive']]) < 2: time.sleep(0.5)\n")
        subprocess.run([sys.executable, "-c", check], env=env, timeout=120, check=True, capture_output=True)

        out = tmp_path / "ray"
        driver = subprocess.Popen([sys.executable, "-m", "bitextmine", "encode", "corpus", str(text), "--out", str(out),
                                   "--model", str(tiny_model), "--shard-size", "250", "--engine", "ray",
                                   "--address", f"127.0.0.1:{port}", "--workers", "2"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        killed = None
        deadline = time.time() + 300
        while killed is None and driver.poll() is None and time.time() < deadline:
            shards = json.loads((out / "manifest.json").read_text())["shards"] if (out / "manifest.json").exists() else []
            actors = [p for p in _ours(mark) if "_EncodeActor" in _cmdline(p)]
            if shards and len(actors) == 2:  # mid-encode: some shards committed, the job not done
                assert not json.loads((out / "manifest.json").read_text())["complete"]
                killed = actors[0].pid
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        output = driver.communicate(timeout=300)[0].decode(errors="replace")
        assert killed is not None, f"the job ended before a worker could be killed:\n{output}"
        assert driver.returncode == 0, output
        assert "Ray: 2 workers on 2 nodes" in output, output
        engine = same_folder(ref, out)
        assert engine["nodes"] == 2 and engine["workers"] == 2

        # mining on the same two nodes: one search actor a node, the database split over both
        mined = subprocess.run([sys.executable, "-m", "bitextmine", "mine", str(out), str(tgt), "--out", str(tmp_path / "ray.tsv"),
                                *mine_args, "--engine", "ray", "--address", f"127.0.0.1:{port}", "--workers", "2"],
                               env=env, capture_output=True, text=True, timeout=300)
        assert mined.returncode == 0, mined.stdout + mined.stderr
        assert "Ray: 2 workers on 2 nodes" in mined.stdout + mined.stderr, mined.stdout + mined.stderr
        assert len((tmp_path / "local.tsv").read_text().splitlines()) > 1000
        assert (tmp_path / "ray.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                p.terminate()
        _stop(mark, roots)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
