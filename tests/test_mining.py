"""The mining pipeline: mine_files (what the CLI does), mine_stores and mine_embeddings share one path."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bitextmine.encode_job import encode_corpus
from bitextmine.encoder import EncoderOptions
from bitextmine.errors import InputError
from bitextmine.events import Event
from bitextmine.mining import MineOptions, mine_embeddings, mine_files, mine_stores
from bitextmine.output import PairsOutput
from conftest import make_sentences



@pytest.fixture
def files(tmp_path):
    common = make_sentences(25, seed=21)
    src = common + make_sentences(15, seed=22)
    tgt = list(reversed(common)) + make_sentences(10, seed=23)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n")
    return tmp_path / "s.txt", tmp_path / "t.txt"


def test_options_are_checked_up_front() -> None:
    with pytest.raises(InputError, match="k must be at least 1"):
        MineOptions(k=0)
    with pytest.raises(InputError, match="threshold must be a number"):
        MineOptions(threshold=math.nan)
    with pytest.raises(InputError, match="top must be 0 or more"):
        MineOptions(top=-1)
    with pytest.raises(InputError, match="unknown margin"):
        MineOptions(margin="nope")
    assert MineOptions(strategy="fwd").strategy.value == "forward"


def test_three_levels_agree(enc, files, tmp_path) -> None:
    """mine_files == mine_stores on the cached folders == mine_embeddings on their arrays."""
    src, tgt = files
    events: list[Event] = []
    res = mine_files(src, tgt, MineOptions(k=3), encoder=enc, cache_dir=tmp_path / "c", listener=events.append,
                     output=PairsOutput(tmp_path / "p.tsv"))
    assert res.written == len(res.pairs) == len((tmp_path / "p.tsv").read_text().splitlines())
    assert [e.what for e in events if e.kind == "start"] == [f"encoding {src}", f"encoding {tgt}", "searching"]
    again = mine_stores(res.src, res.tgt, MineOptions(k=3))
    arrays = mine_embeddings(res.src.embeddings(np.arange(len(res.src))), res.tgt.embeddings(np.arange(len(res.tgt))), k=3)
    for other in (again.pairs, arrays):
        np.testing.assert_array_equal(res.pairs.src, other.src)
        np.testing.assert_array_equal(res.pairs.tgt, other.tgt)
        np.testing.assert_array_equal(res.pairs.score, other.score)
    assert res.threshold.source == "none"


def test_threshold_and_top_cut_after_selection(enc, files, tmp_path) -> None:
    src, tgt = files
    full = mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c")
    thr = float(full.pairs.score[10])
    cut = mine_files(src, tgt, MineOptions(threshold=thr), encoder=enc, cache_dir=tmp_path / "c")
    assert len(cut.pairs) == int((full.pairs.score >= thr).sum()) and cut.threshold.source == "given"
    top = mine_files(src, tgt, MineOptions(top=5), encoder=enc, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(top.pairs.score, full.pairs.score[:5])


def test_output_problems_fail_before_any_work(enc, files, tmp_path) -> None:
    src, tgt = files
    with pytest.raises(InputError, match="is a directory"):
        mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(tmp_path))
    assert not (tmp_path / "c").exists()  # nothing was embedded
    with pytest.raises(InputError, match="with_ids needs both sides"):
        mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(tmp_path / "x.tsv", with_ids=True))


def test_folders_need_no_model_and_use_their_saved_threshold(enc, files, tmp_path) -> None:
    src, tgt = files
    for p, name in ((src, "es"), (tgt, "et")):
        encode_corpus([str(p)], tmp_path / name, enc)
    # no encoder given and none loaded: both sides are folders
    res = mine_files(tmp_path / "es", tmp_path / "et", encoder=EncoderOptions(model="/nonexistent"))
    assert len(res.pairs) > 0 and res.threshold.value is None


def test_mine_embeddings_refuses_dedup() -> None:
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(InputError, match="dedup needs sentence texts"):
        mine_embeddings(x, x, dedup=True)


def test_threads_are_checked() -> None:
    from bitextmine.mining import check_threads

    for bad in (0, -1):
        with pytest.raises(InputError, match="threads must be at least 1") as e:
            check_threads(bad)
        assert e.value.param == "threads"
    check_threads(None)
    check_threads(2)
    with pytest.raises(InputError, match="threads must be at least 1, got -1"):
        mine_files("a.txt", "b.txt", encoder=EncoderOptions(model="/nonexistent", threads=-1))


def test_output_is_checked_and_locked_before_any_work(enc, files, tmp_path) -> None:
    """The output location (not an input, its folder writable, ids possible) fails before anything is
    embedded; a second run to a locked output is refused naming the holder's PID."""
    import os

    from bitextmine.fs import OutputLock

    src, tgt = files
    before = src.read_bytes()
    for out, expect in ((src, "is also an input"), (tmp_path / "no" / "p.tsv", "no such folder")):
        with pytest.raises(InputError, match=expect):
            mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(out))
    with pytest.raises(InputError, match="with_ids needs both sides encoded with id_column"):
        mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(tmp_path / "p.tsv", with_ids=True))
    with OutputLock(tmp_path / "p.tsv"), pytest.raises(InputError, match=f"p.tsv is in use by PID {os.getpid()}"):
        mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(tmp_path / "p.tsv"))
    assert not (tmp_path / "c").exists() and src.read_bytes() == before  # nothing embedded, no input touched
    res = mine_files(src, tgt, encoder=enc, cache_dir=tmp_path / "c", output=PairsOutput(tmp_path / "p.tsv"))
    assert res.written and not (tmp_path / ".p.tsv.lock").exists()  # the lock is released


def test_two_folders_mine_without_importing_torch(enc, files, tmp_path) -> None:
    """Mining two embedding folders needs no model: neither the library nor the CLI imports torch."""
    import os
    import subprocess
    import sys

    src, tgt = files
    for p, name in ((src, "es"), (tgt, "et")):
        encode_corpus([str(p)], tmp_path / name, enc)
    code = ("import sys; from bitextmine.cli import main; sys.argv = ['bitextmine', 'mine', sys.argv[1], sys.argv[2], '--out', sys.argv[3]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    # fp32 k-NN: on CPUs with bf16 units (AMX) the exact search measures torch's bf16 speed, which imports torch
    env = {**os.environ, "BITEXTMINE_KNN_PRECISION": "fp32"}
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "es"), str(tmp_path / "et"), str(tmp_path / "p.tsv")],
                       check=False, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "p.tsv").read_text().splitlines()) > 0
