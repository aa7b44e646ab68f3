"""The package's structure: imports point one way (cli → pipeline → core) and never in a circle,
the library never imports the CLI, modules stay small, and ``import bitextmine`` stays light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bitextmine"
MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """bitextmine modules imported anywhere in ``path`` (functions included; ``if TYPE_CHECKING`` excluded)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for blk in ast.walk(tree) if _type_checking_block(blk) for n in ast.walk(blk)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule; `from mod import name` on mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for n in names:
            # the most specific bitextmine module the name refers to
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n and n != me and n != "bitextmine":
                found.add(n)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycle_anywhere() -> None:
    assert find_cycle(graph()) is None, f"import cycle: {' → '.join(find_cycle(graph()) or [])}"


def test_cycle_detector_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _is_cli(m: str) -> bool:
    return m in ("bitextmine.cli", "bitextmine.__main__") or m.startswith("bitextmine.cli.")


def test_library_never_imports_cli() -> None:
    bad = {m: sorted(d for d in deps if _is_cli(d)) for m, deps in graph().items() if not _is_cli(m)}
    assert not {m: d for m, d in bad.items() if d}


def test_modules_stay_small_or_say_why() -> None:
    """No module over ~400 lines unless its docstring says why it is one module."""
    big = []
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > MAX_LINES and "one module" not in doc.lower():
            big.append(f"{p.relative_to(PKG)} ({text.count(chr(10))} lines)")
    assert not big, big


def test_import_is_light() -> None:
    """``import bitextmine`` loads no torch, FAISS, transformers or numpy (the API is lazy)."""
    code = "import sys, bitextmine; print(sorted(m for m in ('torch', 'faiss', 'transformers', 'numpy', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_public_api_names_resolve() -> None:
    import bitextmine as bm

    for name in bm.__all__:
        assert getattr(bm, name) is not None, name
    # the functions keep their names even after their modules are imported
    import bitextmine.encode_job  # noqa: F401
    import bitextmine.mining  # noqa: F401

    assert callable(bm.encode) and callable(bm.mine) and callable(bm.encode_corpus)
