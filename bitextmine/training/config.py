"""The typed training configuration: dataclasses read from TOML, overridden with ``key=value``.

A recipe file (``train/configs/*.toml``) has one table per section below; every field has a
default, so a recipe names only what it changes. ``--set optim.lr=3e-5`` overrides one field
(the value is read as a TOML literal, falling back to a plain string). The resolved config is
saved with the run (``config.toml``) and its fingerprint decides whether a rerun may resume.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from bitextmine.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "default"  # --model spec: "default", a local folder or a Hugging Face id
    pooling: str | None = None  # "cls" (the paper) or "mean" (E5); None keeps the model's recipe
    prefix: str | None = None  # text put before every sentence; None keeps the model's recipe ("query: " for E5)
    mlp: bool = False  # paper option: Linear+Tanh on the pooled vector for the TR loss, training only (not exported)
    freeze_embeddings: bool = False  # freeze the word-embedding matrix (250k x 384 for the default model): big CPU saving
    disable_dropout: bool = False  # set every dropout probability to 0 (the released code's --disable_dropout)
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~30% more compute


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # parallel TSV files "xx<TAB>en" (globs allowed), one language each
    languages: list[str] = field(default_factory=list)  # keep only these language codes; empty = every file given
    max_length: int = 32  # tokens per sentence in training, special tokens and prefix included (paper: 32)
    max_pairs_per_language: int = 1_000_000  # cap after filtering and dev split (paper: 1M)
    dev_fraction: float = 0.1  # held-out dev split per language: min(dev_max, dev_fraction x pairs) (paper)
    dev_max: int = 10_000  # ... capped at this many pairs
    filters: bool = True  # apply the paper's filters (urls/@, <=3 tokens, length ratio, >64 tokens, identical, overlap, duplicates)
    sampling_alpha: float = 1.0  # language sampling p(l) ~ pairs(l)^alpha: 1 = proportional (paper), 0 = uniform
    cache: bool = True  # keep the tokenised, filtered data (keyed by a fingerprint of files, tokenizer and settings)
    cache_dir: str = ""  # where; "" = <run.output_dir>/data (several runs may share one folder)


@dataclass
class ObjectiveConfig:
    temperature: float = 0.05  # TR softmax temperature (paper: 0.05, i.e. scale 20)
    margin: float = 0.0  # additive margin subtracted from the positive cosine (0 in the released scripts)
    direction: str = "forward"  # "forward" (xx queries over en candidates, the paper) or "both" (average of the two)
    rtl_weight: float = 1.0  # loss = TR + rtl_weight x RTL; paper equation 1.0, released code 0.1; 0 = TR only (no head)
    rtl_layers: int = 2  # K: transformer layers of the RTL head, copied from the encoder's last K layers (paper best: 2)
    rtl_vocab: str = "english"  # "english": predict only token ids seen on the English side of the data; "full": whole vocabulary
    hard_negatives: int = 0  # extra English candidates per pair mined with the starting model (training/data/hardneg.py); 0 = in-batch only
    hard_negative_pool: int = 4000  # pairs per language mined for them (and then trained on): the first of the shuffled training pairs
    hard_negative_depth: int = 4  # negatives are drawn from this many nearest valid English sentences


@dataclass
class OptimConfig:
    steps: int = 100_000  # optimizer steps (paper: 100k)
    batch_size: int = 1024  # pairs per optimizer step over all processes and accumulation steps (paper: 8 x 128)
    grad_accumulation: int = 1  # micro-batches per step; in-batch negatives = batch_size / grad_accumulation
    lr: float = 5e-5  # AdamW peak learning rate (paper: 5e-5)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (not on biases and LayerNorm)
    warmup_steps: int = 0  # linear warm-up, then linear decay to 0 at `steps`
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class EvalConfig:
    every: int = 500  # optimizer steps between dev evaluations (0 = only at the end); best checkpoint kept (paper: 500)
    select_on: str = "flores"  # dev set that picks the best checkpoint: "flores", "split" (held-out pairs), "mining" (held-out pairs among same-domain distractors, mining F1; + Flores pairs when flores_dir is set) or "none" (last)
    flores_dir: str = ""  # folder of Flores-200 files <lang>_<Script>.txt (line-aligned with eng_Latn.txt)
    languages: list[str] = field(default_factory=list)  # dev languages (codes as in data); empty = all trained ones available
    max_pairs: int = 1000  # dev pairs per language (first lines of flores / of the held-out split)
    max_tokens: int = 0  # truncation when encoding dev sentences; 0 = data.max_length (the paper evaluates at 32)
    report_dirs: list[str] = field(default_factory=list)  # extra report-only sets: folders of tatoeba.xxx-eng.{xxx,eng}; never used for selection
    patience: int = 0  # early stopping: stop after this many evaluations without a better select_on score (0 = never)
    at_start: bool = False  # also evaluate the starting weights (step 0): they are kept when no trained step beats them


@dataclass
class LogConfig:
    every: int = 10  # optimizer steps between metric lines in metrics.jsonl
    tensorboard: bool = False  # also write TensorBoard event files (needs the tensorboard package)


@dataclass
class RunConfig:
    output_dir: str = "runs/dap"  # run folder: config, data cache, checkpoints, metrics.jsonl, exported model
    seed: int = 0
    precision: str = "auto"  # autocast: auto (bf16 on CUDA/bf16-capable CPUs, fp16 on older GPUs), fp32, bf16, fp16
    save_every: int = 500  # optimizer steps between resumable checkpoints (and at the end)
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    export_max_tokens: int = 0  # max_tokens written into the exported recipe; 0 = the base model's


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ---------------------------------------------------------------- checks
    def validate(self) -> "TrainConfig":
        o, d, op, e, r = self.objective, self.data, self.optim, self.eval, self.run
        checks = [
            (self.model.pooling in (None, "cls", "mean"), "model.pooling must be cls or mean"),
            (o.direction in ("forward", "both"), "objective.direction must be forward or both"),
            (o.temperature > 0, "objective.temperature must be > 0"),
            (o.rtl_weight >= 0, "objective.rtl_weight must be >= 0"),
            (o.rtl_layers >= 1, "objective.rtl_layers must be >= 1"),
            (o.rtl_vocab in ("english", "full"), "objective.rtl_vocab must be english or full"),
            (o.hard_negatives >= 0 and o.hard_negative_pool >= 2 and o.hard_negative_depth >= max(1, o.hard_negatives),
             "objective: hard_negatives >= 0, hard_negative_pool >= 2 and hard_negative_depth >= hard_negatives"),
            (bool(d.train), "data.train: no training files given"),
            (d.max_length >= 8, "data.max_length must be at least 8"),
            (0 <= d.dev_fraction < 1, "data.dev_fraction must be in [0, 1)"),
            (d.dev_max >= 0 and d.max_pairs_per_language > 0, "data.dev_max must be >= 0 and max_pairs_per_language > 0"),
            (d.sampling_alpha >= 0, "data.sampling_alpha must be >= 0"),
            (op.steps >= 1, "optim.steps must be >= 1"),
            (op.batch_size >= 2, "optim.batch_size must be >= 2 (in-batch negatives)"),
            (op.grad_accumulation >= 1, "optim.grad_accumulation must be >= 1"),
            (op.batch_size % op.grad_accumulation == 0, "optim.batch_size must be divisible by optim.grad_accumulation"),
            (op.lr > 0 and op.warmup_steps >= 0 and op.max_grad_norm >= 0, "optim: lr > 0, warmup_steps >= 0, max_grad_norm >= 0"),
            (len(op.betas) == 2, "optim.betas must have two values"),
            (e.select_on in ("flores", "split", "mining", "none"), "eval.select_on must be flores, split, mining or none"),
            (e.select_on != "flores" or bool(e.flores_dir), "eval.select_on = flores needs eval.flores_dir"),
            (e.every >= 0 and e.max_pairs >= 2, "eval.every must be >= 0 and eval.max_pairs >= 2"),
            (e.patience >= 0, "eval.patience must be >= 0"),
            (e.patience == 0 or (e.every > 0 and e.select_on != "none"),
             "eval.patience needs eval.every > 0 and a selection set (eval.select_on flores, split or mining)"),
            (r.precision in ("auto", "fp32", "bf16", "fp16"), "run.precision must be auto, fp32, bf16 or fp16"),
            (r.save_every >= 1 and self.log.every >= 1, "run.save_every and log.every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self

    @property
    def tr_only(self) -> bool:
        return self.objective.rtl_weight == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (logging, paths and threads excluded)."""
        d = self.to_dict()
        d.pop("log")
        for k in ("output_dir", "threads"):
            d["run"].pop(k)
        d["eval"].pop("report_dirs")
        d["eval"].pop("patience")  # when to stop, not what a step computes: a resume may change it
        d["eval"].pop("at_start")
        if not d["objective"]["hard_negatives"]:  # off: the fingerprint of runs made before these settings existed
            for k in ("hard_negatives", "hard_negative_pool", "hard_negative_depth"):
                d["objective"].pop(k)
        d["data"].pop("cache_dir")
        d["data"].pop("cache")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# -------------------------------------------------------------------- reading


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int -> float allowed), raising ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid value")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):  # a single string where a list is expected
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp in (float, str) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected a {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kw = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table")
            kw[name] = _build(tp, value, key)
        else:
            kw[name] = _coerce(value, tp, key)
    return cls(**kw)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-5"`` -> (["optim", "lr"], 3e-05); values are TOML literals, else plain strings."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key=value, e.g. optim.lr=3e-5")
    key, raw = item.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {item}: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML recipe (or start from defaults), apply ``key=value`` overrides, validate.

    Relative paths in ``data.train``, ``eval.flores_dir`` and ``eval.report_dirs`` are taken from
    the current directory (recipes are run from the project root).
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config {path}: invalid TOML ({e})") from None
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {k} is not a table")
        node[keys[-1]] = value
    return _build(TrainConfig, data, "").validate()


# -------------------------------------------------------------------- writing


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dumps_toml(d: dict) -> str:
    """A two-level dict (sections of scalars and lists) as TOML; None values are left out (= default)."""
    out = []
    for section, values in d.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            if v is not None:
                out.append(f"{k} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)
