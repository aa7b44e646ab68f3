"""``bitextmine bench compare A B [...]``: the same benchmarks for several models, one table (:mod:`bitextmine.bench.compare`)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.bench import _open, _pct, _split_list, _start, _warn, bench_app
from bitextmine.cli.shared import (CacheOpt, DeviceOpt, ErrorsOpt, JsonOpt, PrecisionOpt, ThreadsOpt, err, friendly,
                                   out_console, reporting)
from bitextmine.corpus import Errors
from bitextmine.embed_cache import EmbeddingCache


@bench_app.command("compare")
@friendly
def compare_cmd(
    models: list[str] = typer.Argument(..., help="Two or more models (--model values: default, e5-small, folders, Hugging Face ids); the first is the reference."),
    tatoeba: Optional[Path] = typer.Option(None, "--tatoeba", help="Folder with LASER's Tatoeba files: retrieval accuracy per language."),
    langs: str = typer.Option("dap36", "--langs", help="Tatoeba languages: dap36, dap14, all, or a comma list."),
    bucc: Optional[Path] = typer.Option(None, "--bucc", help="Folder (or archives) of BUCC 2018: mining F1 with bench bucc's defaults."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="BUCC pairs, comma separated (default: every pair found)."),
    per_language: bool = typer.Option(False, "--per-language", help="Also list every Tatoeba language, not just the averages."),
    json_out: Optional[Path] = JsonOpt,
    precision: str = PrecisionOpt,
    errors: Errors = ErrorsOpt,
    cache: Optional[Path] = CacheOpt,
    threads: Optional[int] = ThreadsOpt,
    device: str = DeviceOpt,
) -> None:
    """Run Tatoeba and/or BUCC for every model with the same settings and print them side by side."""
    import time

    from bitextmine.bench import bucc as B
    from bitextmine.bench import tatoeba as T
    from bitextmine.bench.common import run_header, write_json
    from bitextmine.bench.compare import CompareSpec, check_models, compare_models, side_by_side

    check_models(models)
    t_start, cache_dir = _start(cache, threads, {"json": (json_out, False)})
    spec = CompareSpec()
    if tatoeba is not None:
        spec.tatoeba = T.find_tatoeba(tatoeba)
        spec.langs = T.resolve_langs(langs, spec.tatoeba)
    if bucc is not None:
        spec.bucc = B.find_bucc(bucc, pairs=_split_list(pairs), cache_dir=cache_dir)
    with reporting(on_event=_warn) as rep:
        def open_model(name: str):
            enc, embed = _open(name, precision, threads, device, cache_dir, False, errors, rep)
            return enc, embed, EmbeddingCache(enc, cache_dir, errors, id_column=True, listener=rep)

        runs = compare_models(models, spec, open_model, listener=rep,
                              on_model=lambda r: err.print(f"done: {r.model} [{r.fingerprint}]", markup=False))
    t = Table(title="models side by side (accuracy and F1 in %)", title_justify="left", caption_justify="left")
    t.add_column("metric")
    for r in runs:
        t.add_column(escape(r.model), justify="right")
    for r in runs[1:]:
        t.add_column(escape(f"Δ {r.model}"), justify="right")
    for label, vals, diffs in side_by_side(runs):
        if label.startswith("Tatoeba ") and "mean (" not in label and not per_language:
            continue
        t.add_row(escape(label), *[_pct(v) for v in vals], *["—" if d is None else f"{100 * d:+.2f}" for d in diffs])
    t.caption = "\n".join(f"{escape(r.model)}: fingerprint {r.fingerprint}" for r in runs) + \
        "\nTatoeba: cosine nearest neighbour, mean of xx→eng and eng→xx; BUCC: ratio margin, k=4, max, exact search, unique sentences."
    out_console().print(t)
    if json_out is not None:
        doc = {"benchmark": "compare", **run_header(), "models": [
            {"model": r.model, "fingerprint": r.fingerprint, "tatoeba": [{**asdict(x), "mean": x.mean} for x in r.tatoeba],
             "tatoeba_averages": r.tatoeba_averages, "bucc": r.bucc} for r in runs],
            "params": {"tatoeba": str(tatoeba) if tatoeba else None, "langs": spec.langs, "bucc": str(bucc) if bucc else None},
            "seconds": time.perf_counter() - t_start}
        err.print(f"results → {write_json(json_out, doc)}")
