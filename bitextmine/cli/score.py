"""``bitextmine score``: margin scores of line-aligned pairs, one call to :func:`bitextmine.scoring.score_files`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import CacheOpt, ErrorsOpt, IdColumnOpt, KOpt, ModelOpt, NprobeOpt, PrecisionOpt, encoder_options, err, friendly, reporting
from bitextmine.corpus import Errors
from bitextmine.margin import Margin
from bitextmine.output import Format


@friendly
def score_cmd(
    src: str = typer.Argument(..., help="Source side: a text file (line n pairs with line n of TGT) or an embedding folder."),
    tgt: str = typer.Argument(..., help="Target side, line-aligned with SRC: a text file or an embedding folder."),
    out: str = typer.Option(..., "--out", "-o", help="Output file ('-' for stdout): one line per pair, in input order, score first."),
    model: str = ModelOpt,
    k: int = KOpt,
    margin: Margin = typer.Option(Margin.RATIO, "--margin", help="ratio (LASER default), distance, or absolute (cosine)."),
    reference_size: Optional[int] = typer.Option(None, "--reference-size", help="Neighbourhoods from N random sentences of each side instead of the whole files (for huge files; an approximation: scores rank the pairs but are not comparable with mine's)."),
    seed: int = typer.Option(0, "--seed", help="Draws the --reference-size sample."),
    index: str = typer.Option("auto", "--index", help="flat (exact), auto (by size), or a FAISS factory string such as IVF4096,PQ64."),
    nprobe: Optional[int] = NprobeOpt,
    fmt: Optional[Format] = typer.Option(None, "--format", help="tsv (score<TAB>src<TAB>tgt), jsonl or parquet (default: parquet for a .parquet --out, else tsv)."),
    with_lines: bool = typer.Option(False, "--with-lines", help="Add source and target line numbers."),
    with_ids: bool = typer.Option(False, "--with-ids", help="Add source and target ids (inputs read with --id-column)."),
    id_column: bool = IdColumnOpt,
    errors: Errors = ErrorsOpt,
    precision: str = PrecisionOpt,
    cache: Optional[Path] = CacheOpt,
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    device: str = typer.Option("auto", "--device", help="auto (GPUs when present), cpu, cuda or cuda:N."),
) -> None:
    """Margin-score the line-aligned pairs of SRC and TGT (LASER's score mode), to rank and cut a parallel corpus."""
    import numpy as np

    from bitextmine.mining import check_threads
    from bitextmine.output import PairsOutput
    from bitextmine.scoring import ScoreOptions, score_files

    check_threads(threads)
    opts = ScoreOptions(k=k, margin=margin, index=index, nprobe=nprobe, reference_size=reference_size, seed=seed)
    output = PairsOutput(out, fmt, with_lines=with_lines, with_ids=with_ids)
    with reporting() as rep:
        res = score_files(src, tgt, opts, encoder=encoder_options(model, precision, threads=threads, device=device),
                          output=output, id_column=id_column, errors=errors, cache_dir=cache, listener=rep)
    t = Table(title=escape(f"scored → {out}"), show_header=False)
    t.add_row("pairs", f"{res.written:,}")
    if res.blank_pairs:
        t.add_row("blank on both sides", f"{res.blank_pairs:,} lines (no pair, no output line)")
    if margin is Margin.ABSOLUTE:
        hood = "none needed (absolute margin)"
    elif res.reference is None:
        hood = f"the same files ({len(res.scores):,} sentences a side)"
    else:
        hood = f"sample of {res.reference:,} a side + partners, seed {seed} (approximate)"
    t.add_row("neighbourhoods", hood)
    t.add_row("scoring", f"{margin.value} margin, k={k}, index {index}")
    finite = res.scores[np.isfinite(res.scores)]
    if len(finite):
        q = np.quantile(finite, [0.1, 0.5, 0.9])
        t.add_row("scores", f"10% {q[0]:.4f} · median {q[1]:.4f} · 90% {q[2]:.4f}")
    t.add_row("time", f"{res.seconds:.1f} s")
    err.print(t)
