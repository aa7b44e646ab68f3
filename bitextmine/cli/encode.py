"""``bitextmine encode``: embed corpora into sharded Arrow folders."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import (AddressOpt, CpusPerWorkerOpt, DeviceOpt, Engine, ErrorsOpt, GpusPerWorkerOpt, IdColumnOpt, ModelOpt, PrecisionOpt,
                                   WorkersOpt, encoder_options, err, friendly, ray_options, reporting)
from bitextmine.corpus import Errors


encode_app = typer.Typer(no_args_is_help=True, help="Embed sentences into sharded Arrow files.")


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
    tokenize_workers: Optional[int] = typer.Option(None, "--tokenize-workers", help="Processes tokenising ahead of the model (default: on a GPU half the CPU cores, up to 8; 0 on the CPU). Speed only."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing output folder instead of resuming."),
    engine: Engine = typer.Option(Engine.LOCAL, "--engine", help="local: embed in this process; ray: on a pool of Ray actors (pip install 'bitextmine\\[ray]'), same output bytes."),
    address: str | None = AddressOpt,
    workers: int | None = WorkersOpt,
    cpus_per_worker: float | None = CpusPerWorkerOpt,
    gpus_per_worker: float | None = GpusPerWorkerOpt,
) -> None:
    """Stream a corpus into sharded Arrow embedding files (resumable)."""
    from bitextmine.encode_job import EncodeOptions, encode_files

    opts = EncodeOptions(shard_size=shard_size, id_column=id_column, errors=errors, overwrite=overwrite)
    enc_opts = encoder_options(model, precision, batch_tokens=batch_tokens, pooling=pooling, prefix=prefix,
                               max_tokens=max_tokens, threads=threads, device=device, tokenize_workers=tokenize_workers)
    run_on = ray_options(engine, address=address, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    with reporting() as rep:
        s = encode_files(inputs, out, enc_opts, opts, listener=rep, engine=run_on)
    enc = s.encoder
    t = Table(title=escape(f"encoded → {s.out}"), show_header=False)
    t.add_row("sentences", f"{s.sentences:,}")
    notes = [f"{s.resumed_shards} kept from an earlier run"] if s.resumed_shards else []
    if s.reencoded_from is not None:
        notes.append(f"re-encoded from shard {s.reencoded_from}: {s.reencode_reason}")
    t.add_row("shards", escape(f"{s.shards} ({'; '.join(notes)})" if notes else str(s.shards)))
    t.add_row("embedded now", f"{s.encoded:,} in {s.seconds:.1f} s ({s.sentences_per_second:,.1f} sentences/s)")
    if getattr(enc, "engine", None):
        e = enc.engine
        t.add_row("engine", f"Ray: {e['workers']} workers on {e['nodes']} nodes ({e['cpus_per_worker']:g} CPUs, {e['gpus_per_worker']:g} GPUs each)")
    t.add_row("model", escape(f"{enc.lm.source} (fingerprint {enc.lm.fingerprint}), {enc.dim} dims, {str(enc.dtype).removeprefix('torch.')}"))
    t.add_row("blank lines skipped", f"{s.read.get('blank', 0):,}")
    t.add_row("truncated at max tokens", f"{s.truncated:,} (limit {enc.lm.recipe.max_tokens})")
    bad = s.read.get("invalid_utf8_replaced", 0) + s.read.get("invalid_utf8_skipped", 0)
    if bad:
        t.add_row("invalid UTF-8 lines", f"{s.read['invalid_utf8_replaced']:,} replaced, {s.read['invalid_utf8_skipped']:,} skipped")
    if s.read.get("missing_id"):
        t.add_row("lines without id (skipped)", f"{s.read['missing_id']:,}")
    err.print(t)
