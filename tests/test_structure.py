"""The package's shape: short functions, no import cycles, a thin command line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "feratt"
MAX_FUNCTION_LINES = 80
MAX_CLI_LINES = 600
CLI_MODULES = ("cli.py", "cli_options.py")


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for name, path in _modules().items():
        for node in _functions(ast.parse(path.read_text())):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package imports its submodules as a matter of course; a cycle through it is not a design cycle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_command_line_is_thin() -> None:
    cli = PACKAGE / "cli.py"
    assert len(cli.read_text().splitlines()) <= MAX_CLI_LINES
    forbidden = ("numpy", "h5py", "torch", "cv2")
    for name in CLI_MODULES:
        path = PACKAGE / name
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in forbidden for a in node.names), (name, node.lineno)
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in forbidden, (name, node.lineno)
            elif isinstance(node, ast.Attribute) and node.attr in ("load", "loads"):
                assert not (isinstance(node.value, ast.Name) and node.value.id == "json"), (name, node.lineno)


def _package(module: str) -> str:
    """The subpackage a module belongs to (feratt.training.models.feratt: training); a top-level module
    (feratt.errors, feratt.cli) stands for itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else module


def test_no_import_cycles_between_packages() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        source = _package(name)
        graph.setdefault(source, set())
        for target in _imports(name, path, modules):
            if _package(target) != source:
                graph[source].add(_package(target))
    assert _cycles(graph) == []
    # The layers: stages over the artifacts, the artifacts over the settings they record.
    assert "artifacts" not in graph["config"] and not graph["artifacts"] & {
        "datasets",
        "renderer",
        "training",
    }


#: The names of the files feratt writes: only the artifacts layer spells them out.
FILE_NAMES = (
    '"index.json"',
    '"config.json"',
    '"folds.json"',
    '"metrics.jsonl"',
    '"render.json"',
    "h5py.File(",
)


def test_only_the_artifacts_layer_names_feratts_files() -> None:
    found = [
        f"{name}: {literal}"
        for name, path in _modules().items()
        if not name.startswith("feratt.artifacts.")
        for literal in FILE_NAMES
        if literal in path.read_text()
    ]
    assert found == []
