"""Encode on a Ray cluster: a pool of encoder actors embeds the chunks that the local job cuts.

Only the embedding moves. The driver (the process that calls :func:`~bitextmine.encode_job.encode_files`)
still reads the inputs, cuts them into the same chunks and shards, hashes the lines, writes and
commits every shard file and rewrites the manifest, exactly as a local run does, so resuming works
as it always does (finished shards verified and kept). :class:`RayEncoder` stands in for the
:class:`~bitextmine.encoder.Encoder`: its :meth:`~RayEncoder.encode_stream` sends each chunk's
texts to an actor and yields the embeddings in input order.

Why the bits are the same: an embedding depends on the model, its recipe, the texts of the call
(one chunk) and :attr:`Encoder.numerics`, not on threads (see :mod:`bitextmine.encoder`). Every
actor loads the model once; before any work the driver checks that all of them report the same
bitextmine version, model fingerprint, dimension and numerics (the precision ``auto`` can resolve
differently on other hardware: pin it on mixed clusters), and every result carries that signature
again, so a restarted actor on another node cannot slip in other bits.

Faults: actors are created with ``max_restarts`` and ``max_task_retries``; a worker process that
dies is restarted by Ray (model loaded again) and its pending chunks are run again. Embedding a
chunk is a pure function of its texts, so a retried chunk returns the same bits. A worker that
keeps dying ends the job with an :class:`EngineError`; the shards finished so far are kept.

``ray`` is imported only here and only when the engine is used; without it installed asking for
the engine is a one-line :class:`EngineError`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bitextmine import __version__
from bitextmine.errors import BitextmineError, InputError, MismatchError
from bitextmine.events import Listener, task

T = TypeVar("T")

#: Test hook: the path of a marker file; the first actor call that creates it kills its own process.
DIE_ONCE_ENV = "BITEXTMINE_RAY_DIE_ONCE"

_INSTALL = "pip install 'bitextmine[ray]'"


class EngineError(BitextmineError):
    """The execution engine (Ray) is missing, unreachable, or its workers cannot run the encoder."""


@dataclass
class RayOptions:
    """Where and how wide to run the encoder actors."""

    address: str | None = None  # None: Ray's default (RAY_ADDRESS, a cluster started on this machine, else a new local one);
    #                             "auto": an existing cluster only; "local": a new local runtime; "HOST:PORT"; "ray://HOST:PORT"
    workers: int | None = None  # encoder actors; None: as many as the cluster's CPUs (GPUs when gpus_per_worker > 0) hold
    cpus_per_worker: float = 1.0  # CPUs reserved per actor (its torch threads)
    gpus_per_worker: float = 0.0  # GPUs reserved per actor (0: CPU actors)
    max_restarts: int = 3  # times each actor is restarted after its process dies (its pending chunks are run again)
    in_flight: int = 2  # chunks queued per actor (bounds the driver's memory)
    startup_timeout: float = 900.0  # seconds to wait for every actor to load the model

    def check(self) -> None:
        """Raise InputError (``param`` names the field) for a setting that cannot work."""
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1):
            raise InputError(f"{{param}} must be a whole number of at least 1, not {self.workers!r}", param="workers")
        if not self.cpus_per_worker > 0:
            raise InputError(f"{{param}} must be more than 0, not {self.cpus_per_worker!r}", param="cpus_per_worker")
        if not self.gpus_per_worker >= 0:
            raise InputError(f"{{param}} must be 0 or more, not {self.gpus_per_worker!r}", param="gpus_per_worker")
        if self.max_restarts < 0 or self.in_flight < 1:
            raise InputError("max_restarts must be 0 or more and in_flight at least 1")


@dataclass
class _Stats:
    sentences: int = 0
    truncated: int = 0  # sentences cut at max_tokens (counted by the actors, summed here)


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs of the model the actors loaded (the manifest's settings, the summary)."""

    source: str
    fingerprint: str
    recipe: Any  # bitextmine.models.recipe.Recipe
    dim: int


def import_ray():
    """The ``ray`` module, or an EngineError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineError(f"the Ray engine needs the ray package, which is not installed: {_INSTALL}", param="engine") from None
    return ray


def _die_once(marker: str) -> None:
    """Test hook: exit this process without clean-up if this call is the first to create ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


