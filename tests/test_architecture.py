"""The layout shows the flow: components import only downwards, no import circle (between
components, and between any two modules, counting imports inside functions too), no module that
needs ``noqa: E402`` to load, no module over 400 lines, and the results layer without torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "saliency_sanity"

#: Each component's layer: a component may import only from its own layer or lower ones.
LAYERS = {
    "__init__": 0, "_registry": 0, "_io": 0, "_guard": 0, "_imports": 0, "performance": 0,
    "_errors": 0, "_arch": 0, "_hash": 0,
    "metrics": 1, "postprocess": 1, "scores": 1, "methods": 1, "models": 1, "data": 1,
    "randomization": 1, "faithfulness": 1, "grids": 1,
    "training": 2, "results": 2, "io_inputs": 2, "io_models": 2,
    "plots": 3, "plots_critiques": 3, "plots_faithfulness": 3, "plots_shah": 3, "engine": 3,
    "localization": 3, "plots_localization": 3,
    "checks": 4,
    "critiques": 5, "verdicts": 5,
    "report": 6,
    "demo": 7, "cli": 8, "__main__": 9,
}


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> dict[str, set[tuple[str, str]]]:
    """Component -> {(imported component, importing file)} for imports across components."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        mod = ".".join(rel.parts)
        pkg = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod.rpartition(".")[0]
        if mod.endswith(".__init__"):
            mod = pkg
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                if node.module:
                    targets = [".".join([*base, node.module])]
                else:
                    targets = [".".join([*base, a.name]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "saliency_sanity"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("saliency_sanity")]
            for t in targets:
                a, b = _component(mod), _component(t)
                if b == "__version__":
                    b = "__init__"
                if a != b:
                    out[a].add((b, str(f.relative_to(ROOT))))
    return out


def test_every_component_has_a_layer():
    found = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert found <= set(LAYERS), f"give these a layer: {sorted(found - set(LAYERS))}"


def test_imports_go_downwards_only():
    upward = [f"{where}: {a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
              for a, targets in _edges().items() for b, where in targets
              if LAYERS[b] > LAYERS[a]]
    assert not upward, "\n".join(upward)


def test_no_import_circle_between_components():
    graph = {a: {b for b, _ in t} for a, t in _edges().items()}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                pytest.fail("import circle: " + " -> ".join([*path, n, m]))
            if m not in state:
                visit(m, [*path, n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def _module_graph(root: Path) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the package: line} for every import statement anywhere
    in the module (also inside functions and ``TYPE_CHECKING`` blocks). ``from pkg import a``
    is an import of ``pkg.a`` when that is a module, else of ``pkg`` (its ``__init__``)."""
    top = root.name
    mods: dict[str, tuple[Path, bool]] = {}
    for f in root.rglob("*.py"):
        name = ".".join(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = name.endswith(".__init__")
        mods[name[: -len(".__init__")] if is_pkg else name] = (f, is_pkg)
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for mod, (f, is_pkg) in mods.items():
        pkg = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    src = f"{base}.{node.module}" if node.module else base
                elif (node.module or "").split(".")[0] == top:
                    src = node.module or ""
                else:
                    continue
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == top]
            for t in targets:
                if t in mods and t != mod:
                    graph[mod].setdefault(t, node.lineno)
    return graph


def _module_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each import circle as a path ``a -> b -> ... -> a`` (one per strongly connected group
    of modules, found depth first)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                loop = [*path[path.index(m):], m] if m in path else [n, m]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append(loop)
            elif m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def _describe(graph: dict[str, dict[str, int]], loop: list[str]) -> str:
    steps = zip(loop, loop[1:], strict=False)
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in steps) + f" -> {loop[-1]}"


def test_no_import_circle_between_modules():
    """Also imports inside functions: a circle there works only by the order of the calls."""
    graph = _module_graph(ROOT)
    loops = _module_cycles(graph)
    assert not loops, "import circles:\n" + "\n".join(_describe(graph, c) for c in loops)


def test_a_circle_through_a_function_import_is_found(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n    return g\n")
    (pkg / "c.py").write_text("import toy.a\n")
    graph = _module_graph(pkg)
    assert graph["toy.a"] == {"toy.sub.b": 1} and graph["toy.sub.b"] == {"toy.a": 2}
    assert graph["toy.c"] == {"toy.a": 1}
    assert _module_cycles(graph) == [["toy.a", "toy.sub.b", "toy.a"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert _module_cycles(_module_graph(pkg)) == []


def test_no_late_imports_and_no_long_modules():
    late = [str(f.relative_to(ROOT)) for f in ROOT.rglob("*.py")
            if "noqa: E402" in f.read_text(encoding="utf-8")]
    assert not late, f"modules that need imports after code: {late}"
    long = {str(f.relative_to(ROOT)): n for f in ROOT.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_results_layer_imports_no_torch():
    code = ("import sys, saliency_sanity.results, saliency_sanity.results.ranking; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
