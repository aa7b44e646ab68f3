import bz2
import gzip
import lzma

import pytest
import zstandard

from bitextmine.corpus import Errors, ReadStats, check_input, iter_lines
from bitextmine.errors import InputError

TEXT = "first line\n\n  \nsecond line\r\nthird\n"


@pytest.mark.parametrize("suffix,compress", [
    (".txt", lambda b: b),
    (".gz", gzip.compress),
    (".xz", lzma.compress),
    (".bz2", bz2.compress),
    (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_formats_and_line_numbers(tmp_path, suffix, compress):
    p = tmp_path / f"c{suffix}"
    p.write_bytes(compress(TEXT.encode()))
    stats = ReadStats()
    got = [(ln.line, ln.text) for ln in iter_lines([str(p)], stats=stats)]
    # blank lines are skipped but line numbers keep counting them
    assert got == [(1, "first line"), (4, "second line"), (5, "third")]
    assert stats.blank == 2 and stats.kept == 3 and stats.lines == 5


def test_id_column_and_multiple_inputs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x1\thello\nx2\tworld\n")
    b.write_text("y1\tbonjour\n")
    got = [(ln.input, ln.line, ln.id, ln.text) for ln in iter_lines([str(a), str(b)], id_column=True)]
    assert got == [(0, 1, "x1", "hello"), (0, 2, "x2", "world"), (1, 1, "y1", "bonjour")]


def test_id_column_without_tab(tmp_path):
    p = tmp_path / "a"
    p.write_text("x1\thello\nnotab\n")
    with pytest.raises(InputError, match=r"a:2: expected 'id<TAB>sentence'"):
        list(iter_lines([str(p)], id_column=True))
    stats = ReadStats()
    assert [ln.text for ln in iter_lines([str(p)], id_column=True, errors=Errors.SKIP, stats=stats)] == ["hello"]
    assert stats.missing_id == 1


def test_invalid_utf8_modes(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"good\nba\xffd\nalso good\n")
    with pytest.raises(InputError, match=r"bad.txt:2: invalid UTF-8"):
        list(iter_lines([str(p)]))
    st = ReadStats()
    assert [ln.line for ln in iter_lines([str(p)], errors=Errors.SKIP, stats=st)] == [1, 3]
    assert st.invalid_utf8_skipped == 1
    st = ReadStats()
    got = [ln.text for ln in iter_lines([str(p)], errors=Errors.REPLACE, stats=st)]
    assert got[1] == "ba\ufffdd" and st.invalid_utf8_replaced == 1


def test_bad_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        check_input(str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="is a directory"):
        check_input(str(tmp_path))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="is empty"):
        check_input(str(tmp_path / "empty.txt"))


def test_corrupt_gzip_is_an_input_error(tmp_path):
    p = tmp_path / "c.gz"
    p.write_bytes(gzip.compress(b"a\nb\n" * 1000)[:40])
    with pytest.raises(InputError, match="c.gz: the gzip stream ends early"):
        list(iter_lines([str(p)]))


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, lambda b: zstandard.ZstdCompressor().compress(b)])
def test_open_binary_stream_cut_short_is_an_input_error(tmp_path, compress):
    """Every reader of compressed input (the training data reader too) gets the error, never a shorter stream."""
    from bitextmine.corpus import open_binary

    data = compress(b"a sentence\n" * 5000)
    p = tmp_path / "c"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="stream ends early"):
        with open_binary(str(p)) as fh:
            list(fh)
