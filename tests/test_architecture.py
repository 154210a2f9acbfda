"""The architecture's import rules, checked on the real import graph (grimp, import-linter):
the layer and forbidden contracts in pyproject.toml, no import circle anywhere in voxid,
and Lightning imported by voxid.training alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("voxid", include_external_packages=True)


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one voxid module (Tarjan, iterative)."""
    mods = sorted(m for m in graph.modules if m == "voxid" or m.startswith("voxid."))
    inside = set(mods)
    succ = {m: sorted(graph.find_modules_directly_imported_by(m) & inside) for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in mods:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on.add(v)
            for j in range(i, len(succ[v])):
                w = succ[v][j]
                if w not in index:
                    work += [(v, j + 1), (w, 0)]
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
    return out


def test_no_import_circle_in_voxid(graph):
    cycles = _cycles(graph)
    detail = [
        " -> ".join(graph.find_shortest_chain(importer=c[0], imported=c[1]) or c) for c in cycles
    ]
    assert not cycles, f"import circles: {cycles}; e.g. {detail}"


def test_the_cycle_finder_sees_a_circle():
    g = grimp.ImportGraph()
    for m in ("voxid", "voxid.a", "voxid.b", "voxid.c"):
        g.add_module(m)
    g.add_import(importer="voxid.a", imported="voxid.b")
    g.add_import(importer="voxid.b", imported="voxid.c")
    g.add_import(importer="voxid.c", imported="voxid.a")
    assert _cycles(g) == [["voxid.a", "voxid.b", "voxid.c"]]


def test_only_training_imports_lightning(graph):
    users = set()
    for ext in ("lightning", "pytorch_lightning"):
        if ext in graph.modules:
            users |= graph.find_modules_that_directly_import(ext)
    assert users, "expected voxid.training to import Lightning"
    assert {m for m in users if not m.startswith("voxid.training.")} == set(), users
