"""``bitextmine train``: DAP training from a config recipe (a thin layer over :mod:`bitextmine.training`).

Under torchrun every process runs this command; only rank 0 reports (the library emits events on
rank 0 only).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bitextmine.cli.shared import err, friendly
from bitextmine.events import Event


def _metric(dev_set: str) -> str:
    return "F1" if dev_set == "mining" else "p@1"


class TrainReporter:
    """Turns training's events (:mod:`bitextmine.events`) into a rich progress bar (terminal) or log
    lines every ``every`` s."""

    def __init__(self, console: Console, every: float = 30.0) -> None:
        self.c, self.every = console, every
        self.bar = None
        self.task = None
        self.t0 = self.last = time.perf_counter()
        self.start_step = 0
        self.loss = ""

    def __call__(self, ev: Event) -> None:
        kind, e = ev.kind, ev.data
        c = self.c
        if kind == "config":
            from bitextmine.training.config import dumps_toml

            c.print(f"[bold]training[/] → {escape(e['output_dir'])}" + (f" (resuming at step {e['resume_step']:,})" if e["resume_step"] else "")
                    + (f", {e['world']} processes" if e["world"] > 1 else ""))
            c.print(escape(dumps_toml(e["config"]).rstrip()), style="dim", soft_wrap=True)
        elif kind == "data":
            c.print(f"prepared {e['lang']}: {e.get('train', 0):,} train, {e.get('dev', 0):,} dev of {e.get('read', 0):,} read", style="dim")
        elif kind == "data_ready":
            self._data_table(e)
        elif kind == "train_start":
            self.start_step = e["step"]
            self.t0 = self.last = time.perf_counter()
            if c.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=c)
                self.task = self.bar.add_task("train", total=e["steps"], completed=e["step"], loss="", rate="")
                self.bar.start()
        elif kind == "step":
            done = e["step"] - self.start_step
            rate = done / max(time.perf_counter() - self.t0, 1e-9)
            parts = f"TR {e['tr']:.3f}" + (f" RTL {e['rtl']:.3f}" if e.get("rtl") is not None else "")
            if self.bar is not None:
                self.bar.update(self.task, completed=e["step"], loss=parts, rate=f"{rate:.2f} steps/s")
            elif time.perf_counter() - self.last >= self.every:
                self.last = time.perf_counter()
                eta = (e["steps"] - e["step"]) / max(rate, 1e-9)
                c.print(f"step {e['step']:,}/{e['steps']:,} {parts} lr {e['lr']:.2e} {rate:.2f} steps/s, ETA {eta / 60:.1f} min")
        elif kind == "eval":
            res = " ".join(f"{k} {_metric(k)} {100 * v['mean']:.2f}" for k, v in e["results"].items())
            best = e.get("best")
            self._print(f"step {e['step']:,}: dev {res}" + (f" (best: step {best['step']:,}, {100 * best['score']:.2f})" if best else ""))
        elif kind == "note":
            self._print(f"note: {e['message']}")
        elif kind == "export":
            self._stop()

    def _print(self, msg: str) -> None:
        (self.bar.console if self.bar is not None else self.c).print(escape(msg))

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def _data_table(self, e: dict) -> None:
        from bitextmine.training.data import FILTER_REASONS

        rep = e["report"]
        reasons = [r for r in FILTER_REASONS + ("malformed", "bad_encoding") if any(v.get(r) for v in rep.values())]
        t = Table(title="training data", show_lines=False)
        for col in ["lang", "read", *reasons, "kept", "train", "dev"]:
            t.add_column(col.replace("_", " "), justify="left" if col == "lang" else "right")
        total: dict[str, int] = {}
        for lang, v in rep.items():
            t.add_row(lang, *[f"{v.get(k, 0):,}" for k in ["read", *reasons, "kept", "train", "dev"]])
            for k, n in v.items():
                total[k] = total.get(k, 0) + n
        t.add_row("all", *[f"{total.get(k, 0):,}" for k in ["read", *reasons, "kept", "train", "dev"]], style="bold")
        self.c.print(t)
        self.c.print(f"{len(e['languages'])} languages, {e['train_pairs']:,} training pairs; "
                     + (f"RTL vocabulary {e['rtl_vocab']:,} English token ids; " if e["rtl_vocab"] else "TR only; ")
                     + f"{e['trainable']:,} trainable parameters; {e['dtype']} on {e['device']}; dev: {', '.join(e['dev_sets']) or 'none'}")


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML recipe (see train/configs/); defaults apply to what it leaves out."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override one setting, e.g. --set optim.lr=3e-5 --set data.train='[\"a-en.tsv\"]' (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (overrides run.output_dir)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming: delete the previous run's files (only in a bitextmine run folder, after the config and data check out)."),
    export_only: bool = typer.Option(False, "--export-only", help="Export the run's best (checkpoints/best, else the last) checkpoint to <run>/model and stop."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as TOML and exit."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", hidden=True, help="Stop after N steps as if killed (tests resume)."),
    device: str = typer.Option("auto", "--device", help="auto (this process's GPU under torchrun, else the first GPU, else the CPU), cpu, cuda or cuda:N."),
) -> None:
    """Train a sentence encoder with DAP (translation ranking + representation translation learning).

    Rerunning the same command resumes from the last checkpoint. Multi-GPU / multi-node:
    torchrun --nproc_per_node 8 -m bitextmine train --config ...
    """
    _run(config, set_, out, overwrite, export_only, print_config, stop_after, device)


@friendly
def _run(config, set_, out, overwrite, export_only, print_config, stop_after, device="auto") -> None:
    from bitextmine.training.config import load_config
    from bitextmine.training.loop import train

    overrides = list(set_) + ([f"run.output_dir={_toml_str(str(out))}"] if out is not None else [])
    cfg = load_config(config, overrides)
    if print_config:
        typer.echo(cfg.to_toml())
        return
    rep = TrainReporter(err)
    try:
        res = train(cfg, progress=rep, overwrite=overwrite, stop_after=stop_after, export_only=export_only,
                    device=None if device == "auto" else device)
    finally:
        rep._stop()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    if res.exported_only:
        t = Table(title=escape(f"exported → {res.output_dir}"), show_header=False)
        t.add_row("checkpoint", f"step {res.step:,} of {res.steps:,}")
    else:
        t = Table(title=escape(f"trained → {res.output_dir}"), show_header=False)
        t.add_row("steps", f"{res.step:,} of {res.steps:,}" + (f" (resumed at {res.resumed_from:,})" if res.resumed_from else "")
                  + (", stopped early: no better dev score (eval.patience)" if res.stopped_early else ""))
        t.add_row("time", f"{res.seconds / 60:.1f} min")
    if res.best:
        t.add_row("best dev", f"{res.best['set']} {_metric(res.best['set'])} {100 * res.best['score']:.2f} at step {res.best['step']:,}")
    for name, v in (res.last_eval or {}).items():
        t.add_row(f"last dev {name}", f"{_metric(name)} {100 * v['mean']:.2f}")
    if res.model_dir:
        t.add_row("model", escape(f"{res.model_dir}  (use: --model {res.model_dir})"))
    elif res.interrupted:
        t.add_row("status", "stopped early; rerun the same command to resume")
    err.print(t)


def _toml_str(s: str) -> str:
    import json

    return json.dumps(s)
