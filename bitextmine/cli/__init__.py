"""The ``bitextmine`` command line: a thin Typer layer over the library.

Each command parses options, calls one library function and renders its result; errors become
exit codes only here (:func:`bitextmine.cli.shared.friendly`). Imports point one way: ``cli`` →
the pipeline (``mine``, ``encode_corpus``, ``bench``, ``training``) → the core; the library never
imports ``cli`` (``tests/test_architecture.py`` checks it).
"""
from __future__ import annotations

import logging

import typer

from bitextmine import __version__
from bitextmine.cli import bench_compare  # noqa: F401  (adds `bench compare` to bench_app)
from bitextmine.cli import encode_import  # noqa: F401  (adds `encode import` to encode_app)
from bitextmine.cli.bench import bench_app
from bitextmine.cli.encode import encode_app
from bitextmine.cli.filter import filter_cmd
from bitextmine.cli.mine import mine_cmd
from bitextmine.cli.model import model_app
from bitextmine.cli.score import score_cmd
from bitextmine.cli.train import train_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find parallel sentences in large monolingual corpora.")
app.add_typer(encode_app, name="encode")
app.command("mine")(mine_cmd)
app.command("filter")(filter_cmd)
app.command("score")(score_cmd)
app.add_typer(bench_app, name="bench")
app.command("train")(train_command)
app.add_typer(model_app, name="model")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"bitextmine {__version__}")
        raise typer.Exit()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "main"]
