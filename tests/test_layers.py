"""The import rule of docs/architecture.md: a module imports only from its own stage of the
data flow or an earlier one, and no modules import each other in a cycle.

Stages, in the order data flows through them::

    base → data → space → ops → supernet → training → artifacts → app

Every import statement counts, also one inside a function (a lazy import is still a
dependency at run time; hiding it in a function would only hide a cycle), except imports under
``if TYPE_CHECKING:`` (annotations only). A registry's built-ins, loaded by module name on
first lookup, are not import statements and are not checked here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("base", "data", "space", "ops", "supernet", "training", "artifacts", "app")

# module (or package: every module below it) -> stage; the longest matching name wins
PLACES = {
    "avsearch.errors": "base", "avsearch._files": "base", "avsearch._threads": "base",
    "avsearch.codes": "base", "avsearch._version": "base", "avsearch.registry": "base", "avsearch.options": "base",
    "avsearch.data": "data",
    "avsearch.graph": "space", "avsearch.ops.registry": "space", "avsearch.ops.names": "space",
    "avsearch.spaces": "space",
    "avsearch.ops": "ops",
    "avsearch.supernet": "supernet",
    "avsearch.train": "training", "avsearch.recipe": "training", "avsearch.objectives": "training",
    "avsearch.losses": "training", "avsearch.inference": "training", "avsearch.metrics": "training",
    "avsearch.baselines": "training", "avsearch.index": "training", "avsearch.index_kernels": "training",
    "avsearch.diagnostics": "training",
    "avsearch.strategies": "training", "avsearch.distributed": "training",
    "avsearch.study": "training",
    "avsearch.arch": "artifacts", "avsearch.export": "artifacts", "avsearch.draw": "artifacts",
    "avsearch.plots": "artifacts",
    "avsearch.run": "app", "avsearch.compare": "app", "avsearch.verdict": "app",
    "avsearch.cli": "app", "avsearch.serve": "app", "avsearch.bridges": "app", "avsearch.testing": "app",
    "avsearch": "app",          # the package's __init__: the public API, re-exported
}

# where each installed package's sources lie in the repository
SOURCES = {"avsearch": ROOT / "avsearch", "avsearch.spaces": ROOT / "spaces",
           "avsearch.strategies": ROOT / "strategies"}


def modules() -> dict[str, Path]:
    """Every module of the package, by its installed name."""
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def stage(module: str) -> str | None:
    name = module
    while name:
        if name in PLACES:
            return PLACES[name]
        name = name.rpartition(".")[0]
    return None


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The avsearch modules ``module`` imports (``from pkg import sub`` names the submodule)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m == "avsearch" or m.startswith("avsearch.")}


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    for module, path in known.items():
        graph.add_node(module)
        for target in imports(module, path, known):
            if target != module:
                graph.add_edge(module, target)
    return graph


def test_every_module_has_a_stage():
    assert [m for m in modules() if stage(m) is None] == []


def test_no_module_imports_from_a_later_stage():
    rank = {s: i for i, s in enumerate(STAGES)}
    backward = sorted(f"{src} ({stage(src)}) imports {dst} ({stage(dst)})"
                      for src, dst in import_graph().edges
                      if stage(dst) is not None and rank[stage(dst)] > rank[stage(src)])
    assert backward == []


def test_no_import_cycles():
    assert list(nx.simple_cycles(import_graph())) == []


def test_the_rule_catches_a_backward_import(tmp_path):
    """The checker itself: a lazy import inside a function counts, TYPE_CHECKING does not."""
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from avsearch.run import run\n"
                      "def f():\n    from avsearch.cli import main\n")
    assert imports("avsearch.graph", source, modules()) == {"avsearch.cli"}
