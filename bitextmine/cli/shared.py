"""What every command shares: the consoles, the error wrapper, the progress reporter, the option
definitions (one spelling and help text each) and the map from library parameters to flags.

This is the only place that turns library errors into exit codes.
"""
from __future__ import annotations

import contextlib
import functools
import time
from enum import Enum
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape

from bitextmine.corpus import Errors
from bitextmine.errors import BitextmineError
from bitextmine.events import Event

err = Console(stderr=True, highlight=False)

#: Library parameter names whose flag is not ``--`` + the name with dashes.
_FLAG_EXCEPTIONS = {"k": "-k", "token_budget": "--batch-tokens", "json_out": "--json"}


def flag(param: str) -> str:
    """The CLI spelling of a library parameter (``id_column`` → ``--id-column``, ``k`` → ``-k``)."""
    return _FLAG_EXCEPTIONS.get(param, "--" + param.replace("_", "-"))


def friendly(fn: Callable) -> Callable:
    """Turn library errors into a one-line message and exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except BitextmineError as e:
            msg = e.message_for({p: flag(p) for p in e.params})
            err.print(f"[bold red]error:[/] {escape(msg)}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished work (shards, cached embeddings, checkpoints) is kept and no output was "
                      "left half-written: rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def out_console() -> Console:
    """Results go to stdout (progress and notes to stderr); wide enough for the tables when redirected."""
    c = Console(highlight=False)
    if not c.is_terminal:
        c = Console(highlight=False, width=140)
    return c


class Bar:
    """One task's progress: a rich bar on a terminal, a plain log line every ``every`` s otherwise."""

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
            self.bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.t0, 1e-9)
        if self.bar:
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} {self.unit}/s")
        elif now - self.last >= self.every:
            self.last = now
            of = f"/{self.total:,}" if self.total else ""
            err.print(f"{self.what}: {self.done:,}{of} {self.unit} ({rate:,.0f}/s)")

    def stop(self) -> None:
        if self.bar:
            self.bar.stop()


class Reporter:
    """The CLI's listener (:mod:`bitextmine.events`): a :class:`Bar` per task; a spinner while a model
    loads (terminal only). ``on_event`` receives the job-specific events (training)."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self.on_event = on_event
        self._bar: Bar | None = None
        self._status = None

    def __call__(self, e: Event) -> None:
        if e.kind == "start":
            self.close()
            if e.unit == "model":
                if err.is_terminal:
                    self._status = err.status(e.what)
                    self._status.__enter__()
            else:
                self._bar = Bar(e.what, e.total, e.unit)
        elif e.kind == "advance":
            if self._bar is not None:
                self._bar.advance(e.n)
        elif e.kind == "end":
            self.close()
        elif self.on_event is not None:
            self.on_event(e)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None


@contextlib.contextmanager
def reporting(on_event: Callable[[Event], None] | None = None) -> Iterator[Reporter]:
    rep = Reporter(on_event)
    try:
        yield rep
    finally:
        rep.close()


def encoder_options(model: str, precision: str, *, batch_tokens: int | None = None, pooling: str | None = None,
                    prefix: str | None = None, max_tokens: int | None = None, threads: int | None = None, device: str = "auto",
                    tokenize_workers: int | None = None):
    """The encoder options of the shared flags."""
    from bitextmine.encoder import EncoderOptions

    return EncoderOptions(model=model, precision=precision, token_budget=batch_tokens, pooling=pooling, prefix=prefix,
                          max_tokens=max_tokens, threads=threads, device=device, tokenize_workers=tokenize_workers)


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_size(text: str | None, param: str) -> int | None:
    """``"6G"``, ``"500M"``, ``"1.5GiB"`` or a number of bytes -> bytes (binary units); None stays None."""
    if text is None:
        return None
    import re

    from bitextmine.errors import InputError

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS or float(m.group(1)) * _UNITS[unit] < 1:
        raise InputError(f"{{param}}: {text!r} is not a size (e.g. 6G, 500M or a number of bytes)", param=param)
    return int(float(m.group(1)) * _UNITS[unit])


def set_search_threads(threads: int | None) -> None:
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)


# Options shared by several commands: one spelling and one help text each.
ModelOpt = typer.Option("default", "--model", "-m", help="'default' (the shipped fine-tune of multilingual-E5-small, offline), 'e5-small' (the untouched base), a Hugging Face id, or a local transformers / sentence-transformers / bitextmine folder.")
PrecisionOpt = typer.Option("auto", "--precision", help="auto (bf16 where the CPU/GPU supports it), fp32, bf16 or fp16.")
IdColumnOpt = typer.Option(False, "--id-column", help="Lines are 'id<TAB>sentence' (BUCC layout).")
DeviceOpt = typer.Option("auto", "--device", help="auto (a CUDA GPU when present, else the CPU), cpu, cuda or cuda:N.")
ErrorsOpt = typer.Option(Errors.STRICT, "--errors", help="Invalid UTF-8: strict (stop with file:line), replace, or skip.")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads.")
CacheOpt = typer.Option(None, "--cache", help="Embedding cache for text inputs (default $BITEXTMINE_CACHE or the user cache folder); reruns reuse it.")
KOpt = typer.Option(4, "-k", "--k", help="Neighbours per sentence for the margin.")
NprobeOpt = typer.Option(None, "--nprobe", help="IVF cells visited per query.")
JsonOpt = typer.Option(None, "--json", help="Write every result and what is needed to reproduce it (model fingerprint, versions, parameters) to this file.")
PlotsOpt = typer.Option(None, "--plots", help="Write PNG plots into this folder.")


class Engine(str, Enum):
    LOCAL = "local"
    RAY = "ray"


# The Ray engine's flags (encode corpus, mine): one definition each; ray_options() turns them into RayOptions.
AddressOpt = typer.Option(None, "--address", help="Ray cluster: auto (a running one), HOST:PORT, or local (start one here); default: RAY_ADDRESS, a cluster on this machine, else local.")
WorkersOpt = typer.Option(None, "--workers", help="Ray actors (encode: each loads the model once; mine: each holds the indexes of some shards); default: as many as the cluster's CPUs (or GPUs) hold.")
CpusPerWorkerOpt = typer.Option(None, "--cpus-per-worker", help="CPUs per Ray actor (default 1).")
GpusPerWorkerOpt = typer.Option(None, "--gpus-per-worker", help="GPUs per Ray actor (default 0: CPU actors).")


def ray_options(engine: Engine, **flags):
    """RayOptions from the Ray flags given (None for the local engine, which refuses them)."""
    if engine is Engine.RAY:
        from bitextmine.ray_engine import RayOptions

        return RayOptions(**{k: v for k, v in flags.items() if v is not None})
    if given := [k for k, v in flags.items() if v is not None]:
        raise typer.BadParameter("applies to --engine ray only, not to the local engine", param_hint=flag(given[0]))
    return None
