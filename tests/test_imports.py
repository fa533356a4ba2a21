"""The module graph of engine/ and kernels/: every module imports, and no two import each other
(directly or through others), at module level or inside functions."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("kernels/**/*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def module_imports(name: str, source: str, modules: dict, nested: bool = False) -> set[str]:
    """Project modules that `name` imports at module level (not in functions or `if` blocks), or
    anywhere in it with `nested`. `from pkg import sub` is an import of pkg.sub; the importer's own
    packages are not counted (Python imports them before the module anyway)."""
    found = set()
    tree = ast.parse(source)
    for node in (ast.walk(tree) if nested else tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found | parents if m in modules and m != name and m not in own}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = {"p": None, "p.x": None, "p.y": None}
    assert module_imports("p.x", "from p import y\nimport p\n", modules) == {"p.y"}
    assert module_imports("p", "from p.x import f\n", modules) == {"p.x"}


@pytest.mark.parametrize("nested", [False, True], ids=["module_level", "inside_functions_too"])
def test_no_import_cycle_among_engine_and_kernels(nested):
    graph = {name: module_imports(name, path.read_text(), MODULES, nested) for name, path in MODULES.items()}
    assert cycles(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)
