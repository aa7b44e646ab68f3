"""``bitextmine model pack``: store a fine-tuned model compactly as a delta over its base (:mod:`bitextmine.models.delta`)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import friendly, out_console

model_app = typer.Typer(no_args_is_help=True, help="Package models: compact deltas of fine-tuned encoders.")


@model_app.command("pack")
@friendly
def pack_cmd(
    tuned: Path = typer.Argument(..., help="The fine-tuned model folder (e.g. <run>/model from bitextmine train)."),
    out: Path = typer.Option(..., "--out", "-o", help="The delta folder to write; --model OUT then loads the merged model."),
    base: str = typer.Option("e5-small", "--base", help="The model it was fine-tuned from (a --model name or folder)."),
    bits: int = typer.Option(8, "--bits", help="Bits per stored weight difference: 8 or 4."),
    group: int = typer.Option(64, "--group", help="Values of a row sharing one scale."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing delta folder."),
) -> None:
    """Write TUNED as the difference to BASE: the changed weights quantised per group, the rest by reference."""
    from bitextmine.models.loader import pack_model

    meta = pack_model(tuned, out, base=base, bits=bits, group=group, overwrite=overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    t = Table(title=escape(f"packed → {out}"), show_header=False)
    t.add_row("base", f"{meta['base']}")
    t.add_row("changed", f"{meta['changed']} tensors, {meta['changed_params']:,} weights ({meta['unchanged']} unchanged tensors not stored)")
    t.add_row("storage", f"int{meta['bits']} per group of {meta['group']}; largest weight error {meta['max_error']:.2e}")
    t.add_row("size", f"{size / 2**20:.1f} MiB")
    out_console().print(t)
