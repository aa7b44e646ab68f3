"""Two (or more) models on the same benchmarks, side by side: the ablation behind a model choice in one call.

:func:`compare_models` runs Tatoeba retrieval (:mod:`.tatoeba`) and/or BUCC mining F1 (:mod:`.bucc`)
for each model with identical options and returns one :class:`ModelRun` per model;
:func:`side_by_side` turns them into rows (a metric, each model's value, the difference to the
first model). Every file set is checked once, before any model is loaded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitextmine.bench import bucc as B
from bitextmine.bench import tatoeba as T
from bitextmine.errors import InputError
from bitextmine.events import Listener

# (model name) -> (encoder, embedder for files without ids, embedder for id<TAB>sentence files)
OpenModel = Callable[[str], tuple[Any, T.Embedder, T.Embedder]]


@dataclass
class ModelRun:
    model: str
    fingerprint: str
    tatoeba: list[T.LangResult] = field(default_factory=list)
    tatoeba_averages: dict = field(default_factory=dict)
    bucc: list[B.PairResult] = field(default_factory=list)


@dataclass
class CompareSpec:
    """What to run: Tatoeba languages from a folder, and/or BUCC pairs from a folder (with their options)."""

    tatoeba: Mapping[str, tuple[Path, Path]] | None = None  # from tatoeba.find_tatoeba
    langs: list[str] = field(default_factory=list)  # from tatoeba.resolve_langs
    tatoeba_opts: T.TatoebaOptions = field(default_factory=T.TatoebaOptions)
    bucc: Mapping[str, Mapping[str, Any]] | None = None  # from bucc.find_bucc
    bucc_opts: B.BuccOptions = field(default_factory=B.BuccOptions)


def check_models(models: Sequence[str]) -> None:
    if len(models) < 2:
        raise InputError("compare needs at least two models")
    if len(set(models)) != len(models):
        raise InputError("the same model is named twice")


def compare_models(models: Sequence[str], spec: CompareSpec, open_model: OpenModel, *,
                   listener: Listener | None = None, on_model: Callable[[ModelRun], None] | None = None) -> list[ModelRun]:
    """Run ``spec`` for each of ``models`` (at least two, all different)."""
    check_models(models)
    if spec.tatoeba is None and spec.bucc is None:
        raise InputError("nothing to compare on: give a Tatoeba folder, a BUCC folder, or both")
    if spec.tatoeba is not None:
        T.check_files(spec.tatoeba, spec.langs)
    if spec.bucc is not None:
        for pair, splits in spec.bucc.items():
            B.choose_splits(pair, splits, spec.bucc_opts.tune_on, spec.bucc_opts.eval_on)
    runs = []
    for name in models:
        enc, embed, embed_ids = open_model(name)
        run = ModelRun(name, enc.lm.fingerprint)
        if spec.tatoeba is not None:
            run.tatoeba = T.run_tatoeba(spec.tatoeba, spec.langs, embed, spec.tatoeba_opts, listener=listener)
            run.tatoeba_averages = T.averages(run.tatoeba)
        if spec.bucc is not None:
            run.bucc = B.run_bucc(spec.bucc, embed_ids, spec.bucc_opts, listener=listener)
        runs.append(run)
        if on_model:
            on_model(run)
    return runs


def _bucc_rows(run: ModelRun) -> dict[str, float | None]:
    rows: dict[str, float | None] = {}
    for r in run.bucc:
        for s in [r.tune, *[e for e in r.evals if e.split != r.tune.split]]:
            if s.f1 is None:
                continue
            how = "self-tuned" if s.self_tuned else f"tuned on {s.tuned_on}"
            rows[f"BUCC {r.pair} {s.split} F1 ({how})"] = s.f1
            rows[f"BUCC {r.pair} {s.split} P"] = s.precision
            rows[f"BUCC {r.pair} {s.split} R"] = s.recall
    return rows


def metrics(run: ModelRun) -> dict[str, float | None]:
    """Every number of one run, by a label that is the same for every model (accuracies and F1 in 0..1)."""
    out: dict[str, float | None] = {}
    for name, a in run.tatoeba_averages.items():
        out[f"Tatoeba {name} mean ({a['languages']} languages)"] = a["mean"]
    for r in run.tatoeba:
        out[f"Tatoeba {r.lang}"] = r.mean
    out.update(_bucc_rows(run))
    return out


def side_by_side(runs: Sequence[ModelRun]) -> list[tuple[str, list[float | None], list[float | None]]]:
    """``(label, values per model, difference to the first model per other model)`` for every metric."""
    per = [metrics(r) for r in runs]
    labels = list(dict.fromkeys(k for m in per for k in m))
    rows = []
    for label in labels:
        vals = [m.get(label) for m in per]
        base = vals[0]
        diffs = [None if v is None or base is None else v - base for v in vals[1:]]
        rows.append((label, vals, diffs))
    return rows