class _EncodeActor:
    """One encoder per actor process (made a Ray actor class by :class:`RayEncoder`)."""

    def __init__(self, opts, source: str) -> None:
        from bitextmine.encoder import load_encoder

        self.error: tuple[str, str, tuple[str, ...]] | None = None
        self.info: dict = {}
        try:
            self.enc = load_encoder(opts)
        except BitextmineError as e:  # reported by describe(): the driver re-raises it as the same one-line error
            self.error = (type(e).__name__, e.template, e.params)
            return
        lm = self.enc.lm
        self.info = {"version": __version__, "source": source, "fingerprint": lm.fingerprint, "recipe": lm.recipe,
                     "dim": self.enc.dim, "numerics": self.enc.numerics}

    def describe(self) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"error": self.error, "node": node, "pid": os.getpid(), **self.info}

    def encode(self, texts: list[str], die_once: str | None = None):
        if die_once:
            _die_once(die_once)
        before = self.enc.stats.truncated
        emb = self.enc.encode(texts)
        return emb, self.enc.stats.truncated - before, _signature(self.info)


def _signature(info: dict) -> tuple:
    return (info.get("version"), info.get("fingerprint"), info.get("dim"), tuple(sorted((info.get("numerics") or {}).items())))


def _check_reachable(address: str) -> None:
    """Fail fast (seconds, not Ray's minute of retries) when ``HOST:PORT`` does not answer."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"{{param}} must be auto, local or HOST:PORT, not {address!r}", param="address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise EngineError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one there with "
                          f"`ray start --head --port {port}` or choose another {{param}}", param="address") from None


def connect(address: str | None) -> bool:
    """Connect this process to Ray; True if this call did (so the caller disconnects), False if it already was."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    try:  # the dashboard setting only matters where this starts a runtime; errors say what went wrong, not Ray's logs
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        raise EngineError(f"cannot connect to Ray at {address or 'the default address'}: {msg}; start a cluster with "
                          "`ray start --head` or choose another {param}", param="address") from None
    return True


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    tail = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "^"))]
    return (tail[-1] if tail else type(cause).__name__)[:300]


def _reraise(info: dict) -> None:
    """Raise the BitextmineError an actor reported (same class, same parameters) or an EngineError."""
    from bitextmine import errors

    name, template, params = info["error"]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BitextmineError)):
        cls = EngineError
    raise cls(f"on a Ray worker: {template}", param=params)


def check_agree(infos: list[dict]) -> dict:
    """The first actor's description, after checking every actor loaded the model and computes the same bits."""
    for info in infos:
        if info["error"]:
            _reraise(info)
    first = infos[0]
    for i, info in enumerate(infos):
        if info["version"] != __version__:
            raise MismatchError(f"Ray worker {i} runs bitextmine {info['version']}, this process {__version__}: "
                                "install the same version on every node")
        if _signature(info) != _signature(first):
            raise MismatchError(f"Ray workers 0 and {i} would compute different embeddings (model {first['fingerprint']}, "
                                f"{_describe(first['numerics'])}; and {info['fingerprint']}, {_describe(info['numerics'])}); "
                                "install the same model on every node and pin {precision}, {device} and {token_budget}",
                                param=("precision", "device", "token_budget"))
    return first


