"""The import graph of `tfllm/` runs one way, top to bottom, with no cycle.

Every import is read from the source with `ast` (module-level and
function-local alike, so a cycle cannot hide inside a function), resolved to
the tfllm module it names, and checked against the layer order of
docs/architecture.md:

    cli, launch → pipeline → benchmark → compress → training
      → {evaluation, inference, export} → {models, pretrained, data}
      → {distribute, config, recipes, utils, errors}

Packages in one layer may import each other (the cycle check still holds);
an import from a lower layer into a higher one fails, naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tfllm"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cli", "launch"}),
    frozenset({"pipeline"}),
    frozenset({"benchmark"}),
    frozenset({"serving"}),
    frozenset({"compress"}),
    frozenset({"training"}),
    frozenset({"evaluation", "inference", "export"}),
    frozenset({"models", "pretrained", "data"}),
    frozenset({"distribute", "config", "recipes", "utils", "errors"}),
)
LAYER_OF = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(dotted: str) -> str | None:
    """The tfllm module `dotted` names (a module, or a name inside one)."""
    while dotted:
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported tfllm module, line) for every import statement in the file."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] or [module]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.startswith("tfllm") else None
            if resolved and resolved != name:
                found.append((resolved, node.lineno))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    """The top-level package (or module) of `tfllm.<part>...`."""
    return module.split(".")[1] if "." in module else "tfllm"


def test_every_module_has_a_layer():
    parts = {_part(m) for m in MODULES} - {"tfllm"}
    missing = parts - set(LAYER_OF)
    assert not missing, f"add to LAYERS (and docs/architecture.md): {missing}"


def test_imports_run_down_the_layers():
    upward = []
    for name, imports in GRAPH.items():
        if name == "tfllm":
            continue
        for target, line in imports:
            if target == "tfllm":
                continue
            src, dst = _part(name), _part(target)
            if LAYER_OF[dst] < LAYER_OF[src]:
                upward.append(f"{MODULES[name].relative_to(ROOT.parent)}:{line} imports {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    edges = {name: sorted({t for t, _ in imports}) for name, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"a": ["b"], "b": ["a"]}, [["a", "b"]]),
        ({"a": ["b"], "b": ["c"], "c": []}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(source, expected):
    """The check above can fail: a two-module cycle is found, a chain is not."""
    graph = {name: [(t, 1) for t in targets] for name, targets in source.items()}
    assert _cycles(graph) == expected


MAX_MODULE_LINES = 450


def test_modules_stay_readable():
    """No module over ~450 lines: a long file is several jobs in one."""
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules: {long}"


# The command and pipeline layers import the library inside functions on purpose:
# flags parse (and `--help`, bad-flag errors, stage plans print) before TensorFlow
# loads. Everywhere else a function-local import must say why on its line or the
# line above (an optional heavy dependency such as tfmot).
LAZY_BY_DESIGN = ("tfllm/cli/", "tfllm/pipeline/")


def test_function_local_imports_say_why():
    unexplained = []
    for path in MODULES.values():
        rel = str(path.relative_to(ROOT.parent))
        if rel.startswith(LAZY_BY_DESIGN):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("tfllm"):
                    here = " ".join(lines[inner.lineno - 1 : inner.end_lineno])
                    above = lines[inner.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        unexplained.append(f"{rel}:{inner.lineno}")
    assert not unexplained, f"function-local imports without a reason: {sorted(set(unexplained))}"


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "generate", "export", "pipeline", "benchmark", "compress"]
)
def test_commands_parse_flags_before_tensorflow_loads(command):
    """The reason the cli/pipeline layers import lazily, checked in a fresh process
    (one per command: each defines its flags in absl's global registry)."""
    import subprocess
    import sys

    code = f"import sys, tfllm.cli.{command}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
