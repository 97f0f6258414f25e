"""The layer contract: imports point down only (pyproject's [tool.importlinter]), and no two
modules import each other, directly or round a longer loop, even inside functions."""

from __future__ import annotations

import os
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept() -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)  # import-linter reads pyproject.toml from the working directory
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
    finally:
        os.chdir(cwd)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion depth is not ours to spend)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_scc_finder_finds_a_planted_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(g) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    g = grimp.build_graph("node", cache_dir=None)
    graph = {m: {d for d in g.find_modules_directly_imported_by(m) if d.startswith("node.")} for m in g.modules}
    # A package's __init__ re-exporting its own modules is not a cycle in the code's design.
    for m, deps in graph.items():
        graph[m] = {d for d in deps if not (m.startswith(d + ".") or d.startswith(m + ".") and m.count(".") < d.count("."))}
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", ["node/roles", "node/net", "node/gossip", "node/wire", "node/pow", "node/gpu", "configs"])
def test_no_adversary_vocabulary_in_the_product(layer: str) -> None:
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sorted((ROOT / layer).rglob("*"))
        if p.suffix in (".py", ".toml", ".cu", ".cuh")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "cheat" in line.lower()
    ]
    assert not hits, f"the product mentions cheating (that lives in node/harness/adversaries): {hits}"
