"""``bitextmine bench``: BUCC 2018 mining F1 and Tatoeba retrieval accuracy (a thin layer over
:mod:`bitextmine.bench`)."""
from __future__ import annotations

import math
from dataclasses import asdict
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import (CacheOpt, DeviceOpt, ErrorsOpt, JsonOpt, KOpt, ModelOpt, NprobeOpt, PlotsOpt, PrecisionOpt,
                                   ThreadsOpt, encoder_options, err, friendly, out_console, reporting, set_search_threads)
from bitextmine.corpus import Errors
from bitextmine.embed_cache import EmbeddingCache
from bitextmine.margin import Margin, Strategy

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: BUCC 2018 mining F1 and Tatoeba retrieval accuracy.")


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _thr(v: Optional[float]) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _start(cache: Optional[Path], threads: Optional[int], outputs: dict, **scoring) -> tuple[float, Path]:
    """Check the scoring options and where results go (before any work) and resolve the cache:
    (start time, cache folder). ``outputs``: {param: (path or None, is a folder)}."""
    from bitextmine.bench.common import check_location
    from bitextmine.fs import default_cache_dir
    from bitextmine.mining import MineOptions, check_threads

    t_start = time.perf_counter()
    check_threads(threads)
    MineOptions(**scoring)
    for param, (path, folder) in outputs.items():
        if path is not None:
            check_location(path, param, folder=folder)
    return t_start, cache or default_cache_dir()


def _open(model: str, precision: str, threads: Optional[int], device: str, cache_dir: Path, id_column: bool, errors: Errors, listener):
    """The encoder and the embedding cache a benchmark embeds its files through."""
    from bitextmine.encode_job import open_encoder

    enc = open_encoder(encoder_options(model, precision, threads=threads, device=device), listener)
    set_search_threads(threads)
    return enc, EmbeddingCache(enc, cache_dir, errors, id_column=id_column, listener=listener)


def _warn(e) -> None:
    """A benchmark's ``warning`` events, one line each on stderr."""
    if e.kind == "warning":
        err.print(f"[bold yellow]warning:[/] {escape(e.data.get('message', ''))}", markup=True, soft_wrap=True)


