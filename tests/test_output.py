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
