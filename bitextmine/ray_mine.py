"""Mine on a Ray cluster: the k-NN of margin mining searched part by part on a pool of Ray actors.

:class:`RaySearch` stands in for :func:`bitextmine.knn.knn` and :func:`~bitextmine.knn.knn_pair`
(same arguments, same ``(D, I)``) when both sides are embedding folders; margin and selection run
in the driver as in a local run (:mod:`bitextmine.mining`). The database side is cut into parts
that follow its shards, each boundary rounded to a whole search block (``block_rows``), so every
vector is read, filed and compared in the blocks of a local run. The driver trains ONCE, with the
local code on the local sample (same rows and seed: same quantizer, means, codebooks); each part
is added to its own index on an actor, in parallel (parts dealt round-robin). Query parts are
whole local query blocks; each is searched on every actor against its part indexes, and the
per-part top-k lists are merged exactly (by similarity, ties by the lower row, padding last), then
post-processed as ``knn_pair`` does (:mod:`bitextmine.knn.fuse`). Per part the search is the local
one, so the results are the local ones; exact search is cut into (query part, database part)
tiles of the local computation, both directions from one pass. Where rows tie for the last places
an approximate index may keep other rows than a local run; indexes with a pre-transform (PCA,
OPQ) run FAISS's own multi-threaded products, whose last bits follow the thread count.

The workers read the parts from the folder path (memory-mapped): on several machines every node
needs the folders at the same path (a shared filesystem); only part descriptors, trained
quantizers and (rows, k) results travel. Product codes' candidates (:mod:`bitextmine.knn.rerank`) are
merged to each query's top ``depth`` first, then re-ranked exactly on the actors, query part by part,
from the database folder (random row reads on every node), as a local run re-ranks them. The search runs on the actors' CPUs. Graph indexes
(HNSW, NSG) span the whole database and are refused. An actor that dies ends the run with an
:class:`EngineError` (mining writes nothing before the end: rerun). ``ray`` is imported lazily.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np

from bitextmine import __version__, ray_engine
from bitextmine.errors import BitextmineError, InputError, MismatchError
from bitextmine.knn import SearchOptions, _nothing_to_search
from bitextmine.knn import rerank as _rerank
from bitextmine.knn.bylist import _by_list, _search_ivf_by_list
from bitextmine.knn.centred import _centred_spec, _Coarse
from bitextmine.knn.fuse import _fuse
from bitextmine.knn.ivf import _fill, _new_index, _search, _train
from bitextmine.knn.pairwise import _merge, exact_search
from bitextmine.knn.policy import _auto_nprobe, _check, _ivf_query_rows, _resolve, describe
from bitextmine.knn.sources import ArrayBlocks
from bitextmine.knn.tiles import precision
from bitextmine.ray_engine import EngineError, RayOptions
from bitextmine.ray_parts import Part, part_blocks, parts, whole
from bitextmine.store import EmbeddingStore, SubsetBlocks

Result = tuple[np.ndarray, np.ndarray]
Advance = Callable[[int], None] | None


class _SearchActor:
    """Holds this worker's part indexes and searches them (made a Ray actor class by :class:`RaySearch`)."""

    def __init__(self, tile_precision: str | None = None) -> None:
        if tile_precision:  # the driver's tiles (bf16 / fp32): the same bits; the IVF scan's estimates by this CPU (re-scored)
            os.environ["BITEXTMINE_KNN_PRECISION"] = tile_precision
            os.environ.setdefault("BITEXTMINE_KNN_SCAN_PRECISION", "auto")
        self.stores: dict[str, Any] = {}
        self.plans: dict[int, Any] = {}
        self.built: dict[int, list[tuple[int, Any]]] = {}

    def describe(self) -> dict:
        import ray

        return {"version": __version__, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def _source(self, part: Part) -> SubsetBlocks:
        if part.folder not in self.stores:  # the driver verified the checksums; sizes are checked again here
            self.stores[part.folder] = EmbeddingStore(part.folder, verify=False)
        return part_blocks(self.stores[part.folder], part)

    def exact(self, x: Part, y: Part, k: int, block_rows: int, both: bool):
        return exact_search(self._source(x), self._source(y), k, block_rows, None, both=both)

    def build(self, key: int, plan: dict, part: Part, block_rows: int) -> None:
        if key not in self.plans:
            self.plans[key] = (_Coarse(plan["spec"], plan["d"], plan["centroids"], plan["means"], plan["samples"])
                               if plan["kind"] == "centred" else faiss.deserialize_index(plan["index"]))
        src, trained = self._source(part), self.plans[key]
        if plan["kind"] == "centred":
            built = trained.build(src, plan["sides"][1], plan["nprobe"], block_rows)
        else:
            built, _ = _fill(faiss.clone_index(trained), plan["spec"], src, plan["nprobe"], False, block_rows)
        self.built.setdefault(key, []).append((part.a, built))

    def search(self, key: int, plan: dict, queries: Part, k: int, block_rows: int) -> Result:
        """``queries`` against every part index this actor holds for ``key``, merged (ids: rows of the database side)."""
        qs = self._source(queries)
        D, I = np.full((len(qs), k), -np.inf, np.float32), np.full((len(qs), k), -1, np.int64)
        for a, index in self.built.get(key, []):
            if plan["kind"] == "centred":
                probe = self.plans[key]._probe(plan["sides"][0], len(qs), plan["nprobe"])  # as the local search probes
                d, i = _search_ivf_by_list(index, qs, k, _ivf_query_rows(block_rows, plan["nprobe"], qs.dim), None, probe=probe)
            else:
                d, i = _search(index, False, qs, k, block_rows, None)
            D, I = _merge([D, d], [I, np.where(i >= 0, i + a, -1)], k)
        return D, I

    def rerank(self, queries: Part, db: Part, I: np.ndarray, k: int) -> Result:
        """The candidates ``I`` of ``queries`` (merged over every part) re-ranked exactly (:mod:`bitextmine.knn.rerank`)."""
        return _rerank.rerank(self._source(queries), self._source(db), I, k)

    def drop(self, key: int) -> None:
        self.plans.pop(key, None)
        self.built.pop(key, None)


class _Merged:
    """Running top-k of every query row over the partial results merged into it (exact, any order)."""

    def __init__(self, n: int, k: int, parts_per_row: int, progress: Advance) -> None:
        self.D, self.I = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        self.k, self.want, self.progress = k, parts_per_row, progress
        self.seen: dict[int, int] = {}

    def add(self, a: int, D: np.ndarray, I: np.ndarray) -> None:
        b = a + len(D)
        self.D[a:b], self.I[a:b] = _merge([self.D[a:b], D], [self.I[a:b], I], self.k)
        self.seen[a] = self.seen.get(a, 0) + 1
        if self.seen[a] == self.want and self.progress:
            self.progress(b - a)


class RaySearch:
    """A pool of search actors; :meth:`knn` and :meth:`knn_pair` take :func:`bitextmine.knn.knn`'s arguments.

    Use as a context manager (or call :meth:`close`): it removes the actors and disconnects from
    Ray if it connected. ``engine`` records the run: workers, nodes and the index of each direction.
    """

    def __init__(self, opts: RayOptions | None = None) -> None:
        self.opts = replace(opts or RayOptions(), gpus_per_worker=0.0)  # the search runs on the actors' CPUs
        self.opts.check()
        self._owns = ray_engine.connect(self.opts.address)
        self.actors: list = []
        self._keys = itertools.count()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        import ray

        o = self.opts
        n = ray_engine.RayEncoder._fit(SimpleNamespace(opts=o), o.workers)  # type: ignore[arg-type]  # the same rule as the encoder's
        cls = ray.remote(num_cpus=o.cpus_per_worker, max_restarts=0)(_SearchActor)
        # the tile precision measured here, once, not again (and maybe otherwise, under load) on every worker
        self.actors = [cls.remote(precision()) for _ in range(n)]
        try:
            infos = ray.get([a.describe.remote() for a in self.actors], timeout=o.startup_timeout)
        except ray.exceptions.GetTimeoutError:
            raise EngineError(f"the {n} Ray workers did not all start within {o.startup_timeout:.0f} s; lower {{param}}",
                              param="workers") from None
        except ray.exceptions.RayError as e:
            raise EngineError(f"a Ray worker could not start ({ray_engine._first_line(e)}); every node needs bitextmine {__version__} "
                              "(pip install 'bitextmine[ray]')") from None
        for i, info in enumerate(infos):
            if info["version"] != __version__:
                raise MismatchError(f"Ray worker {i} runs bitextmine {info['version']}, this process {__version__}: "
                                    "install the same version on every node")
        self.engine: dict[str, Any] = {"name": "ray", "workers": n, "nodes": len({i["node"] for i in infos}),
                                       "cpus_per_worker": o.cpus_per_worker, "index": {}}


    def knn(self, queries: Any, database: Any, k: int, index: str = "flat", *, progress: Advance = None, **options: Any) -> Result:
        o = SearchOptions(index, **options)
        _check(queries, database, k, o.block_rows)
        spec = _resolve(o.index, len(database), database.dim, o.nprobe, o.train_size, o.memory_budget)
        self.engine["index"]["forward"] = _shown(spec, k, len(database), o)
        return self._one_way(queries, database, k, spec, o, progress)

    def knn_pair(self, x: Any, y: Any, k: int, index: str = "flat", *, progress: Advance = None, **options: Any) -> tuple[Result, Result]:
        """Both directions, as :func:`bitextmine.knn.knn_pair` decides them (one training for both where it trains one)."""
        o = SearchOptions(index, **options)
        _check(x, y, k, o.block_rows)
        fwd_spec = _resolve(o.index, len(y), y.dim, o.nprobe, o.train_size, o.memory_budget)
        bwd_spec = _resolve(o.index, len(x), x.dim, o.nprobe, o.train_size, o.memory_budget)
        self.engine["index"].update(forward=_shown(fwd_spec, k, len(y), o), backward=_shown(bwd_spec, k, len(x), o))
        if fwd_spec[0].lower() == bwd_spec[0].lower() == "flat" and len(x) and len(y):
            return self._exact(x, y, k, o.block_rows, True, progress)  # type: ignore[return-value]
        coarse = shared = None
        if fwd_spec == bwd_spec and fwd_spec[0].lower() != "flat" and len(x) and len(y):
            if _centred_spec(fwd_spec[0]) is not None:
                coarse = _Coarse.train(fwd_spec[0], [x, y], fwd_spec[2], o.seed, o.block_rows, fit=[0, 1])
            else:
                _refuse_graph(fwd_spec[0])
                shared = _new_index(fwd_spec[0], x.dim)
                _train(shared, fwd_spec[0], [x, y], fwd_spec[2], o.seed, o.block_rows, False)
        fwd = self._one_way(x, y, k, fwd_spec, o, progress, coarse=coarse, sides=(0, 1), shared=shared)
        bwd = self._one_way(y, x, k, bwd_spec, o, progress, coarse=coarse, sides=(0, 1) if y is x else (1, 0), shared=shared)
        if fwd_spec[0].lower() != "flat" or bwd_spec[0].lower() != "flat":
            fwd, bwd = _fuse(fwd, bwd)  # as knn_pair does with two approximate directions (pairs pooled)
        return fwd, bwd


    def _one_way(self, qs: Any, db: Any, k: int, resolved: tuple, o: Any, progress: Advance, *,
                 coarse: Any = None, sides: tuple[int, int] = (0, 1), shared: Any = None) -> Result:
        """What ``bitextmine.knn._one_way`` does on the CPU, with the database split over the actors."""
        spec, nprobe, train_size = resolved
        k_eff = min(k, len(db))
        nothing = _nothing_to_search(len(qs), k_eff, progress)
        if nothing is not None:
            return nothing
        if spec.lower() == "flat":
            return self._exact(qs, db, k_eff, o.block_rows, False, progress)[0]
        if coarse is None and _centred_spec(spec) is not None:
            coarse, sides = _Coarse.train(spec, [qs, db], train_size, o.seed, o.block_rows, fit=[1]), (0, 1)
        if coarse is not None:
            nprobe = _auto_nprobe(coarse.nlist) if nprobe is None else int(nprobe)
            if nprobe < 1:
                raise InputError(f"{{param}} must be at least 1, got {nprobe}", param="nprobe")
            plan = {"kind": "centred", "spec": spec, "d": coarse.d, "centroids": coarse.quantizer.reconstruct_n(0, coarse.nlist),
                    "means": coarse.means, "samples": coarse.samples, "sides": sides, "nprobe": nprobe}
            qrows = _ivf_query_rows(o.block_rows, nprobe, qs.dim)
        else:
            _refuse_graph(spec)
            if shared is not None:
                empty = faiss.clone_index(shared)
            else:
                empty = _new_index(spec, db.dim)
                _train(empty, spec, [db], train_size, o.seed, o.block_rows, False)
            # settings checked here, before any work is sent; the query blocks are those the local search reads
            probe, _ = _fill(faiss.clone_index(empty), spec, ArrayBlocks(np.empty((0, db.dim), np.float32)), nprobe, False, o.block_rows)
            target = _by_list(probe)
            qrows = _ivf_query_rows(o.block_rows, int(target[0].nprobe), max(qs.dim, int(target[0].d))) if target is not None else o.block_rows
            plan = {"kind": "faiss", "spec": spec, "index": faiss.serialize_index(empty), "nprobe": nprobe}
        deep = _rerank.plan(spec, k_eff, db, o.rerank)  # the merged top candidates re-ranked on the actors, as locally
        return self._sharded(qs, db, k_eff, plan, qrows, o.block_rows, progress, deep)

    def _sharded(self, qs: Any, db: Any, k: int, plan: dict, qrows: int, block_rows: int,
                 progress: Advance, deep: int | None = None) -> Result:
        import ray

        key = next(self._keys)
        dparts, qparts = parts(db, block_rows), parts(qs, qrows)
        holders = list(range(min(len(self.actors), len(dparts))))
        ref = ray.put(plan)  # sent once to each actor (its first build keeps it); the searches need the small settings only
        meta = {n: plan[n] for n in ("kind", "sides", "nprobe") if n in plan}
        try:
            self._drain(((j % len(holders), "build", (key, ref, p, block_rows), None) for j, p in enumerate(dparts)), None)
            merged = _Merged(len(qs), deep or k, len(holders), progress)
            jobs = ((w, "search", (key, meta, q, deep or k, block_rows), q.a) for q in qparts for w in holders)
            self._drain(jobs, lambda a, r: merged.add(a, *r))
        finally:
            for a in self.actors:
                with contextlib.suppress(Exception):
                    a.drop.remote(key)
        if deep is None:
            return merged.D, merged.I
        out, side = _Merged(len(qs), k, 1, None), whole(db)
        self._drain(((j % len(self.actors), "rerank", (q, side, merged.I[q.a : q.b], k), q.a) for j, q in enumerate(qparts)),
                    lambda a, r: out.add(a, *r))
        return out.D, out.I

    def _exact(self, xs: Any, ys: Any, k: int, block_rows: int, both: bool, progress: Advance):
        """Exact search over the (x part, y part) grid, both directions from each tile when ``both``."""
        xp, yp = parts(xs, block_rows), parts(ys, block_rows)
        fwd = _Merged(len(xs), min(k, len(ys)), len(yp), progress)
        bwd = _Merged(len(ys), min(k, len(xs)), len(xp), progress) if both else None

        def done(tag: tuple[int, int], res) -> None:
            (fd, fi), back = res
            fwd.add(tag[0], fd, fi + tag[1])
            if bwd is not None:
                bwd.add(tag[1], back[0], back[1] + tag[0])

        jobs = ((n % len(self.actors), "exact", (p, q, k, block_rows, both), (p.a, q.a))
                for n, (p, q) in enumerate(itertools.product(xp, yp)))
        self._drain(jobs, done)
        return (fwd.D, fwd.I), (None if bwd is None else (bwd.D, bwd.I))


    def _drain(self, jobs: Iterator[tuple[int, str, tuple, Any]], done: Callable[[Any, Any], None] | None) -> None:
        """Run every job (actor, method, args, tag) with at most ``in_flight`` per actor queued; ``done(tag, result)`` as each ends."""
        pending: dict = {}
        limit = len(self.actors) * self.opts.in_flight
        for w, method, args, tag in jobs:
            pending[getattr(self.actors[w], method).remote(*args)] = tag
            while len(pending) >= limit:
                self._take(pending, done)
        while pending:
            self._take(pending, done)

    def _take(self, pending: dict, done: Callable[[Any, Any], None] | None) -> None:
        import ray

        (ref,), _ = ray.wait(list(pending), num_returns=1)
        tag = pending.pop(ref)
        try:
            res = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, BitextmineError):
                raise type(cause)(f"on a Ray worker: {cause.template}", param=cause.params) from None
            raise EngineError(f"a Ray worker failed to search: {ray_engine._first_line(e)}") from None
        except ray.exceptions.RayError as e:
            raise EngineError(f"a Ray worker died while mining ({ray_engine._first_line(e)}); nothing was written: rerun") from None
        if done is not None:
            done(tag, res)

    def close(self) -> None:
        """Remove the actors; disconnect from Ray if this search connected."""
        try:
            import ray
        except ImportError:
            return
        for a in self.actors:
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                ray.kill(a, no_restart=True)
        self.actors = []
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def __enter__(self) -> RaySearch:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _refuse_graph(spec: str) -> None:
    """InputError for an index whose structure spans the database (a graph; a graph as IVF quantizer is fine)."""
    if re.search(r"HNSW|NSG", re.sub(r"IVF\d+_(HNSW|NSG)\w*", "", spec.upper())):
        raise InputError(f"{{param}} {spec} is a graph over the whole database and cannot be split over Ray workers; "
                         "use flat or an IVF index", param="index")


def _shown(resolved: tuple, k: int, nb: int, o: SearchOptions) -> str:
    return describe(resolved[0], resolved[1], _rerank.depth(resolved[0], min(k, nb), nb, o.rerank))


def preflight(opts: RayOptions) -> None:
    """Before any work: ray installed, the options sound, a HOST:PORT address answering (one-line errors)."""
    ray = ray_engine.import_ray()
    opts.check()
    if opts.address not in (None, "auto", "local") and not ray.is_initialized():
        ray_engine._check_reachable(opts.address)


def ray_knn_pair(x: Any, y: Any, k: int, search: SearchOptions | None = None, opts: RayOptions | None = None,
                 progress: Advance = None) -> tuple[Result, Result]:
    """:func:`bitextmine.knn.knn_pair` of two embedding stores on Ray (``search``: its options, ``opts``: the cluster's)."""
    with RaySearch(opts) as rs:
        return rs.knn_pair(x, y, k, progress=progress, **vars(search or SearchOptions()))
