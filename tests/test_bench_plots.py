"""bench plots: PNGs written atomically from any result shaped like the protocols, plots as a leaf
of bitextmine.bench, and no import cycle anywhere in bitextmine.bench."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bitextmine.bench.bucc import optimize_threshold, sweep
from bitextmine.bench.plots import plot_bucc_split, plot_tatoeba
from bitextmine.bench.tatoeba import LangResult

BENCH = Path(__file__).resolve().parents[1] / "bitextmine" / "bench"
PNG = b"\x89PNG\r\n\x1a\n"


def test_bucc_plot(tmp_path):
    rng = np.random.default_rng(0)
    cands = {(f"s{i}", f"t{i if rng.random() < 0.6 else i + 1000}"): float(rng.normal(1.1, 0.1)) for i in range(300)}
    gold = {(f"s{i}", f"t{i}") for i in range(250)}
    sw, best = sweep(cands, gold), optimize_threshold(cands, gold)
    out = tmp_path / "plots" / "b.png"
    assert plot_bucc_split(sw, out, applied=1.15, tuned_on="sample", best=best, title="t") == out
    empty = tmp_path / "plots" / "empty.png"
    plot_bucc_split(sweep({}, gold), empty, applied=float("inf"), tuned_on="sample", best=optimize_threshold({}, gold), title="t")
    assert out.read_bytes()[:8] == PNG and empty.read_bytes()[:8] == PNG
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.png", "empty.png"]  # no temporary file left


def test_plots_read_only_what_the_protocols_name(tmp_path):
    score = np.array([1.3, 1.2, 1.1, 1.0])
    sw = SimpleNamespace(score=score, is_gold=np.array([True, True, False, True]), precision=np.array([1, 1, 2 / 3, 3 / 4]),
                         recall=np.array([1 / 3, 2 / 3, 2 / 3, 1]), f1=np.array([0.5, 0.8, 2 / 3, 6 / 7]), gold=3)
    best = SimpleNamespace(threshold=1.0, precision=0.75, recall=1.0, f1=6 / 7)
    plot_bucc_split(sw, tmp_path / "b.png", applied=1.05, tuned_on="training", best=best, title="t", margin="distance")
    langs = [SimpleNamespace(lang=x, xx2eng=a, eng2xx=b, mean=(a + b) / 2) for x, a, b in (("aaa", 0.9, 0.8), ("bbb", 0.5, 0.7))]
    plot_tatoeba(langs, tmp_path / "t.png", averages={"evaluated": {"mean": 0.725, "languages": 2}})
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG and (tmp_path / "t.png").read_bytes()[:8] == PNG


def test_tatoeba_plot_replaces_the_old_file(tmp_path):
    out = tmp_path / "tatoeba.png"
    out.write_bytes(b"old")
    plot_tatoeba([LangResult("deu", 10, 0.9, 0.8), LangResult("fra", 10, 0.7, 0.95)], out)
    assert out.read_bytes()[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ["tatoeba.png"]


def bench_imports() -> dict[str, set[str]]:
    """``{module: bitextmine.bench modules it imports}`` for every module of bitextmine/bench, counting
    imports inside functions and under TYPE_CHECKING too."""
    graph: dict[str, set[str]] = {}
    for path in BENCH.rglob("*.py"):
        parts = path.relative_to(BENCH.parents[1]).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                deps.add(base)
                deps.update(f"{base}.{a.name}" for a in node.names)  # "from pkg import module"
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle_in_bench_and_plots_is_a_leaf():
    graph = bench_imports()
    assert {"bitextmine.bench.plots", "bitextmine.bench.tatoeba", "bitextmine.bench.bucc.run"} <= graph.keys()
    assert graph["bitextmine.bench.plots"] == set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*path, m, d])}"
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_importing_plots_loads_no_benchmark():
    code = "import sys, bitextmine.bench.plots; print(sorted(m for m in sys.modules if m.startswith('bitextmine.bench.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bitextmine.bench.plots']"
