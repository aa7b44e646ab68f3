"""``bitextmine mine``: parse options, one call to :func:`bitextmine.mining.mine_files`, render."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.filter import FILTER_FLAGS, RejectsOpt, filter_options, given_flags, language_notes, show_filter_report, takes_filter_options
from bitextmine.cli.shared import (AddressOpt, CacheOpt, CpusPerWorkerOpt, Engine, ErrorsOpt, IdColumnOpt, KOpt, ModelOpt, NprobeOpt, PrecisionOpt,
                                   WorkersOpt, encoder_options, err, flag, friendly, parse_size, ray_options, reporting, set_search_threads)
from bitextmine.corpus import Errors
from bitextmine.margin import Margin, Strategy
from bitextmine.output import Format


@friendly
@takes_filter_options(rename={"dedup": "--filter-dedup"})
def mine_cmd(
    ctx: typer.Context,
    src: str = typer.Argument(..., help="Source side: a text file or an embedding folder from 'encode corpus'."),
    tgt: str = typer.Argument(..., help="Target side: a text file or an embedding folder."),
    out: str = typer.Option(..., "--out", "-o", help="Output file ('-' for stdout)."),
    model: str = ModelOpt,
    k: int = KOpt,
    margin: Margin = typer.Option(Margin.RATIO, "--margin", help="ratio (LASER default), distance, or absolute (cosine)."),
    strategy: Strategy = typer.Option(Strategy.MAX, "--strategy", help="max, forward, backward or intersect."),
    index: str = typer.Option("auto", "--index", help="flat (exact), auto (by size), or a FAISS factory string such as IVF4096,PQ64."),
    nprobe: Optional[int] = NprobeOpt,
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", help="Memory the auto index may hold, e.g. 6G or 500M (default: a quarter of RAM); it picks the codes: fp16, SQ8, then OPQ+PQ, then OPQ+PQ with the lists on disk in TMPDIR."),
    rerank: Optional[int] = typer.Option(None, "--rerank", help="Candidates per sentence re-scored exactly from the stored vectors (default: 4 x k, at least 16, for product codes: --index ...PQm and auto's PQ tiers; none for others); 0: off."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep pairs with margin >= this (default: the model's tuned threshold, when tuned for the same --margin and -k; else all)."),
    top: Optional[int] = typer.Option(None, "--top", help="Keep only the N best pairs."),
    refine_band: float = typer.Option(0.005, "--refine-band", min=0.0, max=0.5, help="With an approximate index and a threshold: pairs scoring up to this share above the threshold get their neighbourhoods searched again (exactly, or with 8x the lists probed where the index has many), so the threshold cuts where exact search would (widens by itself when scores move more; 0: off)."),
    dedup: bool = typer.Option(False, "--dedup", help="Mine unique sentences only (exact duplicates removed)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help="tsv (score<TAB>src<TAB>tgt), jsonl or parquet (default: parquet for a .parquet --out, else tsv)."),
    with_lines: bool = typer.Option(False, "--with-lines", help="Add source and target line numbers."),
    with_ids: bool = typer.Option(False, "--with-ids", help="Add source and target ids (inputs read with --id-column)."),
    id_column: bool = IdColumnOpt,
    errors: Errors = ErrorsOpt,
    precision: str = PrecisionOpt,
    cache: Optional[Path] = CacheOpt,
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    device: str = typer.Option("auto", "--device", help="auto (GPUs when present: encoder on CUDA, search with faiss-gpu if installed), cpu, cuda or cuda:N."),
    filter_: bool = typer.Option(False, "--filter", help="Filter the pairs as they are written, as 'bitextmine filter' would (its flags below; its --dedup is --filter-dedup here)."),
    rejects: Optional[str] = RejectsOpt,
    report: Optional[str] = typer.Option(None, "--report", help="Write the run's counts, threshold and (with --filter) the filter's counts per rule as JSON."),
    engine: Engine = typer.Option(Engine.LOCAL, "--engine", help="local: search in this process; ray: the shards' indexes on a pool of Ray actors (pip install 'bitextmine\\[ray]'), same pairs and scores; the folders must be readable by every node."),
    address: Optional[str] = AddressOpt,
    workers: Optional[int] = WorkersOpt,
    cpus_per_worker: Optional[float] = CpusPerWorkerOpt,
    filter_flags: Optional[dict] = None,
) -> None:
    """Mine translation pairs between SRC and TGT with margin scoring over FAISS k-NN, both ways."""
    from bitextmine.embed_cache import is_embedding_folder
    from bitextmine.errors import InputError
    from bitextmine.mining import MineOptions, check_threads, mine_files
    from bitextmine.output import PairsOutput, choose_format

    check_threads(threads)
    if not filter_ and (loose := given_flags(ctx, ["rejects", *(n for n, _, _ in FILTER_FLAGS if n != "dedup"), "filter_dedup"])):
        raise InputError(f"{flag(loose[0])} needs --filter")
    fopts = filter_options(**(filter_flags or {})) if filter_ else None
    opts = MineOptions(k=k, margin=margin, strategy=strategy, index=index, nprobe=nprobe, threshold=threshold, top=top, dedup=dedup,
                       refine_band=refine_band, memory_budget=parse_size(memory_budget, "memory_budget"), rerank=rerank,
                       filter=fopts, engine=ray_options(engine, address=address, workers=workers, cpus_per_worker=cpus_per_worker))
    output = PairsOutput(out, fmt, with_lines=with_lines, with_ids=with_ids)
    rej = None
    if rejects is not None:  # --format applies to both files; else parquet by name, else as --out
        rej = PairsOutput(rejects, choose_format(rejects, fmt, output.format, "rejects"), with_lines=with_lines, with_ids=with_ids)
    if device == "auto" and is_embedding_folder(src) and is_embedding_folder(tgt):
        encoder = None  # two folders need no model: the search is all there is (torch is not even imported)
        set_search_threads(threads)
    else:
        encoder = encoder_options(model, precision, threads=threads, device=device)
    with reporting() as rep:
        res = mine_files(src, tgt, opts, encoder=encoder, output=output, id_column=id_column, errors=errors, cache_dir=cache,
                         listener=rep, rejects=rej, report=report)
    thr = res.threshold
    t = Table(title=escape(f"mined → {out}"), show_header=False)
    t.add_row("pairs", f"{res.written:,}")
    t.add_row("sentences", f"{res.src_count:,} × {res.tgt_count:,}" + (" (unique)" if dedup else ""))
    shown = "none" if thr.value is None else f"{thr.value:g}" + (" (model default)" if thr.from_model else "")
    t.add_row("threshold", shown + (escape(f"; {thr.note}") if thr.note else ""))
    t.add_row("scoring", escape(f"{margin.value} margin, k={k}, {strategy.value}, index {res.index}"))
    if res.engine:
        e = res.engine
        used = "; ".join(f"{d} {i}" for d, i in e["index"].items())
        t.add_row("engine", escape(f"Ray: {e['workers']} workers on {e['nodes']} nodes; index {used}"))
    if res.refined:
        r = res.refined
        t.add_row("near threshold", f"{r['pairs']:,} pairs re-scored with neighbourhoods searched again ({r['src_rows']:,} + {r['tgt_rows']:,} rows, "
                  f"{'exactly' if r['search'] == 'flat' else r['search']}, "
                  f"band {r['band']:.0%}, largest score change {r['max_relative_change']:.2%}, {r['seconds']:.1f} s)")
    if res.filter is not None:
        t.add_row("mined", f"{res.mined:,} (before --filter)")
        show_filter_report(t, res.filter)
    t.add_row("time", f"{res.seconds:.1f} s")
    err.print(t)
    if res.filter is not None:
        language_notes(res.filter)
