"""The ``bitextmine`` command line: a thin Typer layer over the library.

This is the only module that prints results and turns errors into exit codes. Every command
parses options, calls one library function, and reports.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bitextmine import __version__
from bitextmine.corpus import STDIN, Errors
from bitextmine.errors import BitextmineError
from bitextmine.margin import Margin, Strategy

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find parallel sentences in large monolingual corpora.")
encode_app = typer.Typer(no_args_is_help=True, help="Embed sentences into sharded Arrow files.")
app.add_typer(encode_app, name="encode")
from bitextmine.cli_bench import bench_app  # noqa: E402  (its commands import from this module lazily)

app.add_typer(bench_app, name="bench")
from bitextmine.cli_train import train_command  # noqa: E402

app.command("train")(train_command)
err = Console(stderr=True, highlight=False)

ModelOpt = typer.Option("default", "--model", "-m", help="'default' (packaged multilingual-E5-small, offline), a Hugging Face id, or a local transformers / sentence-transformers / bitextmine folder.")
PrecisionOpt = typer.Option("auto", "--precision", help="auto (bf16 where the CPU/GPU supports it), fp32, bf16 or fp16.")
IdColumnOpt = typer.Option(False, "--id-column", help="Lines are 'id<TAB>sentence' (BUCC layout).")
DeviceOpt = typer.Option("auto", "--device", help="auto (a CUDA GPU when present, else the CPU), cpu, cuda or cuda:N.")
ErrorsOpt = typer.Option(Errors.STRICT, "--errors", help="Invalid UTF-8: strict (stop with file:line), replace, or skip.")


def friendly(fn: Callable) -> Callable:
    """Turn library errors into a one-line message and exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except BitextmineError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished shards are kept: rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


class Reporter:
    """Progress for long jobs: a rich bar on a terminal, a plain log line every ``every`` s otherwise."""

    def __init__(self, what: str, total: int | None, unit: str = "sentences", every: float = 10.0) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err)
            self.task = self.bar.add_task(what, total=total, rate="")

    def __enter__(self) -> "Reporter":
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.t0, 1e-9)
        if self.bar:
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} {self.unit}/s")
        elif now - self.last >= self.every:
            self.last = now
            of = f"/{self.total:,}" if self.total else ""
            err.print(f"{self.what}: {self.done:,}{of} {self.unit} ({rate:,.0f}/s)")


def count_lines(paths: list[str]) -> int | None:
    """Lines in plain (uncompressed) files, for the progress total; None if unknown (stdin, compressed)."""
    total = 0
    for p in paths:
        if p == STDIN:
            return None
        with open(p, "rb") as fh:
            head = fh.read(4)
            if head[:2] == b"\x1f\x8b" or head[:3] in (b"\xfd7z", b"BZh") or head == b"\x28\xb5\x2f\xfd":
                return None
            fh.seek(0)
            total += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
    return total


def _load(model: str, precision: str, token_budget: Optional[int], pooling=None, prefix=None, max_tokens=None, threads=None, device="auto"):
    import torch

    from bitextmine.encode import Encoder
    from bitextmine.models.loader import load_model

    if threads:
        torch.set_num_threads(threads)
    with err.status(f"loading model {model}") if err.is_terminal else _null():
        lm = load_model(model, device=device, pooling=pooling, prefix=prefix, max_tokens=max_tokens)
    try:
        return Encoder(lm, precision=precision, token_budget=token_budget)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@encode_app.command("corpus")
