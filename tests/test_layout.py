"""The layout the README promises. The dependency direction flows -> tasks -> models: `tasks/`
never imports Prefect or `flows`; `models/` imports neither `tasks` nor `flows` (nor Prefect).
Inside `tasks/`, the stage folders import only their own layer and those below
(`flows/README.md` writes the order), and no imports (inside functions included) make a
circle. Every error class of the package is defined in `tasks/errors.py`."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"tasks": ("prefect", "prefect_dask", "prefect_ray", "flows"),
             "models": ("prefect", "prefect_dask", "prefect_ray", "flows", "tasks")}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prefect import flow\n    import flows.cli\n")
    assert imported_modules(module) == {"prefect", "flows.cli"}


def test_every_error_class_is_defined_in_tasks_errors():
    """One place to find what the package raises."""
    import flows
    import models
    import tasks

    elsewhere = []
    for package in (tasks, models, flows):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            elsewhere += [f"{info.name}.{name}" for name, value in vars(module).items()
                          if inspect.isclass(value) and issubclass(value, BaseException)
                          and value.__module__ == info.name and info.name != "tasks.errors"]
    assert elsewhere == []


# `tasks/` by layer, lowest first: a module may import its own layer and those below.
LAYERS = [("errors", "recipe", "labels", "safe_yaml", "progress"),
          ("store", "media", "annotations", "formats"),
          ("convert",), ("detect",), ("track",), ("compact",), ("export",), ("review",),
          ("report",)]


def _tasks_graph() -> dict[str, set[str]]:
    """Module -> the `tasks` modules it imports anywhere (functions included)."""
    paths = {}
    for path in (ROOT / "tasks").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in paths and m not in (name, "tasks")}
    return graph


def test_the_layers_are_the_ones_flows_readme_writes():
    readme = (ROOT / "flows" / "README.md").read_text()
    written = " <- ".join(", ".join(layer) for layer in LAYERS)
    assert written in readme, written


def test_tasks_import_only_their_layer_and_below():
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    graph = _tasks_graph()
    unplaced = sorted({m.split(".")[1] for m in graph if m != "tasks"} - set(layer))
    assert not unplaced, f"tasks/ folders or modules in no layer: {unplaced}"
    wrong = [f"{m} imports {d}" for m, deps in graph.items() if m != "tasks" for d in deps
             if layer[d.split(".")[1]] > layer[m.split(".")[1]]]
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_circles_in_tasks():
    """Imports inside functions count: one there must not hide a circle."""
    cycles = _cycles(_tasks_graph())
    assert not cycles, "\n".join(cycles)


def test_the_circle_check_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []
