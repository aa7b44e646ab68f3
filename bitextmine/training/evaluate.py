"""Dev evaluation during training: retrieval accuracy (p@1) of the encoder being trained.

Which sets (:func:`dev_sets`): Flores-200 when ``eval.flores_dir`` is given, the held-out split
when it selects checkpoints, the mining-style set (:mod:`~bitextmine.training.data.miningdev`:
held-out pairs among same-domain distractors, scored by mining F1) when it selects, and every
``eval.report_dirs`` Tatoeba folder (report only). Each set
is embedded with the inference :class:`~bitextmine.encoder.Encoder` (so dev scores match what
``encode`` will produce from the exported model) and scored by :func:`bitextmine.retrieval.accuracy`,
both directions, plain cosine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bitextmine.encoder import Encoder
from bitextmine.models.loader import LoadedModel
from bitextmine.models.recipe import Recipe
from bitextmine.retrieval import accuracy
from bitextmine.training.config import EvalConfig
from bitextmine.training.data.devsets import DevSet, flores_dev, split_dev, tatoeba_dev
from bitextmine.training.data.miningdev import MiningDevSet, mining_dev, mining_f1
from bitextmine.training.data.tokens import PreparedData


def dev_sets(e: EvalConfig, data: PreparedData) -> list[DevSet | MiningDevSet]:
    """The dev sets the recipe asks for, for ``e.languages`` (default: every trained language)."""
    langs = e.languages or data.languages
    sets: list[DevSet] = []
    if e.select_on == "flores" or e.flores_dir:
        sets += flores_dev(e.flores_dir, langs, e.max_pairs) if e.flores_dir else []
    if e.select_on == "split":
        sets += split_dev(data, [lang for lang in langs if lang in data.langs], e.max_pairs)
    if e.select_on == "mining":
        flores = [s for s in sets if s.name == "flores"]
        sets += mining_dev(data, [lang for lang in langs if lang in data.langs], e.max_pairs, flores)
    for d in e.report_dirs:
        sets += tatoeba_dev(d, langs, e.max_pairs)
    return sets


def evaluate(encoder: torch.nn.Module, tokenizer, recipe: Recipe, sets: list[DevSet | MiningDevSet], precision: str = "auto") -> dict:
    """Dev scores per set and language ({set: {"langs": {lang: [xx->en p@1, en->xx p@1] or [mining F1]}, "mean": m}})."""
    was_training = encoder.training
    encoder.eval()
    try:
        lm = LoadedModel(encoder, tokenizer, recipe, "training", "training", Path("."))
        enc = Encoder(lm, precision=precision)
        out: dict = {}
        cache: dict[str, np.ndarray] = {}

        def embed(texts: list[str]) -> np.ndarray:
            todo = list(dict.fromkeys(t for t in texts if t not in cache))
            if todo:
                for t, v in zip(todo, enc.encode(todo)):
                    cache[t] = v
            return np.stack([cache[t] for t in texts])

        for s in sets:
            entry = out.setdefault(s.name, {"langs": {}})
            if isinstance(s, MiningDevSet):
                f1, thr = mining_f1(s, embed)
                entry["langs"][s.lang] = [f1]
                entry.setdefault("thresholds", {})[s.lang] = thr
            else:
                entry["langs"][s.lang] = list(accuracy(embed(s.src), embed(s.tgt)))  # absolute margin: nearest by cosine
        for entry in out.values():
            entry["mean"] = float(np.mean([v for pair in entry["langs"].values() for v in pair]))
            finite = [t for t in entry.get("thresholds", {}).values() if np.isfinite(t)]
            if finite:
                entry["threshold"] = float(np.mean(finite))
        return out
    finally:
        encoder.train(was_training)
