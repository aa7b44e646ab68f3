"""training.data.prepare and .cache: one preparation per fingerprint, shared safely by runs in one cache folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bitextmine.events import Event
from bitextmine.fs import TMP_MARK
from bitextmine.training.config import DataConfig
from bitextmine.training.data.cache import load_cache, save_cache
from bitextmine.training.data.prepare import prepare_data


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def _files(folder):
    folder.mkdir()
    (folder / "de-en.tsv").write_text("".join(f"der baum haus {i}\tthe tree house {i}\n" for i in range(30)) + "a\tb\tc\n", encoding="utf-8")
    (folder / "fr-en.tsv").write_text("".join(f"le chat maison {i}\tthe cat house {i}\n" for i in range(20)), encoding="utf-8")
    return DataConfig(train=[str(folder / "*-en.tsv")], max_length=16, dev_fraction=0.2, filters=False)


def _prepare(cfg, tokenizer, cache, events=None):
    return prepare_data(cfg, tokenizer, "tok", "", 0, cache, progress=events.append if events is not None else None)


def _same(a, b):
    assert a.fingerprint == b.fingerprint and a.layout == b.layout and a.report == b.report and a.languages == b.languages
    for lang in a.langs:
        for part in ("src", "tgt", "rtl"):
            assert np.array_equal(getattr(a.langs[lang], part).flat, getattr(b.langs[lang], part).flat)
            assert np.array_equal(getattr(a.langs[lang], part).offsets, getattr(b.langs[lang], part).offsets)
        assert a.langs[lang].dev == b.langs[lang].dev


def test_prepare_emits_events_writes_the_cache_once_and_reads_it_back(tmp_path, tokenizer):
    cfg = _files(tmp_path / "data")
    cache = tmp_path / "cache"
    events: list[Event] = []
    first = _prepare(cfg, tokenizer, cache, events)
    assert [(e.kind, e.data["lang"]) for e in events] == [("data", "de"), ("data", "fr")]
    assert events[0].data == {"lang": "de", "malformed": 1, "read": 30, "kept": 30, "dev": 6, "train": 24}
    assert [p.name for p in cache.iterdir()] == [first.fingerprint]  # no temporary folder left
    folder = cache / first.fingerprint
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert (folder / "meta.json").read_text(encoding="utf-8") == json.dumps(meta, ensure_ascii=False, indent=1)
    assert (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0] == json.dumps(["de", *first.langs["de"].dev[0]], ensure_ascii=False)
    again: list[Event] = []
    _same(_prepare(cfg, tokenizer, cache, again), first)
    assert again == []  # loaded, not prepared


def test_another_runs_work_in_progress_is_never_touched(tmp_path, tokenizer):
    cfg = _files(tmp_path / "data")
    cache = tmp_path / "cache"
    probe = _prepare(cfg, tokenizer, None)
    theirs = cache / f".{probe.fingerprint}{TMP_MARK}999-abcd"  # another process preparing the same data
    theirs.mkdir(parents=True)
    (theirs / "arrays.npz").write_bytes(b"half written")
    _same(_prepare(cfg, tokenizer, cache), probe)
    assert (theirs / "arrays.npz").read_bytes() == b"half written"
    assert (cache / probe.fingerprint / "meta.json").is_file()


def test_a_folder_published_meanwhile_is_kept(tmp_path, tokenizer):
    cfg = _files(tmp_path / "data")
    data = _prepare(cfg, tokenizer, None)
    folder = tmp_path / "cache" / data.fingerprint
    save_cache(data, folder)  # the other run finished first
    marker = (folder / "meta.json").stat().st_ino
    save_cache(data, folder)  # ours: dropped
    assert (folder / "meta.json").stat().st_ino == marker
    assert [p.name for p in folder.parent.iterdir()] == [data.fingerprint]
    _same(load_cache(folder), data)


def test_a_damaged_cache_is_rebuilt(tmp_path, tokenizer):
    cfg = _files(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _prepare(cfg, tokenizer, cache)
    arrays = cache / first.fingerprint / "arrays.npz"
    good = arrays.read_bytes()
    for damaged in (b"", good[: len(good) // 2], b"PK\x03\x04 not a zip"):
        arrays.write_bytes(damaged)
        assert load_cache(cache / first.fingerprint) is None
    events: list[Event] = []
    _same(_prepare(cfg, tokenizer, cache, events), first)
    assert len(events) == 2  # prepared again
    _same(load_cache(cache / first.fingerprint), first)
    assert [p.name for p in cache.iterdir()] == [first.fingerprint]
