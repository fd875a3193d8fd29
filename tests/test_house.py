"""The house stays tidy: read from the code's own imports (every `import`, including those inside
functions, which run later but are dependencies all the same), edgeprune's modules form no circle,
take no private name from one another, and every arrow between its parts points down the layer
table below. And the runtime side (bench/, the latency table, the run directory's files) imports
without torch, as on a device whose image has none."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgeprune"

# The layers, lowest first. A part is a subpackage or a top-level module of edgeprune; a part may
# import from its own modules and from parts of LOWER layers only, never from a part of its own
# layer or one above. The runtime side (errors .. bench) imports no torch: it is what the device runs.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("version", "manifest", "targets", "faults", "progress"),  # progress: how a long epoch shows it (rich)
    ("run",),  # paths of a run directory and atomic writes (torch-free: bench writes its timings there)
    ("bench",),  # onnxruntime and numpy only
    ("data", "metrics", "distributed"),
    ("models",),
    ("prune",),
    ("config", "latency"),  # latency: its model and table (torch-free), probes and the host's table (torch)
    ("rundir",),  # a run's format, checkpoints, resume and data, shared by train and export
    ("export", "teacher"),  # teacher: the --teacher run's model, checked and run (config finds its file)
    ("train", "hf"),
    ("report_plots",),
    ("report",),
    ("experiment",),
    ("cli",),
    ("__main__", ""),  # "" is the package itself: `import edgeprune` re-exports the public API
]
# what the device image runs: these modules (and all they import) never import torch or onnx
RUNTIME_MODULES = ("edgeprune.bench", "edgeprune.latency.table", "edgeprune.targets", "edgeprune.run")
TORCH = ("torch", "onnx", "torchvision", "timm", "transformers")


def module_files() -> dict[str, Path]:
    """Every module of edgeprune by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_files()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported edgeprune module
    name: str | None  # the name taken from it (`from target import name`), None for `import target`
    line: int
    lazy: bool  # inside a function: runs when the function is called, not when the module loads