def _split_list(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@bench_app.command("bucc")
@friendly
def bucc_cmd(
    data: Path = typer.Option(..., "--data", help="Folder with the BUCC 2018 files (xx-en.<split>.{xx,en,gold}), per-pair subfolders, or the bucc2018-xx-en.<split>[-gold].tar.bz2 archives."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Comma list such as de-en,fr-en,ru-en,zh-en (default: every pair found)."),
    model: str = ModelOpt,
    tune_on: Optional[str] = typer.Option(None, "--tune-on", help="Split to tune the threshold on (default: sample if it has gold, else training)."),
    eval_on: Optional[str] = typer.Option(None, "--eval-on", help="Split(s) to apply it to, comma separated (default: training when tuning on sample and it exists, else the tuning split itself). A split without gold (test) gets a mined-pairs file."),
    k: int = KOpt,
    margin: Margin = typer.Option(Margin.RATIO, "--margin", help="ratio (LASER, default), distance, or absolute (cosine)."),
    strategy: Strategy = typer.Option(Strategy.MAX, "--strategy", help="max (LASER's BUCC setting), forward, backward or intersect."),
    index: str = typer.Option("flat", "--index", help="flat (exact, default), auto, or a FAISS factory string."),
    nprobe: Optional[int] = NprobeOpt,
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Mine unique sentences (LASER's --unify)."),
    json_out: Optional[Path] = JsonOpt,
    plots: Optional[Path] = PlotsOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the mined-pairs files of splits without gold (default: the current folder)."),
    save_threshold: bool = typer.Option(False, "--save-threshold", help="Store the tuned threshold (mean over pairs) in the model's recipe, with the margin and k it was tuned for, so 'mine' with that scoring uses it by default."),
    precision: str = PrecisionOpt,
    errors: Errors = ErrorsOpt,
    cache: Optional[Path] = CacheOpt,
    threads: Optional[int] = ThreadsOpt,
    device: str = DeviceOpt,
) -> None:
    """BUCC 2018: mine each split, tune the margin threshold for the best F1, report P/R/F1."""
    from bitextmine.bench import bucc
    from bitextmine.bench.common import model_info, run_header, write_json
    from bitextmine.threshold import save_threshold as save_model_threshold

    t_start, cache_dir = _start(cache, threads, {"json": (json_out, False), "plots": (plots, True), "out": (out, True)},
                                 k=k, margin=margin, strategy=strategy)
    found = bucc.find_bucc(data, pairs=_split_list(pairs), cache_dir=cache_dir)
    evals = _split_list(eval_on)
    plan = {p: bucc.choose_splits(p, s, tune_on, evals) for p, s in found.items()}  # bad splits fail before the model loads
    with reporting(on_event=_warn) as rep:
        enc, embed = _open(model, precision, threads, device, cache_dir, True, errors, rep)
        opts = bucc.BuccOptions(k=k, margin=margin, strategy=strategy, index=index, nprobe=nprobe, dedup=dedup,
                                tune_on=tune_on, eval_on=evals)
        console = out_console()
        results = bucc.run_bucc(found, embed, opts, out_dir=out, plots_dir=plots,
                                listener=rep,
                                embedder_seconds=lambda: embed.seconds,
                                on_pair=lambda r: console.print(_bucc_table(r, enc, opts, found[r.pair])))
    saved = None
    if save_threshold:
        thr = bucc.tuned_threshold(results)
        path = save_model_threshold(enc.lm.folder, enc.lm.recipe, thr, margin, k)
        saved = {"threshold": thr, "recipe": str(path), "pairs": [r.pair for r in results]}
        err.print(f"saved threshold {thr:.4f} (tuned on {', '.join(f'{r.pair} {r.tune.split}' for r in results)}) "
                  f"to {path}; 'mine' with this model now keeps pairs scoring at least it unless --threshold is given")
    for r in results:
        for s in r.evals:
            if s.submission:
                err.print(f"{r.pair} {s.split}: no gold; {s.extracted:,} mined pairs at threshold {_thr(s.threshold)} → {s.submission}")
        for p in r.plots:
            err.print(f"plot → {p}")
    if json_out is not None:
        doc = {
            "benchmark": "bucc2018",
            **run_header(),
            "model": model_info(enc),
            "params": {"data": str(data), "pairs": list(found), "splits": {p: {"tune_on": t, "eval_on": e} for p, (t, e) in plan.items()},
                       "k": k, "margin": margin.value, "strategy": strategy.value, "index": index, "nprobe": nprobe,
                       "dedup": dedup, "precision": precision, "errors": errors.value, "cache": str(cache_dir)},
            "encoded_now": embed.encoded,
            "results": results,
            "saved_threshold": saved,
            "seconds": time.perf_counter() - t_start,
        }
        err.print(f"results → {write_json(json_out, doc)}")


def _bucc_table(r, enc, opts, splits) -> Table:
    t = Table(title=f"BUCC 2018 {r.pair}", title_justify="left", caption_justify="left")
    for col in ("split", "threshold from", "P", "R", "F1", "threshold", "pairs", "gold", "time"):
        t.add_column(col, justify="right" if col in ("P", "R", "F1", "threshold", "pairs", "gold", "time") else "left")
    notes = []
    tune = r.tune.split
    rows = [r.tune] + [s for s in r.evals if s.split != tune]
    for s in rows:
        t_s = f"{s.seconds:.1f} s"
        if s.gold is not None:
            b = s.best
            if s.split == tune:
                same = any(e.split == tune for e in r.evals)
                label = f"tuned on {tune} (= eval split)" if same else f"tuned on {tune} (tuning split)"
                t.add_row(s.split, label, _pct(s.precision), _pct(s.recall), _pct(s.f1), _thr(s.threshold), f"{s.extracted:,}", f"{s.gold:,}", t_s)
                if same:
                    t.add_row(s.split, f"best threshold on {s.split}", _pct(b["precision"]), _pct(b["recall"]), _pct(b["f1"]),
                              _thr(b["threshold"]), f"{b['extracted']:,}", f"{s.gold:,}", "")
                    others = [x for x, sp in splits.items() if x != tune and sp.gold is not None]
                    notes.append(f"tune-on = eval-on = {tune}: the threshold was tuned on the split it is scored on, "
                                 "so both rows are the best-threshold (optimistic) F1" +
                                 (f" ({tune} is the only split with gold here)." if not others else
                                  f"; --tune-on {tune} --eval-on {others[0]} gives the honest number."))
            else:
                t.add_row(s.split, f"tuned on {tune}", _pct(s.precision), _pct(s.recall), _pct(s.f1), _thr(s.threshold), f"{s.extracted:,}", f"{s.gold:,}", t_s)
                t.add_row(s.split, f"best threshold on {s.split}", _pct(b["precision"]), _pct(b["recall"]), _pct(b["f1"]),
                          _thr(b["threshold"]), f"{b['extracted']:,}", f"{s.gold:,}", "")
        else:
            t.add_row(s.split, f"tuned on {tune}", "—", "—", "—", _thr(s.threshold), f"{s.extracted:,}", "no gold", t_s)
            notes.append(f"{s.split}: no gold file; mined pairs written to {s.submission}")
    lm = enc.lm
    notes.append(f"model {escape(lm.source)} \\[{lm.fingerprint}]; {opts.margin.value} margin, k={opts.k}, {opts.strategy.value}, "
                 f"index {opts.index}{', unique sentences' if opts.dedup else ''}; P/R/F1 in %, time = embedding (if not cached) + mining")
    t.caption = "\n".join(notes)
    return t


@bench_app.command("tatoeba")
@friendly
def tatoeba_cmd(
    data: Path = typer.Option(..., "--data", help="Folder with LASER's Tatoeba files (tatoeba.xxx-eng.xxx, tatoeba.xxx-eng.eng)."),
    langs: str = typer.Option("dap36", "--langs", help="dap36 (XTREME's 36 languages), dap14 (the 14 XNLI languages), all, rest (all but dap36), or a comma list of codes (mixing allowed: dap14,jpn)."),
    model: str = ModelOpt,
    margin: Margin = typer.Option(Margin.ABSOLUTE, "--margin", help="absolute (cosine nearest neighbour, default), or ratio/distance to rescore the k nearest like LASER's xSIM."),
    k: int = KOpt,
    json_out: Optional[Path] = JsonOpt,
    plots: Optional[Path] = PlotsOpt,
    precision: str = PrecisionOpt,
    errors: Errors = ErrorsOpt,
    cache: Optional[Path] = CacheOpt,
    threads: Optional[int] = ThreadsOpt,
    device: str = DeviceOpt,
) -> None:
    """Tatoeba: accuracy of nearest-neighbour retrieval xx→eng and eng→xx per language, and averages."""
    from bitextmine.bench import tatoeba
    from bitextmine.bench.common import model_info, run_header, write_json

    t_start, cache_dir = _start(cache, threads, {"json": (json_out, False), "plots": (plots, True)}, k=k, margin=margin)
    found = tatoeba.find_tatoeba(data)
    chosen = tatoeba.resolve_langs(langs, found)
    tatoeba.check_files(found, chosen)  # before the model loads
    with reporting() as rep:
        enc, embed = _open(model, precision, threads, device, cache_dir, False, errors, rep)
        opts = tatoeba.TatoebaOptions(margin=margin, k=k)
        results = tatoeba.run_tatoeba(found, chosen, embed, opts, listener=rep)
    avgs = tatoeba.averages(results)
    console = out_console()
    t = Table(title="Tatoeba retrieval accuracy (%)", title_justify="left", caption_justify="left")
    for col in ("lang", "pairs", "xx→eng", "eng→xx", "mean", "time"):
        t.add_column(col, justify="left" if col == "lang" else "right")
    for r in results:
        t.add_row(r.lang, f"{r.pairs:,}", f"{100 * r.xx2eng:.1f}", f"{100 * r.eng2xx:.1f}", f"{100 * r.mean:.1f}", f"{r.seconds:.1f} s")
    t.add_section()
    for name, a in avgs.items():
        t.add_row(f"[bold]{name} average[/]", f"{a['languages']} langs", f"{100 * a['xx2eng']:.1f}", f"{100 * a['eng2xx']:.1f}",
                  f"[bold]{100 * a['mean']:.1f}[/]", "")
    lm = enc.lm
    how = "cosine nearest neighbour" if margin is Margin.ABSOLUTE else f"{margin.value} margin over the {k} nearest"
    t.caption = (f"model {escape(lm.source)} \\[{lm.fingerprint}]; {how}; a retrieval is correct when it returns the aligned line.\n"
                 "dap36 = XTREME's 36 Tatoeba languages; dap14 = the 14 XNLI languages (DAP's 14-language setting).")
    console.print(t)
    if plots is not None:
        from bitextmine.bench.plots import plot_tatoeba

        path = plot_tatoeba(results, Path(plots) / "tatoeba.png", averages=avgs)
        err.print(f"plot → {path}")
    if json_out is not None:
        doc = {
            "benchmark": "tatoeba",
            **run_header(),
            "model": model_info(enc),
            "params": {"data": str(data), "langs": langs, "languages": chosen, "margin": margin.value, "k": k,
                       "precision": precision, "errors": errors.value, "cache": str(cache_dir)},
            "encoded_now": embed.encoded,
            "results": [{**asdict(r), "mean": r.mean} for r in results],
            "averages": avgs,
            "seconds": time.perf_counter() - t_start,
        }
        err.print(f"results → {write_json(json_out, doc)}")
