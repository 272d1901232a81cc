"""Imports point one way: no cycles between DocTune's modules (imports inside functions count), and the layers
hold: `backend/` is the library (it imports nothing from `actors/` or `dashboard/`), `actors/` runs it on Ray
(nothing from `dashboard/`), and `dashboard/` talks to the client only (plus the `backend/` config modules)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "actors", "dashboard")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> dict[str, int]:
    """Every DocTune module `path` imports, anywhere in the file (inside functions too), with its line."""
    out: dict[str, int] = {}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level` steps up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from actors import runs` imports the module actors.runs; `from actors.runs import x` imports actors.runs
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import backend.store.core` -> the deepest module known
                target = target.rpartition(".")[0]
            if target and target != name:
                out.setdefault(target, node.lineno)
    return out


def graph() -> dict[str, dict[str, int]]:
    mods = modules()
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def allowed(importer: str, imported: str) -> bool:
    layer, target = importer.split(".")[0], imported.split(".")[0]
    if layer == "backend":
        return target == "backend"
    if layer == "actors":
        return target in {"backend", "actors"}
    # dashboard: its own modules, the client, and configs (their dataclasses build the forms)
    return (target == "dashboard" or imported == "actors.client" or imported == "backend.config"
            or imported.endswith("_config") and target == "backend")


def test_no_import_cycles_not_even_inside_functions():
    found = cycles(graph())
    assert not found, "import cycles (move the shared piece down into a module of its own): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_layers_import_downwards_only():
    g, mods = graph(), modules()
    wrong = [f"{mods[a].relative_to(REPO)}:{line} imports {b}" for a, targets in sorted(g.items())
             for b, line in sorted(targets.items()) if not allowed(a, b)]
    assert not wrong, "imports across layers:\n" + "\n".join(wrong)


def test_the_checker_sees_function_local_imports_and_cycles():
    g = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 3}, "d": {"a": 1}}
    assert cycles(g) == [["a", "b", "c"]]
    here = imports_of(REPO / "actors" / "client.py", "actors.client", set(modules()))
    assert "actors.synth_run" in here  # imported inside DocTune.synth, not at the top