@friendly
def encode_corpus_cmd(
    inputs: list[str] = typer.Argument(..., help="Text files (.gz/.xz/.bz2/.zst too), one sentence per line; '-' for stdin."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for shards and manifest."),
    model: str = ModelOpt,
    id_column: bool = IdColumnOpt,
    errors: Errors = ErrorsOpt,
    shard_size: int = typer.Option(250_000, "--shard-size", help="Sentences per shard file."),
    precision: str = PrecisionOpt,
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Token budget per batch and worker (default 1024 on CPU; on a GPU sized to its free memory)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Override the model's pooling: mean or cls."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Override the text prefix (E5 default: 'query: ')."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Override max tokens per sentence."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the encoder."),
    device: str = DeviceOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing output folder instead of resuming."),
) -> None:
    """Stream a corpus into sharded Arrow embedding files (resumable)."""
    from bitextmine.encode_corpus import EncodeOptions, encode_corpus

    from bitextmine.corpus import check_input

    opts = EncodeOptions(shard_size=shard_size, id_column=id_column, errors=errors, overwrite=overwrite)
    for p in inputs:  # fail on a bad path before spending time loading the model
        check_input(p)
    enc = _load(model, precision, batch_tokens, pooling, prefix, max_tokens, threads, device)
    with Reporter("encoding", count_lines(inputs)) as rep:
        s = encode_corpus(inputs, out, enc, opts, progress=rep)
    t = Table(title=escape(f"encoded → {s.out}"), show_header=False)
    t.add_row("sentences", f"{s.sentences:,}")
    t.add_row("shards", f"{s.shards} ({s.resumed_shards} kept from an earlier run)" if s.resumed_shards else str(s.shards))
    t.add_row("embedded now", f"{s.encoded:,} in {s.seconds:.1f} s ({s.sentences_per_second:,.1f} sentences/s)")
    t.add_row("model", escape(f"{enc.lm.source} (fingerprint {enc.lm.fingerprint}), {enc.dim} dims, {str(enc.dtype).removeprefix('torch.')}"))
    t.add_row("blank lines skipped", f"{s.read.get('blank', 0):,}")
    t.add_row("truncated at max tokens", f"{s.truncated:,} (limit {enc.lm.recipe.max_tokens})")
    bad = s.read.get("invalid_utf8_replaced", 0) + s.read.get("invalid_utf8_skipped", 0)
    if bad:
        t.add_row("invalid UTF-8 lines", f"{s.read['invalid_utf8_replaced']:,} replaced, {s.read['invalid_utf8_skipped']:,} skipped")
    if s.read.get("missing_id"):
        t.add_row("lines without id (skipped)", f"{s.read['missing_id']:,}")
    err.print(t)


@app.command("mine")
@friendly
def mine_cmd(
    src: str = typer.Argument(..., help="Source side: a text file or an embedding folder from 'encode corpus'."),
    tgt: str = typer.Argument(..., help="Target side: a text file or an embedding folder."),
    out: str = typer.Option(..., "--out", "-o", help="Output file ('-' for stdout)."),
    model: str = ModelOpt,
    k: int = typer.Option(4, "-k", "--k", help="Neighbours per sentence for the margin."),
    margin: Margin = typer.Option(Margin.RATIO, "--margin", help="ratio (LASER default), distance, or absolute (cosine)."),
    strategy: Strategy = typer.Option(Strategy.MAX, "--strategy", help="max, forward, backward or intersect."),
    index: str = typer.Option("auto", "--index", help="flat (exact), auto (by size), or a FAISS factory string such as IVF4096,PQ64."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF cells visited per query."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep pairs with margin >= this (default: the model's tuned threshold if any, else all)."),
    top: Optional[int] = typer.Option(None, "--top", help="Keep only the N best pairs."),
    dedup: bool = typer.Option(False, "--dedup", help="Mine unique sentences only (exact duplicates removed)."),
    fmt: str = typer.Option("tsv", "--format", help="tsv (score<TAB>src<TAB>tgt) or jsonl."),
    with_lines: bool = typer.Option(False, "--with-lines", help="Add source and target line numbers."),
    with_ids: bool = typer.Option(False, "--with-ids", help="Add source and target ids (inputs read with --id-column)."),
    id_column: bool = IdColumnOpt,
    errors: Errors = ErrorsOpt,
    precision: str = PrecisionOpt,
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache for text inputs (default $BITEXTMINE_CACHE or the user cache folder)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    device: str = typer.Option("auto", "--device", help="auto (GPUs when present: encoder on CUDA, search with faiss-gpu if installed), cpu, cuda or cuda:N."),
) -> None:
    """Mine translation pairs between SRC and TGT with margin scoring over FAISS k-NN, both ways."""
    from bitextmine.encode_corpus import EncodeOptions, encode_corpus
    from bitextmine.mine import MineOptions, default_cache_dir, is_embedding_folder, mine_stores, open_side, write_pairs

    if fmt not in ("tsv", "jsonl"):
        raise typer.BadParameter("--format must be tsv or jsonl")
    if device != "auto":  # the same check as the encoder's, also when both sides are embedding folders
        from bitextmine.models.loader import resolve_device

        resolve_device(device)
    cache_dir = cache or default_cache_dir()
    enc = None
    recipe_threshold = None
    texts = [p for p in (src, tgt) if not is_embedding_folder(p)]
    if texts:
        from bitextmine.corpus import check_input

        for p in texts:
            if not Path(p).is_dir():  # open_side explains folders without a manifest
                check_input(p)
        enc = _load(model, precision, None, threads=threads, device=device)
        recipe_threshold = enc.lm.recipe.threshold

    def encode(path: str, folder: Path) -> None:
        with Reporter(f"encoding {path}", count_lines([path])) as rep:
            encode_corpus([path], folder, enc, EncodeOptions(id_column=id_column, errors=errors), progress=rep)

    fp = enc.lm.fingerprint if enc else None
    stores = [open_side(p, encode=encode, fingerprint=fp, id_column=id_column, errors=errors, cache_dir=cache_dir) for p in (src, tgt)]
    if recipe_threshold is None and threshold is None:
        recipe_threshold = stores[0].manifest.get("recipe", {}).get("threshold")
    thr = threshold if threshold is not None else recipe_threshold
    use_gpu = None if device == "auto" else device != "cpu"
    opts = MineOptions(k=k, margin=margin, strategy=strategy, index=index, nprobe=nprobe, threshold=thr, top=top, dedup=dedup, use_gpu=use_gpu)
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)
    with Reporter("searching", len(stores[0]) + len(stores[1]), unit="queries") as rep:
        res = mine_stores(stores[0], stores[1], opts, progress=rep)
    n = write_pairs(out, res.pairs, stores[0], stores[1], fmt=fmt, with_lines=with_lines, with_ids=with_ids)
    t = Table(title=escape(f"mined → {out}"), show_header=False)
    t.add_row("pairs", f"{n:,}")
    t.add_row("sentences", f"{res.src_count:,} × {res.tgt_count:,}" + (" (unique)" if dedup else ""))
    t.add_row("threshold", "none" if thr is None else f"{thr:g}" + (" (model default)" if threshold is None else ""))
    t.add_row("scoring", f"{margin.value} margin, k={k}, {strategy.value}, index {index}")
    t.add_row("time", f"{res.seconds:.1f} s")
    err.print(t)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"bitextmine {__version__}")
        raise typer.Exit()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
