"""Backends by the name a recipe gives, imported only when asked for (torch stays optional).

Adding a backend is one module under `models/detectors/` or `models/trackers/` with a
module-level ``create(**options)``; the name is the module's name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import models.detectors as _detectors
import models.trackers as _trackers


def available(kind: str) -> list[str]:
    package = {"detector": _detectors, "tracker": _trackers}[kind]
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def factory(kind: str, name: str):
    """A backend's ``create``; an unknown name is a caller mistake (ValueError)."""
    names = available(kind)
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(names) or 'none'}")
    return importlib.import_module(f"models.{kind}s.{name}").create


def check_options(create_fn, options: dict) -> None:
    """Every option ``create_fn`` does not take, at once (ValueError naming them and the
    ones it takes); a ``create(**options)`` checks its own."""
    params = inspect.signature(create_fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    taken = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [key for key in options if key not in taken]
    if unknown:
        raise ValueError(f"unknown option{'s' * (len(unknown) > 1)} "
                         f"{', '.join(map(repr, unknown))}; known: {', '.join(taken)}")


def create(kind: str, name: str, **options):
    """A backend instance; an unknown name or option is a caller mistake (ValueError)."""
    create_fn = factory(kind, name)
    check_options(create_fn, options)
    return create_fn(**options)
