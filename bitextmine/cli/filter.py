"""``bitextmine filter``: parse options, one call to :func:`bitextmine.filters.filter_file`, render."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import err, friendly, out_console, reporting
from bitextmine.filters.pipeline import REASONS, Dedup
from bitextmine.output import Format

_WHAT = {
    "score": "margin score below --min-score",
    "min_length": "a side shorter than --min-length",
    "max_length": "a side longer than --max-length",
    "ratio": "length ratio above --max-ratio",
    "identical": "source and target (nearly) the same",
    "numbers": "numbers disagree",
    "urls": "URLs / e-mails disagree",
    "duplicate": "pair already kept",
    "near_duplicate": "pair already kept (normalised)",
    "src_cap": "source already in --max-per-src pairs",
    "tgt_cap": "target already in --max-per-tgt pairs",
    "src_lid": "source not in the source language",
    "tgt_lid": "target not in the target language",
}


def _list_languages(value: bool) -> None:
    if not value:
        return
    from bitextmine.filters.langs import language_table

    t = Table(title="languages the identifier knows (give any code of a row)")
    for col in ("group", "ISO 639-1 / labels", "ISO 639-3", "name"):
        t.add_column(col)
    for row in language_table():
        t.add_row(*row)
    out_console().print(t)
    raise typer.Exit()


def _off(v: float | None) -> float | None:
    return None if v is None or v == 0 else v


def filter_options(**flags):
    """:class:`~bitextmine.filters.FilterOptions` from the flag values (0 turns a limit off)."""
    from bitextmine.filters import FilterOptions

    for name in ("min_length", "max_length", "max_ratio", "max_overlap", "max_per_src", "max_per_tgt"):
        if name in flags:
            flags[name] = _off(flags[name])
    return FilterOptions(**flags)


# The filter options, one spelling and help text each (``mine --filter`` can reuse them).
SrcLangOpt = typer.Option(None, "--src-lang", help="Source language: ISO 639-3 (deu), Flores (deu_Latn) or ISO 639-1 (de); default: the majority of the first --infer-lines pairs.")
TgtLangOpt = typer.Option(None, "--tgt-lang", help="Target language (as --src-lang).")
LidOpt = typer.Option(True, "--lid/--no-lid", help="Check the language of both sides (py3langid, offline).")
LidThresholdOpt = typer.Option(0.3, "--lid-threshold", help="Keep a side whose language is the most probable one or has at least this probability.")
InferLinesOpt = typer.Option(1000, "--infer-lines", help="Pairs read to infer a language not given.")
MinLengthOpt = typer.Option(1, "--min-length", help="Drop pairs with a side shorter than this, in English-equivalent characters (0: off).")
MaxLengthOpt = typer.Option(1050, "--max-length", help="Drop pairs with a side longer than this (0: off).")
MaxRatioOpt = typer.Option(3.0, "--max-ratio", help="Drop pairs whose longer side is more than this times the shorter, in English-equivalent characters (0: off; stopes uses 9).")
MaxOverlapOpt = typer.Option(0.8, "--max-overlap", help="Drop pairs whose normalised sides share at least this fraction of character trigrams: copies (0: off).")
NumbersOpt = typer.Option(True, "--numbers/--no-numbers", help="Drop pairs where each side has a number the other lacks.")
UrlsOpt = typer.Option(True, "--urls/--no-urls", help="Drop pairs where each side has a URL or e-mail address the other lacks.")
DedupOpt = typer.Option(Dedup.NORMALISED, "--dedup", help="Drop repeated pairs: normalised (case, punctuation, digits, whitespace ignored), exact, or none.")
MaxPerSrcOpt = typer.Option(2, "--max-per-src", help="A source sentence may be in at most this many kept pairs (0: no cap).")
MaxPerTgtOpt = typer.Option(2, "--max-per-tgt", help="A target sentence may be in at most this many kept pairs (0: no cap).")
MinScoreOpt = typer.Option(None, "--min-score", help="Drop pairs whose margin score is below this.")
RejectsOpt = typer.Option(None, "--rejects", help="Write the dropped pairs here, each with its reason (parquet: reason and detail columns).")
FormatOpt = typer.Option(None, "--format", help="tsv, jsonl or parquet (default: parquet for a .parquet name, else the input's format).")

#: The filter flags as (parameter, type, option): added to ``filter`` and ``mine`` by :func:`takes_filter_options`.
FILTER_FLAGS: tuple[tuple[str, object, object], ...] = (
    ("src_lang", Optional[str], SrcLangOpt),
    ("tgt_lang", Optional[str], TgtLangOpt),
    ("lid", bool, LidOpt),
    ("lid_threshold", float, LidThresholdOpt),
    ("infer_lines", int, InferLinesOpt),
    ("min_length", float, MinLengthOpt),
    ("max_length", float, MaxLengthOpt),
    ("max_ratio", float, MaxRatioOpt),
    ("max_overlap", float, MaxOverlapOpt),
    ("numbers", bool, NumbersOpt),
    ("urls", bool, UrlsOpt),
    ("dedup", Dedup, DedupOpt),
    ("max_per_src", int, MaxPerSrcOpt),
    ("max_per_tgt", int, MaxPerTgtOpt),
    ("min_score", Optional[float], MinScoreOpt),
)


def takes_filter_options(rename: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Add the filter flags (:data:`FILTER_FLAGS`) to a command, which receives them as one dict
    ``filter_flags`` (parameter → value). ``rename`` gives a flag another spelling where the command
    has one of that name already (``mine``: ``{"dedup": "--filter-dedup"}``)."""
    rename = rename or {}

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "filter_flags"]
        added, param_of = [], {}
        for name, ann, opt in FILTER_FLAGS:
            param_of[name] = name
            if name in rename:  # another flag, and a parameter named after it
                opt = typer.Option(opt.default, rename[name], help=opt.help)
                param_of[name] = rename[name].lstrip("-").replace("-", "_")
            added.append(inspect.Parameter(param_of[name], inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            flags = {name: kw.pop(param) for name, param in param_of.items()}
            return fn(*a, filter_flags=flags, **kw)

        wrapper.filter_params = param_of  # filter option → parameter name (for given_flags)

        wrapper.__signature__ = sig.replace(parameters=[*own, *added])
        wrapper.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "filter_flags"}
        wrapper.__annotations__.update({p.name: p.annotation for p in added})
        return wrapper

    return deco


def given_flags(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """Which of the parameters ``names`` were given (on the command line, not left at their default)."""
    return [n for n in names if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"]


def show_filter_report(t: Table, res) -> None:
    """The filter's rows of a summary table: kept, the languages, every counter."""
    t.add_row("kept", f"{res.kept:,}" + (f" ({res.kept / res.total:.1%})" if res.total else ""))
    for side, lang in (("source", res.src_lang), ("target", res.tgt_lang)):
        if lang is not None:
            how = f" (inferred: {lang.share:.0%} of the sample)" if lang.inferred else ""
            t.add_row(f"{side} language", escape(f"{lang.group} {lang.name}{how}"))
    for r in REASONS:
        t.add_row(f"dropped: {r}", f"{res.dropped[r]:,}  [dim]{escape(_WHAT[r])}[/]")


def language_notes(res) -> None:
    for flag_, lang in (("--src-lang", res.src_lang), ("--tgt-lang", res.tgt_lang)):
        if lang is not None and lang.inferred and (lang.share or 0) < 0.5:
            err.print(escape(f"note: only {lang.share:.0%} of the sample is {lang.name}; give {flag_} if that is not the language"))


@friendly
@takes_filter_options()
def filter_cmd(
    pairs: str = typer.Argument(..., help="Pairs file from 'mine': TSV (score, src, tgt[, lines][, ids]), JSONL or parquet; '-' for stdin (not parquet)."),
    out: str = typer.Option(..., "--out", "-o", help="The kept pairs ('-' for stdout), in --format, else parquet for a .parquet name, else the input's format."),
    rejects: Optional[str] = RejectsOpt,
    report: Optional[str] = typer.Option(None, "--report", help="Write the counts per rule, languages and options as JSON."),
    fmt: Optional[Format] = FormatOpt,
    list_languages: bool = typer.Option(False, "--list-languages", is_eager=True, callback=_list_languages, help="List the language codes and exit."),
    filter_flags: Optional[dict] = None,
) -> None:
    """Filter mined pairs into clean bitext: language ID, lengths, copies, numbers, URLs, duplicates, caps."""
    from bitextmine.filters import filter_file

    opts = filter_options(**(filter_flags or {}))
    with reporting() as rep:
        res = filter_file(pairs, out, opts, rejects=rejects, report=report, format=fmt, listener=rep)
    t = Table(title=escape(f"filtered {pairs} → {out}"), show_header=False)
    t.add_row("pairs read", f"{res.total:,}")
    show_filter_report(t, res)
    err.print(t)
    language_notes(res)