class RayEncoder:
    """Stands in for an :class:`~bitextmine.encoder.Encoder` in :func:`~bitextmine.encode_job.encode_corpus`.

    Starts ``opts.workers`` actors that each load the model ``enc_opts`` names, checks they agree,
    and embeds chunks on them. Use as a context manager (or call :meth:`close`): it removes the
    actors and disconnects from Ray if it connected.
    """

    def __init__(self, enc_opts, opts: RayOptions | None = None) -> None:
        from bitextmine.encoder import check_options

        self.opts = opts or RayOptions()
        self.opts.check()
        check_options(enc_opts)
        self._owns = connect(self.opts.address)
        self.actors: list = []
        try:
            self._start(enc_opts)
        except BaseException:
            self.close()
            raise

    def _start(self, enc_opts) -> None:
        import ray

        o = self.opts
        n = self._fit(o.workers)
        src = enc_opts.model
        local = Path(src).expanduser()
        # A model folder given relative to the driver's folder: the actors get its absolute path (the manifest keeps `src`).
        load = replace(enc_opts, model=str(local.resolve())) if src != "default" and local.is_dir() else enc_opts
        cls = ray.remote(num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker, max_restarts=o.max_restarts,
                         max_task_retries=o.max_restarts)(_EncodeActor)
        self.actors = [cls.remote(load, src) for _ in range(n)]
        try:
            infos = ray.get([a.describe.remote() for a in self.actors], timeout=o.startup_timeout)
        except ray.exceptions.GetTimeoutError:
            raise EngineError(f"the {n} Ray workers did not all start within {o.startup_timeout:.0f} s (the cluster has "
                              f"{_resources(ray.available_resources())} free); lower {{param}}", param="workers") from None
        except ray.exceptions.RayError as e:
            raise EngineError(f"a Ray worker could not start the encoder ({_first_line(e)}); every node needs bitextmine "
                              f"{__version__} ({_INSTALL}) and the model") from None
        first = check_agree(infos)
        self.signature = _signature(first)
        self.lm = ModelInfo(first["source"], first["fingerprint"], first["recipe"], first["dim"])
        self.numerics = dict(first["numerics"])
        self.dtype = self.numerics["dtype"]
        self.stats = _Stats()
        self.engine = {"name": "ray", "workers": n, "nodes": len({i["node"] for i in infos}),
                       "cpus_per_worker": o.cpus_per_worker, "gpus_per_worker": o.gpus_per_worker}

    def _fit(self, n: int | None) -> int:
        """How many actors the cluster holds (n None), or raise InputError if it cannot hold ``n``."""
        import ray

        have = ray.cluster_resources()
        o = self.opts
        fits = int(have.get("CPU", 0) // o.cpus_per_worker)
        if o.gpus_per_worker > 0:
            fits = min(fits, int(have.get("GPU", 0) // o.gpus_per_worker))
        if n is None:
            if fits < 1:
                raise InputError(f"the Ray cluster ({_resources(have)}) cannot hold one worker of {o.cpus_per_worker:g} CPUs and "
                                 f"{o.gpus_per_worker:g} GPUs; lower {{param}}", param=("cpus_per_worker", "gpus_per_worker"))
            return fits
        if n > fits:
            raise InputError(f"the Ray cluster ({_resources(have)}) holds at most {fits} workers of {o.cpus_per_worker:g} CPUs "
                             f"and {o.gpus_per_worker:g} GPUs, not {n}; lower {{param}}", param=("workers", "cpus_per_worker"))
        return n

    @property
    def dim(self) -> int:
        return self.lm.dim

    def pids(self) -> list[int]:
        """The actors' current process ids (one changes when Ray restarts an actor)."""
        import ray

        return [i["pid"] for i in ray.get([a.describe.remote() for a in self.actors])]

    def encode(self, texts: list[str]):
        """Embed one list of texts on an actor (same bits as ``Encoder.encode`` with the same settings)."""
        return next(self.encode_stream([texts]))[1]

    def encode_stream(self, chunks: Iterable[T], texts: Callable[[T], list[str]] | None = None) -> Iterator[tuple[T, Any]]:
        """Embed chunk after chunk on the actors: yields ``(chunk, embeddings)`` in input order.

        At most ``in_flight`` chunks per actor are queued; each goes to the actor with the fewest.
        """
        get = texts or (lambda c: c)
        die = os.environ.get(DIE_ONCE_ENV) or None
        window: deque = deque()
        load = [0] * len(self.actors)
        limit = len(self.actors) * self.opts.in_flight
        try:
            for chunk in chunks:
                i = min(range(len(load)), key=load.__getitem__)
                load[i] += 1
                window.append((chunk, i, self.actors[i].encode.remote(get(chunk), die)))
                while len(window) >= limit:
                    yield self._take(window, load)
            while window:
                yield self._take(window, load)
        finally:
            window.clear()

    def _take(self, window: deque, load: list[int]):
        import ray

        chunk, i, ref = window.popleft()
        load[i] -= 1
        try:
            emb, truncated, sig = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, BitextmineError):
                raise e.cause from None
            raise EngineError(f"a Ray worker failed to embed a chunk: {_first_line(e)}") from None
        except ray.exceptions.RayError as e:
            raise EngineError(f"a Ray worker died and was restarted {self.opts.max_restarts} times ({_first_line(e)}); the "
                              "finished shards are kept: rerun to resume") from None
        if sig != self.signature:
            raise MismatchError(f"a restarted Ray worker computes other embeddings ({sig[1]}, {dict(sig[3])}) than the others "
                                f"({self.lm.fingerprint}, {self.numerics}); pin {{precision}}, {{device}} and {{token_budget}} and rerun to "
                                "resume", param=("precision", "device", "token_budget"))
        self.stats.sentences += len(emb)
        self.stats.truncated += truncated
        return chunk, emb

    def close(self) -> None:
        """Remove the actors; disconnect from Ray if this encoder connected."""
        try:
            import ray
        except ImportError:
            return
        for a in self.actors:
            with contextlib.suppress(ray.exceptions.RayError, ValueError):  # already gone
                ray.kill(a, no_restart=True)
        self.actors = []
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def __enter__(self) -> RayEncoder:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(n: dict) -> str:
    return f"{n.get('dtype')} on {n.get('device')}, {n.get('forward')} forward, {n.get('token_budget')}-token batches"


def _resources(r: dict) -> str:
    return ", ".join(f"{r.get(k, 0):g} {k}s" for k in ("CPU", "GPU"))


def open_ray_encoder(enc_opts, opts: RayOptions | None = None, listener: Listener | None = None) -> RayEncoder:
    """Connect to Ray and start the encoder actors, reported to ``listener`` as a task of unit "model"."""
    import_ray()
    with task(listener, f"starting Ray workers with model {enc_opts.model}", unit="model"):
        return RayEncoder(enc_opts, opts)
