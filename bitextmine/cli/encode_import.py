"""``bitextmine encode import``: embeddings made elsewhere (LASER raw, .npy) into an embedding folder.

Registers ``import`` on :data:`bitextmine.cli.encode.encode_app` when imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.encode import encode_app
from bitextmine.cli.shared import ErrorsOpt, IdColumnOpt, err, friendly, reporting
from bitextmine.corpus import Errors


@encode_app.command("import")
@friendly
def encode_import_cmd(
    embeddings: str = typer.Argument(..., help="Embeddings: a raw float32/float16 file (as LASER's embed.py writes, no header) or a .npy of shape (rows, dim)."),
    texts: str = typer.Argument(..., help="Their sentences, one per line (one row per line, blank lines included, or one per non-blank line)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output embedding folder (for mine and score)."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Dimensions per row; required for raw files, checked against a .npy header."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Raw files: fp32 (default; LASER) or fp16 (LASER's --fp16). Checked against a .npy header."),
    model_name: str = typer.Option("unnamed", "--model-name", help="The model that made the embeddings: folders with the same name and dim can be mined together."),
    id_column: bool = IdColumnOpt,
    errors: Errors = ErrorsOpt,
    shard_size: int = typer.Option(250_000, "--shard-size", help="Sentences per shard file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing embedding folder."),
) -> None:
    """Wrap embeddings made by another tool, plus their texts, into an embedding folder (rows L2-normalised)."""
    from bitextmine.importer import ImportOptions, import_embeddings

    opts = ImportOptions(dim=dim, dtype=dtype, model_name=model_name, id_column=id_column, errors=errors,
                         shard_size=shard_size, overwrite=overwrite)
    with reporting() as rep:
        s = import_embeddings(embeddings, texts, out, opts, listener=rep)
    t = Table(title=escape(f"imported → {s.out}"), show_header=False)
    t.add_row("sentences", f"{s.sentences:,}")
    t.add_row("rows read", escape(f"{s.rows:,} ({s.source}, {s.dim} dims; one per {s.rows_per})"))
    t.add_row("shards", str(s.shards))
    t.add_row("model", escape(f"{s.model} (fingerprint {s.fingerprint}); rows L2-normalised, stored as float16"))
    t.add_row("blank lines skipped", f"{s.read.get('blank', 0):,}")
    if s.zero_rows:
        t.add_row("rows of zeros", f"{s.zero_rows:,} (kept unnormalised; they match nothing)")
    if s.read.get("invalid_utf8_replaced", 0) + s.read.get("invalid_utf8_skipped", 0):
        t.add_row("invalid UTF-8 lines", f"{s.read['invalid_utf8_replaced']:,} replaced, {s.read['invalid_utf8_skipped']:,} skipped")
    t.add_row("time", f"{s.seconds:.1f} s")
    err.print(t)
