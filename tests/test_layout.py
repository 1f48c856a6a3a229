"""The layout the README promises. The dependency direction flows -> tasks -> models: `tasks/`
never imports Prefect or `flows`; `models/` imports neither `tasks` nor `flows` (nor Prefect).
And every error class of the package is defined in `tasks/errors.py`."""

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
