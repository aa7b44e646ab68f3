"""Writing mined pairs, and refusing bad outputs before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bitextmine.errors import InputError
from bitextmine.margin import Candidates
from bitextmine.output import Format, PairsOutput, check_output, write_pairs


class FakeStore:
    def __init__(self, texts, ids=None, inputs=1):
        self.texts, self.ids = texts, ids
        self.manifest = {"inputs": [{}] * inputs}

    @property
    def has_ids(self):
        return self.ids is not None

    def column(self, name, rows):
        vals = {"text": self.texts, "line": list(range(1, len(self.texts) + 1)), "id": self.ids, "input": [0] * len(self.texts)}[name]
        return [vals[i] for i in rows]


PAIRS = Candidates(np.array([1, 0]), np.array([0, 1]), np.array([1.25, 1.0]))


def test_tsv_with_lines_and_ids(tmp_path) -> None:
    src = FakeStore(["a\tb", "c"], ids=["s1", "s2"])
    tgt = FakeStore(["x", "y\nz"], ids=["t1", "t2"])
    out = tmp_path / "p.tsv"
    assert write_pairs(PairsOutput(out, "tsv", with_lines=True, with_ids=True), PAIRS, src, tgt) == 2
    assert out.read_text().splitlines() == ["1.250000\tc\tx\t2\t1\ts2\tt1", "1.000000\ta b\ty z\t1\t2\ts1\tt2"]


def test_jsonl(tmp_path) -> None:
    out = tmp_path / "p.jsonl"
    write_pairs(PairsOutput(out, Format.JSONL), PAIRS, FakeStore(["a", "c"]), FakeStore(["x", "y"]))
    assert json.loads(out.read_text().splitlines()[0]) == {"score": 1.25, "src": "c", "tgt": "x"}


def test_bad_outputs_fail_before_work(tmp_path) -> None:
    with pytest.raises(InputError, match="format must be one of tsv, jsonl"):
        PairsOutput(tmp_path / "x", "csv")
    with pytest.raises(InputError, match="is a directory"):
        check_output(PairsOutput(tmp_path), inputs=["a", "b"])
    with pytest.raises(InputError) as e:
        check_output(PairsOutput(tmp_path / "x", with_ids=True), stores=[FakeStore(["a"]), FakeStore(["b"], ids=["1"])])
    assert e.value.message_for({"with_ids": "--with-ids", "id_column": "--id-column"}) == "--with-ids needs both sides encoded with --id-column"


# every separator Python's csv module or str.splitlines treats as a row end, and the tab
BREAKS = ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\t"]


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_tsv_rows_stay_rows_for_csv_and_splitlines(tmp_path, brk) -> None:
    import csv

    src = FakeStore([f"left{brk}side", "plain"], ids=[f"s{brk}1", "s2"])
    tgt = FakeStore(["x", f"y{brk}z"], ids=["t1", "t2"])
    out = tmp_path / "p.tsv"
    write_pairs(PairsOutput(out, "tsv", with_ids=True), PAIRS, src, tgt)
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2
    for newline in ("", None):  # csv's own row splitting, and universal newlines
        with open(out, encoding="utf-8", newline=newline) as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        sp = " " * len(brk)  # each separator character becomes a space
        assert rows == [["1.250000", "plain", "x", "s2", "t1"], ["1.000000", f"left{sp}side", f"y{sp}z", f"s{sp}1", "t2"]]
    out_j = tmp_path / "p.jsonl"
    write_pairs(PairsOutput(out_j, Format.JSONL, with_ids=True), PAIRS, src, tgt)
    rows = [json.loads(ln) for ln in out_j.read_text(encoding="utf-8").split("\n") if ln]
    assert rows[1]["src"] == f"left{brk}side" and rows[1]["tgt"] == f"y{brk}z"  # JSONL keeps the text as it is


def test_output_location_is_checked(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "manifest.json").write_text("{}")
    bad = {
        tmp_path / "missing" / "p.tsv": "no such folder",
        tmp_path / "in.txt" / "p.tsv": "is not a folder",
        tmp_path: "is a directory",
        tmp_path / "in.txt": "is also an input",
        tmp_path / "." / "in.txt": "is also an input",
        tmp_path / "folder" / "manifest.json": "is inside the input folder",
        tmp_path / "folder" / "new.tsv": "is inside the input folder",
    }
    for path, expect in bad.items():
        with pytest.raises(InputError, match=expect) as e:
            check_output(PairsOutput(path), inputs=[str(tmp_path / "in.txt"), str(tmp_path / "folder")])
        assert e.value.param == "out"
    check_output(PairsOutput(tmp_path / "ok.tsv"), inputs=[str(tmp_path / "in.txt"), str(tmp_path / "folder")])
    check_output(PairsOutput("-"), inputs=[str(tmp_path / "in.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "in.txt"]  # the write probe left nothing


def test_with_ids_checked_before_the_sides_open(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(InputError, match=r"with_ids needs both sides encoded with id_column \(.*a.txt has no ids\)"):
        check_output(PairsOutput(tmp_path / "p.tsv", with_ids=True), inputs=[str(tmp_path / "a.txt")] * 2, id_column=False)
    check_output(PairsOutput(tmp_path / "p.tsv", with_ids=True), inputs=[str(tmp_path / "a.txt")] * 2, id_column=True)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    """A full disk (ENOSPC from the final fsync, as a small filesystem gives it): an InputError naming the
    file, the previous file intact, no temporary file left."""
    import errno
    import os

    out = tmp_path / "p.tsv"
    out.write_text("previous\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match=r"p.tsv: cannot write the pairs \(No space left on device\); the previous file is kept"):
        write_pairs(PairsOutput(out), PAIRS, FakeStore(["a", "c"]), FakeStore(["x", "y"]))
    monkeypatch.undo()
    assert out.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.tsv"]
    out.unlink()
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match="nothing was written"):
        write_pairs(PairsOutput(out), PAIRS, FakeStore(["a", "c"]), FakeStore(["x", "y"]))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
