"""The package's import graph: no cycles (function-level imports included), no upward imports
across the layers leaf ← core ← convex ← train/robust ← cli/estimators, and every module imports
on its own in a fresh interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "implicit_cvx"
LEAVES = {"implicit_cvx.numerics", "implicit_cvx.files"}
TOP = {"implicit_cvx", "implicit_cvx.cli", "implicit_cvx.estimators"}  # the root re-exports all
OPTIONAL = {"implicit_cvx.torch_interop"}  # needs the optional extra implicit_cvx[torch]


def _modules() -> dict:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def _imports(name: str) -> set:
    """Modules of the package that `name` imports anywhere (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name).split(".")[: len(_package_of(name).split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in MODULES else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES and m != name}


def layer(name: str) -> int:
    """0 leaf, 1 core, 2 convex, 3 train / robust, 4 interfaces (the root package, CLI, estimators)."""
    if name in LEAVES:
        return 0
    if name in TOP or name.startswith("implicit_cvx.cli."):
        return 4
    if name.startswith(("implicit_cvx.train", "implicit_cvx.robust")):
        return 3
    if name.startswith("implicit_cvx.convex"):
        return 2
    return 1


GRAPH = {name: _imports(name) for name in MODULES}


def cycles(graph: dict) -> list:
    """Every cycle reached by a depth-first walk of a module graph (as lists of modules)."""
    state, found = {}, []

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def upward(graph: dict) -> list:
    """(importer, imported) pairs where a module imports a higher layer."""
    return [(a, b) for a, deps in graph.items() for b in deps if layer(b) > layer(a)]


def test_no_import_cycles():
    assert not cycles(GRAPH), f"import cycles: {cycles(GRAPH)}"


def test_no_upward_imports():
    assert not upward(GRAPH), f"modules importing a higher layer: {upward(GRAPH)}"
    assert all(not GRAPH[name] for name in LEAVES), "a leaf module imports the package"


def test_the_checks_catch_a_cycle_and_an_upward_import():
    bad = {"implicit_cvx.model": {"implicit_cvx.wellposed"},
           "implicit_cvx.wellposed": {"implicit_cvx.model", "implicit_cvx.train.fit"}}
    assert cycles(bad) and upward(bad) == [("implicit_cvx.wellposed", "implicit_cvx.train.fit")]


_FRESH = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for mod in [m for m in sys.modules if m == "implicit_cvx" or m.startswith("implicit_cvx.")]:
        del sys.modules[mod]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=3))
print(chr(10).join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first_in_a_fresh_package():
    """Each module imported first, with nothing of the package loaded before it (third-party
    libraries stay cached, so this takes seconds, not a fresh interpreter per module)."""
    names = sorted(n for n in set(MODULES) - OPTIONAL if not n.endswith("__main__"))  # __main__ runs
    proc = subprocess.run([sys.executable, "-c", _FRESH, *names], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
