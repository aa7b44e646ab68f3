"""bench bucc files: the layouts find_bucc accepts (folders and .tar.bz2 archives), archive extraction
into the cache (published whole, reused, nothing left behind on failure), gold files, submission files,
and errors that name their parameter."""
from __future__ import annotations

import io
import tarfile

import pytest
from bucc_cases import make_bucc_data, make_split, write_archive, write_files

from bitextmine.bench.bucc import (
    extract_archive,
    find_bucc,
    read_gold,
    write_pairs_file,
)
from bitextmine.errors import InputError


@pytest.fixture
def bucc_data(tmp_path):
    return make_bucc_data(tmp_path)


def test_read_gold(tmp_path):
    (tmp_path / "g").write_text("zh-1\ten-7\n\nzh-2\ten-3\n")
    assert read_gold(tmp_path / "g") == {("zh-1", "en-7"), ("zh-2", "en-3")}
    (tmp_path / "bad").write_text("zh-1 en-7\n")
    with pytest.raises(InputError, match="bad:1"):
        read_gold(tmp_path / "bad")
    (tmp_path / "blank").write_text("\n\n")
    with pytest.raises(InputError, match="no gold pairs"):
        read_gold(tmp_path / "blank")


def test_find_bucc_layouts(bucc_data, tmp_path):
    data, _ = bucc_data
    found = find_bucc(data, cache_dir=tmp_path / "c")
    assert sorted(found) == ["de-en", "fr-en"]
    assert sorted(found["de-en"]) == ["sample", "training"]
    assert found["de-en"]["training"].gold.name == "de-en.training.gold"
    assert list(find_bucc(data, pairs=["fr"], cache_dir=tmp_path / "c")) == ["fr-en"]
    with pytest.raises(InputError, match="pair ru-en not found"):
        find_bucc(data, pairs=["ru-en"], cache_dir=tmp_path / "c")


def test_find_bucc_errors_name_their_parameter(bucc_data, tmp_path):
    data, _ = bucc_data
    with pytest.raises(InputError) as e:
        find_bucc(data / "README.md")
    assert e.value.param == "data"
    assert e.value.message_for({"data": "--data"}) == f"{data / 'README.md'}: is a file; --data needs the folder holding the BUCC files or archives"
    with pytest.raises(InputError) as e:
        find_bucc(data, pairs=["de-fr"], cache_dir=tmp_path / "c")
    assert e.value.param == "pairs"
    assert e.value.message_for({"pairs": "--pairs"}) == "--pairs: 'de-fr' is not a BUCC pair such as zh-en (English is always the second language)"
    assert str(e.value).startswith("pairs: 'de-fr'")  # no CLI flag in the library's own text


def bucc_dirs(cache):
    root = cache / "bucc2018"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_archives_are_extracted_once_and_unpacked_files_win(tmp_path):
    data, cache = tmp_path / "d", tmp_path / "c"
    data.mkdir()
    sample, _ = make_split("zh", "sample", 5)
    write_archive(data / "bucc2018-zh-en.sample-gold.tar.bz2", sample, "zh-en")
    split = find_bucc(data, cache_dir=cache)["zh-en"]["sample"]
    assert split.archive == data / "bucc2018-zh-en.sample-gold.tar.bz2" and split.gold is not None
    assert split.src.read_text() == sample["zh-en.sample.zh"]
    (folder,) = bucc_dirs(cache)
    assert folder.startswith("bucc2018-zh-en.sample-gold-")
    assert sorted(p.name for p in (cache / "bucc2018" / folder).iterdir()) == [
        ".complete", "zh-en.sample.en", "zh-en.sample.gold", "zh-en.sample.zh"]
    stamp = (cache / "bucc2018" / folder / ".complete").stat().st_mtime_ns
    assert extract_archive(data / "bucc2018-zh-en.sample-gold.tar.bz2", cache) == cache / "bucc2018" / folder
    assert (cache / "bucc2018" / folder / ".complete").stat().st_mtime_ns == stamp  # reused, not extracted again
    # the same files unpacked next to the archive are used as they are
    write_files(data / "zh-en", sample)
    split = find_bucc(data, cache_dir=tmp_path / "other")["zh-en"]["sample"]
    assert split.archive is None and split.src == data / "zh-en" / "zh-en.sample.zh"
    assert bucc_dirs(tmp_path / "other") == []


def test_archive_members_are_taken_by_base_name_only(tmp_path):
    archive = tmp_path / "bucc2018-de-en.sample.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for name, text in (("../../de-en.sample.de", "de-1\tHallo\n"), ("/abs/de-en.sample.en", "en-1\tHello\n"),
                           ("bucc2018/de-en/notes.txt", "not data\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    out = extract_archive(archive, tmp_path / "c")
    assert sorted(p.name for p in out.iterdir()) == [".complete", "de-en.sample.de", "de-en.sample.en"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucc2018-de-en.sample.tar.bz2", "c"]


@pytest.mark.parametrize("content,expect", [
    (b"not an archive", "cannot read the archive"),
    (None, "holds no BUCC files"),
])
def test_a_failed_extraction_leaves_nothing_behind(tmp_path, content, expect):
    archive = tmp_path / "bucc2018-de-en.sample-gold.tar.bz2"
    if content is None:
        write_archive(archive, {"README": "nothing to see\n"}, "de-en")
    else:
        archive.write_bytes(content)
    with pytest.raises(InputError, match=expect):
        extract_archive(archive, tmp_path / "c")
    assert bucc_dirs(tmp_path / "c") == []


def test_write_pairs_file(tmp_path):
    path = tmp_path / "out" / "zh-en.test.pairs.tsv"
    assert write_pairs_file(path, [("zh-1", "en-2"), ("zh-3", "en-4")]) == 2
    assert path.read_bytes() == b"zh-1\ten-2\nzh-3\ten-4\n"
    assert write_pairs_file(path, iter([("zh-5", "en-6")])) == 1  # replaced whole
    assert path.read_bytes() == b"zh-5\ten-6\n"
    assert write_pairs_file(path, []) == 0 and path.read_bytes() == b""
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_failed_pairs_file_keeps_the_old_one(tmp_path):
    path = tmp_path / "p.tsv"
    write_pairs_file(path, [("a", "b")])

    def pairs():
        yield ("c", "d")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_pairs_file(path, pairs())
    assert path.read_bytes() == b"a\tb\n" and [p.name for p in tmp_path.iterdir()] == ["p.tsv"]
