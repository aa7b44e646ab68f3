"""Faults and bad inputs of `bitextmine train` (issue 10): each is refused with one line, a non-zero exit, no
traceback, and nothing already written is lost; a run killed at random points and resumed ends bit-identical."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bitextmine import fs
from bitextmine.cli import app
from bitextmine.errors import StoreError
from bitextmine.training import checkpoint as C
from bitextmine.training.runfolder import MARKER

runner = CliRunner()

EN = "the cat dog house tree river city car book water light night day sun moon green red blue small".split()
XX = {
    "de": "der katze hund haus baum fluss stadt auto buch wasser licht nacht tag sonne mond grün rot blau klein".split(),
    "fr": "le chat chien maison arbre rivière ville voiture livre eau lumière nuit jour soleil lune vert rouge bleu petit".split(),
}


def write_pairs(folder: Path, n: int = 120, seed: int = 0, langs=("de", "fr")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for lang in langs:
        words = XX[lang]
        with open(folder / f"{lang}-en.tsv", "w", encoding="utf-8") as fh:
            for _ in range(n):
                idx = [rng.randrange(len(EN)) for _ in range(rng.randint(4, 9))]
                fh.write(" ".join(words[i] for i in idx) + "\t" + " ".join(EN[i] for i in idx) + "\n")
    return folder


def recipe(tmp: Path, model: Path, data: str = "data", steps: int = 4, save_every: int = 2, eval_every: int = 2) -> Path:
    """A small DAP recipe; ``data`` is the folder of the pair files (relative: to the working directory)."""
    p = tmp / "recipe.toml"
    p.write_text("\n".join([
        "[model]", f'name = "{model}"', 'pooling = "cls"', 'prefix = "query: "',
        "[data]", f'train = ["{data}/*-en.tsv"]', "max_length = 24", "dev_max = 12", "filters = false",
        "[objective]", "rtl_weight = 0.5",
        "[optim]", f"steps = {steps}", "batch_size = 8", "lr = 1e-3", "warmup_steps = 1",
        "[eval]", 'select_on = "split"', f"every = {eval_every}", "max_pairs = 12",
        "[log]", "every = 1",
        "[run]", f"save_every = {save_every}", "seed = 3",
    ]) + "\n")
    return p


def train(*args, ok: bool = True):
    res = runner.invoke(app, ["train", *map(str, args)])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def one_error_line(res, *needles: str) -> str:
    """The run failed with exit 2 and exactly one 'error:' line holding every needle, no traceback."""
    text = res.output
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1, text + repr(res.exception)
    assert "Traceback" not in text
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def metrics(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("steps_per_s", None)
        r.pop("pairs_per_s", None)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    """A recipe reading ``data/*-en.tsv`` (relative), its data, and a run stopped after step 3 (last
    checkpoint: step 2, best: step 2), to copy per test."""
    tmp = tmp_path_factory.mktemp("faults_train")
    data = write_pairs(tmp / "data")
    cfg = recipe(tmp, tiny_model)
    stopped = tmp / "stopped"
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        train("--config", cfg, "--out", stopped, "--stop-after", "3")
    finally:
        os.chdir(cwd)
    assert (stopped / "checkpoints" / "last" / "state.pt").is_file() and (stopped / MARKER).is_file()
    return {"tmp": tmp, "data": data, "cfg": cfg, "stopped": stopped, "model": tiny_model}


@pytest.fixture(autouse=True)
def _in_env(env, monkeypatch):
    monkeypatch.chdir(env["tmp"])  # where the recipe's data/ is


def copy_run(env, dest: Path, monkeypatch) -> tuple[Path, Path]:
    """A copy of the stopped run and of its training files in ``dest``, made the working directory."""
    shutil.copytree(env["stopped"], dest / "run")
    shutil.copytree(env["data"], dest / "data")
    monkeypatch.chdir(dest)
    return dest / "run", env["cfg"]


# ----------------------------------------------------------------------------- --out and --overwrite


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", ["folder", "cwd", "file", "foreign_run"])
def test_out_that_is_not_a_run_folder_is_refused_and_left_intact(env, tmp_path, monkeypatch, kind, overwrite):
    target = tmp_path / "project"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "model").mkdir()  # what an export would have replaced
    (target / "model" / "weights.bin").write_bytes(b"\x00" * 10)
    out: Path | str = target
    if kind == "cwd":
        monkeypatch.chdir(target)
        out = "."
    elif kind == "file":
        out = target / "notes.txt"
    elif kind == "foreign_run":  # another tool's run: a config.toml and checkpoints/, not ours
        (target / "config.toml").write_text("[model]\nlr = 0.1\n")
        (target / "checkpoints").mkdir()
        (target / "checkpoints" / "epoch1.ckpt").write_bytes(b"x")
    before = tree(tmp_path)
    res = train("--config", env["cfg"], "--out", out, *(["--overwrite"] if overwrite else []), ok=False)
    line = one_error_line(res, "--out")
    assert ("is a file" in line) if kind == "file" else ("not a bitextmine run folder" in line)
    assert tree(tmp_path) == before  # nothing deleted, nothing written, no lock left


def test_overwrite_deletes_only_after_config_and_data_check(env, tmp_path, monkeypatch):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    before = tree(run)
    for args, msg in [
        (["--set", "data.train=['/nowhere/*-en.tsv']"], "matches no file"),
        (["--set", "model.name=/no/such/model"], "no such folder"),
        (["--set", "optim.steps=0"], "optim.steps must be >= 1"),
    ]:
        res = train("--config", cfg, "--out", run, "--overwrite", *args, ok=False)
        one_error_line(res, msg)
        assert tree(run) == before, args
    # with a valid config and data, --overwrite starts over in the run folder
    res = train("--config", cfg, "--out", run, "--overwrite", "--set", "optim.steps=1")
    assert "resuming" not in res.output
    assert (run / MARKER).is_file() and [r["step"] for r in metrics(run) if r["kind"] == "train"] == [1]
    assert json.loads((run / "model" / "training_info.json").read_text())["steps_run"] == 1


def test_a_run_folder_of_an_earlier_version_is_recognised(env, tmp_path, monkeypatch):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    (run / MARKER).unlink()  # earlier versions wrote no marker: our config.toml and checkpoints/ identify it
    res = train("--config", cfg, "--out", run, "--stop-after", "3")
    assert "resuming at step 2" in res.output and (run / MARKER).is_file()


def test_a_run_that_cannot_start_leaves_no_folder(env, tmp_path):
    for args in (["--set", "objective.rtl_layers=9"], ["--set", "data.train=['/nowhere/*-en.tsv']"]):
        res = train("--config", env["cfg"], "--out", tmp_path / "new", *args, ok=False)
        one_error_line(res)
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # the folder (with its data cache) and the lock are gone


def test_a_second_run_into_a_locked_folder_is_refused(env, tmp_path, monkeypatch):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    before = tree(run)
    with fs.OutputLock(Path(os.path.abspath(run))):
        for extra in ([], ["--overwrite"], ["--export-only"]):
            res = train("--config", cfg, "--out", run, *extra, ok=False)
            one_error_line(res, "in use by PID", str(os.getpid()))
            assert tree(run) == before
    lock = Path(os.path.abspath(run)).with_name(f".{run.name}.lock")
    lock.write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))  # a killed run's lock
    res = train("--config", cfg, "--out", run)  # stale: taken over
    assert "resuming at step 2" in res.output and not lock.exists()


# ----------------------------------------------------------------------------- safe loading


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("which", ["last/state.pt", "last/rng-rank0.pt", "last.old/state.pt", "best/model.pt"])
def test_a_pickle_that_would_run_code_is_refused(env, tmp_path, monkeypatch, which):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    marker = tmp_path / "PWNED"
    target = run / "checkpoints" / which
    if which.startswith("last.old"):
        (run / "checkpoints" / "last").rename(run / "checkpoints" / "last.old")  # killed between the two renames
    payload = {"version": 1, "step": 2, "model": _Evil(marker)} if "state" in which else {"torch": _Evil(marker)}
    target.unlink(missing_ok=True)
    torch.save(payload, target)
    args = ["--export-only"] if which.startswith("best") else []
    res = train("--config", cfg, "--out", run, *args, ok=False)
    one_error_line(res, str(target), "refused to load", "could run code")
    assert not marker.exists()
    with pytest.raises(StoreError, match="could run code"):
        C.safe_load(target, legacy_rng=True)
    assert not marker.exists()


def test_mlm_head_weights_that_would_run_code_are_refused(tmp_path):
    from bitextmine.errors import ModelError
    from bitextmine.training.rtl import load_mlm_head

    marker = tmp_path / "PWNED"
    torch.save({"lm_head.bias": _Evil(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match="cannot read its MLM-head weights safely"):
        load_mlm_head(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_one_line(env, tmp_path, monkeypatch, damage):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    p = run / "checkpoints" / "last" / "state.pt"
    data = p.read_bytes()
    p.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    res = train("--config", cfg, "--out", run, ok=False)
    one_error_line(res, str(p), "not a readable checkpoint")


def test_rng_files_of_earlier_versions_still_resume(tmp_path):
    import random as pyrandom

    old = {"torch": torch.get_rng_state(), "python": pyrandom.getstate(), "numpy": np.random.get_state()}  # version 1
    torch.save(old, tmp_path / "rng-rank0.pt")
    expect = (torch.rand(2), pyrandom.random(), np.random.rand())
    with pytest.raises(StoreError):  # NumPy's array is allowed for RNG files only
        C.safe_load(tmp_path / "rng-rank0.pt")
    C.set_rng_state(C.safe_load(tmp_path / "rng-rank0.pt", legacy_rng=True))
    assert torch.equal(torch.rand(2), expect[0]) and pyrandom.random() == expect[1] and np.random.rand() == expect[2]
    # the current format is tensors and plain numbers only
    torch.save(C.rng_state(), tmp_path / "new.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "new.pt") == []
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "rng-rank0.pt") != []


# ----------------------------------------------------------------------------- changed data on resume


@pytest.mark.parametrize("change, needle", [
    ("edit", "de: de-en.tsv changed"),
    ("add", "languages added: ru"),
    ("remove", "languages removed: fr"),
])
def test_changed_training_data_on_resume_is_refused(env, tmp_path, monkeypatch, change, needle):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    data = tmp_path / "data"
    if change == "edit":
        lines = (data / "de-en.tsv").read_text(encoding="utf-8").splitlines()
        lines[5] = "der hund\tthe dog"
        (data / "de-en.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif change == "add":
        (data / "ru-en.tsv").write_text("".join(f"кот дом {i}\tthe cat house {i}\n" for i in range(60)), encoding="utf-8")
    else:
        (data / "fr-en.tsv").unlink()
    before = tree(run / "checkpoints")
    res = train("--config", cfg, "--out", run, ok=False)
    one_error_line(res, "training data changed", needle, "--overwrite", "--out")
    assert tree(run / "checkpoints") == before
    assert (run / "config.toml").read_text() == (env["stopped"] / "config.toml").read_text()


def test_touched_training_files_still_resume(env, tmp_path, monkeypatch):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    for p in (tmp_path / "data").iterdir():
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10 ** 9))  # content kept
    res = train("--config", cfg, "--out", run)
    assert "resuming at step 2" in res.output


# ----------------------------------------------------------------------------- resume and the thread count


def test_resume_uses_the_checkpoints_thread_count(env, tmp_path):
    """The CPU thread count changes the last bits of the gradients; a resume under another default count
    (OMP_NUM_THREADS, CPU affinity) uses the count the checkpoint recorded, and ends bit-identical."""
    keep = torch.get_num_threads()
    first, other = (2, 1)
    try:
        torch.set_num_threads(first)
        full = tmp_path / "full"
        train("--config", env["cfg"], "--out", full, "--set", "eval.select_on='none'")
        killed = tmp_path / "killed"
        train("--config", env["cfg"], "--out", killed, "--set", "eval.select_on='none'", "--stop-after", "3")
        torch.set_num_threads(other)  # the resumed process's default differs
        train("--config", env["cfg"], "--out", killed, "--set", "eval.select_on='none'")
        assert same_weights(full / "model", killed / "model")
        assert metrics(full) == metrics(killed)
        assert C.safe_load(killed / "checkpoints" / "last" / "state.pt")["threads"] == first
        # asking for another count explicitly is allowed, with a note
        res = train("--config", env["cfg"], "--out", killed, "--set", "eval.select_on='none'", "--set", f"run.threads={other}")
        assert f"resuming with {other} CPU threads, the checkpoint was written with {first}" in res.output
    finally:
        torch.set_num_threads(keep)


# ----------------------------------------------------------------------------- export-only


def test_export_only_takes_checkpoints_best_and_says_exported(env, tmp_path, monkeypatch):
    run, cfg = copy_run(env, tmp_path, monkeypatch)
    st = C.safe_load(run / "checkpoints" / "last" / "state.pt")
    assert st["step"] == 2 and st["best"]["step"] == 2
    # best/ is newer than last/ (killed between saving the best and the periodic checkpoint)
    w = {k: v.clone() for k, v in st["model"].items()}
    name = next(k for k in w if k.startswith("encoder.") and w[k].is_floating_point())
    w[name] += 1.0
    C.save_best(run / "checkpoints", w, {"step": 3, "score": 0.99, "set": "split", "eval": {}})
    res = train("--config", cfg, "--out", run, "--export-only")
    assert "exported" in res.output and "trained" not in res.output and "time" not in res.output
    info = json.loads((run / "model" / "training_info.json").read_text())
    assert info["step"] == 3 and info["best"]["step"] == 3
    exported = weights(run / "model")
    assert np.array_equal(exported[name.removeprefix("encoder.")], w[name].numpy())


# ----------------------------------------------------------------------------- kill -9 / resume, 20 times


def _cli_child(argv: list[str], threads: int, log: str) -> None:
    """``bitextmine <argv>`` in a process forked from a preloaded server: output to ``log``, ``threads`` as
    the process's default CPU thread count (what OMP_NUM_THREADS would give a fresh process)."""
    fh = open(log, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (the process ends with os._exit)
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    torch.set_num_threads(threads)
    sys.argv = ["bitextmine", *argv]
    from bitextmine.cli import main

    try:
        main()
    except SystemExit as e:
        fh.flush()
        os._exit(e.code if isinstance(e.code, int) else 1)
    fh.flush()
    os._exit(0)


def _subprocess(argv: list[str], threads: int, log: Path) -> subprocess.Popen:
    """A real ``python -m bitextmine`` process with OMP_NUM_THREADS = threads, its output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "bitextmine", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env)


def _checkpoint_step(run: Path) -> int:
    meta = C.find_last(run / "checkpoints")
    return int(meta["state"]["step"]) if meta else 0


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _wait_for_training(run: Path, before: int | None, alive, timeout: float = 300.0) -> None:
    """Until the process has started its training loop: it rewrites metrics.jsonl (a new file) right then."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and alive():
        if _inode(run / "metrics.jsonl") not in (None, before):
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_at_random_points_and_resume_is_bit_identical(env, tmp_path):
    """20 SIGKILLs at seeded random times (most while training, evaluating or checkpointing, some while
    starting up), the resumed processes' default thread count alternating between 2 and 1, then a run to
    the end: the weights, metrics and selected checkpoint equal an uninterrupted run's, bit for bit.

    The reference is a real ``python -m bitextmine`` process; the others are forked from a server that
    has imported bitextmine and transformers once (multiprocessing's forkserver), which saves an
    interpreter start and seconds of imports per kill."""
    import multiprocessing as mp

    cfg = recipe(tmp_path, env["model"], str(env["data"]), steps=12, save_every=1, eval_every=3)
    argv = ["train", "--config", str(cfg)]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["bitextmine.cli", "bitextmine.cli.train", "bitextmine.training.loop", "test_faults_train",
                                "transformers.models.bert.modeling_bert", "transformers.models.auto.modeling_auto",
                                "transformers.models.auto.tokenization_auto"])  # transformers imports lazily: seconds per run

    def launch(out: Path | None, threads: int, log: Path):
        args = argv + ["--out", str(out)] if out is not None else ["train", "--help"]
        p = ctx.Process(target=_cli_child, args=(args, threads, str(log)))
        p.start()
        return p

    # the uninterrupted reference, a real process; meanwhile the server starts (its imports)
    ref = _subprocess(argv + ["--out", str(tmp_path / "ref")], 2, tmp_path / "ref.log")
    p = launch(None, 2, tmp_path / "help.log")
    p.join()
    assert p.exitcode == 0, (tmp_path / "help.log").read_text()
    _wait_for_training(tmp_path / "ref", None, lambda: ref.poll() is None)
    t0 = time.monotonic()
    assert ref.wait() == 0, (tmp_path / "ref.log").read_text()
    t_train = time.monotonic() - t0  # the kill times are drawn from this

    rng = random.Random(10)
    run, log, t_start, window = tmp_path / "killed", [], None, t_train / 10
    for i in range(20):
        saved = _checkpoint_step(run)
        threads = 2 if not saved or i % 2 == 0 else 1
        out = tmp_path / f"cycle{i}.log"
        t0, before = time.monotonic(), _inode(run / "metrics.jsonl")
        p = launch(run, threads, out)
        if t_start is not None and rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, t_start))  # while loading the model, the data or the checkpoint
        else:
            _wait_for_training(run, before, p.is_alive)
            t_start = t_start or time.monotonic() - t0
            time.sleep(rng.uniform(0.0, window))
        ended = p.exitcode
        p.kill()
        p.join()
        assert ended in (None, 0), (ended, out.read_text())  # killed, or finished on its own
        now = _checkpoint_step(run)
        if now < 12:  # aim at about one checkpoint per kill, whatever the machine's speed
            window *= 1.3 if now == saved else 0.6 if now > saved + 1 else 1.0
        log.append((i, threads, "finished" if ended == 0 else "killed", now))
    p = launch(run, 2 if not _checkpoint_step(run) else 1, tmp_path / "final.log")
    p.join()
    assert p.exitcode == 0, (tmp_path / "final.log").read_text()
    assert same_weights(tmp_path / "ref" / "model", run / "model"), log
    assert metrics(tmp_path / "ref") == metrics(run), log
    a, b = (json.loads((r / "model" / "training_info.json").read_text()) for r in (tmp_path / "ref", run))
    assert a["step"] == b["step"] and a["best"] == b["best"], log
    assert len({e[3] for e in log if 0 < e[3] < 12}) >= 3, log  # resumed from several checkpoints mid-run
    print("cycles (i, threads, status, checkpoint step after it):", log)
