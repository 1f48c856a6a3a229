"""Backends by the name a recipe gives, imported only when asked for (torch stays optional).

Adding a backend is one module under `models/detectors/` or `models/trackers/` with a
module-level ``create(**options)``; the name is the module's name.
"""

from __future__ import annotations

import importlib
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


def create(kind: str, name: str, **options):
    """A backend instance; an unknown name is a caller mistake (ValueError)."""
    return factory(kind, name)(**options)