def defined_in(module: str) -> set[str]:
    """Names a module binds itself (functions, classes, assignments), as opposed to names it imports."""
    names = set()
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def imports_of(module: str) -> tuple[list[Import], set[str]]:
    """The edgeprune imports of `module` and the other top-level packages it imports."""
    path = MODULES[module]
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found, external = [], set()
    tree = ast.parse(path.read_text())
    in_functions = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    for node in ast.walk(tree):
        lazy = id(node) in in_functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "edgeprune":
                    found.append(Import(module, alias.name, None, node.lineno, lazy))
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target.split(".")[0] != "edgeprune":
                external.add(target.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append(
                    Import(module, sub, None, node.lineno, lazy)
                    if sub in MODULES
                    else Import(module, target, alias.name, node.lineno, lazy)
                )
    return found, external


IMPORTS = {m: imports_of(m) for m in MODULES}


def graph() -> dict[str, set[str]]:
    """module -> the edgeprune modules it imports. A package's __init__ counts as a module like any
    other: `from edgeprune.models import build_model` depends on edgeprune/models/__init__.py, and so on
    all that file imports to re-export."""
    return {m: {i.target for i in IMPORTS[m][0] if i.target != m} for m in MODULES}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def rank(p: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if p in layer)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_part_has_a_layer():
    parts = {part(m) for m in MODULES}
    assert parts <= {p for layer in LAYERS for p in layer}, sorted(parts - {p for layer in LAYERS for p in layer})


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    # the check above could pass by never finding anything
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def arrows_up(imports: list[Import]) -> list[str]:
    """The imports from one part into another of the same layer or one above."""
    return [
        f"{i.source} (line {i.line}) imports {i.target}: {part(i.source) or 'edgeprune'} is not above "
        f"{part(i.target) or 'edgeprune'}"
        for i in imports
        if part(i.source) != part(i.target) and rank(part(i.source)) <= rank(part(i.target))
    ]


def test_every_arrow_points_down_the_layers():
    assert arrows_up([i for m in MODULES for i in IMPORTS[m][0]]) == []


def test_the_layer_check_sees_an_arrow_up():
    # the check above could pass by never finding anything: a bench module importing prune, lazily,
    # and data importing latency are seen; models importing errors, and a part importing itself, are not
    up = [Import("edgeprune.bench.x", "edgeprune.prune.pruner", "Pruner", 1, True)]
    up += [Import("edgeprune.data.x", "edgeprune.latency", "load_latency_model", 2, False)]
    down = [Import("edgeprune.models.x", "edgeprune.errors", "UserError", 3, False)]
    down += [Import("edgeprune.prune.x", "edgeprune.prune.groups", "Group", 4, True)]
    assert len(arrows_up(up + down)) == 2 and "bench is not above prune" in arrows_up(up)[0]


def private_uses(module: str, source: str) -> list[str]:
    """Private names (`_x`, not `__x__`) that `source`, the text of `module`, takes from other
    edgeprune modules: `from edgeprune.m import _x`, or `m._x` where `m` names another module."""
    wrong = []
    aliases = {}  # the names that stand for another edgeprune module here
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name in MODULES})
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("edgeprune"):
            for a in node.names:
                if f"{node.module}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif a.name.startswith("_") and not a.name.startswith("__") and node.module != module:
                    wrong.append(f"{module} (line {node.lineno}) imports {a.name} from {node.module}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            dotted = ast.unparse(node.value)
            target = aliases.get(dotted) or (dotted if dotted in MODULES else None)
            if target is not None and target != module:
                wrong.append(f"{module} (line {node.lineno}) uses {target}.{node.attr}")
    return wrong


def test_no_private_name_across_modules():
    assert [w for m in MODULES for w in private_uses(m, MODULES[m].read_text())] == []


def test_the_private_name_check_sees_one():
    source = textwrap.dedent("""
        import edgeprune.data.sources
        from edgeprune.data import own as o
        from edgeprune.models.external import _timm, __doc__
        from edgeprune.errors import first_line

        def f(x):
            return edgeprune.data.sources._x, o._y, o.z, x._w, first_line
    """)
    wrong = private_uses("edgeprune.data.loader", source)
    assert [w.split(") ")[1] for w in wrong] == [
        "imports _timm from edgeprune.models.external",
        "uses edgeprune.data.sources._x",
        "uses edgeprune.data.own._y",
    ]


def reachable(start: str) -> set[str]:
    """The modules that importing `start` may load, now or when one of its functions runs: with every
    module, the packages holding it, whose __init__ Python runs first (only what that runs at once: a
    function inside it, such as `edgeprune.__getattr__` for `edgeprune.Pruner`, is not the module's
    to call); and with a package named as a start, all its modules."""
    full = [start, *(s for s in MODULES if s.startswith(start + "."))]  # followed into their functions
    eager: list[str] = []  # parent packages reached as such: what their __init__ runs at once
    seen: dict[str, bool] = {}  # module -> followed into its functions too
    while full or eager:
        m, whole = (full.pop(), True) if full else (eager.pop(), False)
        if seen.get(m) is True or (m in seen and not whole):
            continue
        seen[m] = whole
        full += [i.target for i in IMPORTS[m][0] if whole or not i.lazy]
        eager += [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
    return set(seen)


def test_the_runtime_side_imports_no_torch_anywhere():
    """Read from the code: not even an import inside a function, which a device would one day call."""
    wrong = {
        m: sorted(IMPORTS[m][1] & set(TORCH))
        for start in RUNTIME_MODULES
        for m in reachable(start)
        if IMPORTS[m][1] & set(TORCH)
    }
    assert wrong == {}


@pytest.mark.parametrize("start", RUNTIME_MODULES)
def test_the_runtime_side_imports_with_torch_blocked(start):
    """Every module of the runtime side, and all they import, loaded in a fresh interpreter where
    `import torch` (and onnx) fails, as in the device image."""
    names = sorted(m for m in reachable(start) if m in MODULES)
    code = textwrap.dedent(f"""
        import importlib, sys
        for blocked in {TORCH!r}:
            sys.modules[blocked] = None  # any import of it now raises ImportError
        for name in {names!r}:
            importlib.import_module(name)
        loaded = [m for m in sys.modules if m.split(".")[0] in {TORCH!r} and sys.modules[m] is not None]
        assert not loaded, loaded
        print("clean", len({names!r}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert proc.returncode == 0 and f"clean {len(names)}" in proc.stdout, proc.stdout + proc.stderr
