"""The package's layout rules, checked on the code itself (issue 16)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import flows
import models
import tasks


def _modules():
    for package in (tasks, models, flows):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def test_every_error_class_is_defined_in_tasks_errors():
    """One place to find what the package raises: `tasks/errors.py`."""
    elsewhere = [f"{module.__name__}.{name}" for module in _modules()
                 for name, value in vars(module).items()
                 if inspect.isclass(value) and issubclass(value, BaseException)
                 and value.__module__ == module.__name__ and module.__name__ != "tasks.errors"]
    assert elsewhere == []


def _imports(package: str) -> dict[str, set[str]]:
    """Every module a package's files import (top-level and inside functions), by file."""
    import ast
    from pathlib import Path

    found = {}
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        found[str(path.relative_to(root))] = names
    return found


def test_dependencies_point_from_flows_to_tasks_to_models():
    """`tasks/` runs without Prefect and never reaches back into `flows/`; `models/` needs
    neither."""
    def offending(package: str, banned: tuple[str, ...]) -> list[str]:
        return [f"{path}: {name}" for path, names in _imports(package).items()
                for name in sorted(names) if name.split(".")[0] in banned]

    assert offending("tasks", ("prefect", "flows")) == []
    assert offending("models", ("prefect", "flows")) == []
