"""Dataset labels: a hierarchy loaded from a labels file, and the model-to-dataset mapping.

A label is a path whose parts are joined by ``/`` (``Task 1/Sub Task 1.2``), as Dataloop
and Label Studio name nested labels. A labels file is YAML (or JSON) in one of two shapes,
or plain text:

- a tree: ``{Task 1: {Sub Task 1.1: null, Sub Task 1.2: null}, Car: null}`` (lists of
  names are accepted as leaves: ``{Task 1: [Sub Task 1.1, Sub Task 1.2]}``);
- a list of paths: ``[Task 1/Sub Task 1.1, Car]``; in a ``.txt`` file, one path per line.

Every node is a valid label, a parent as much as its leaves. The mapping sends each model
label to one dataset label; model labels it does not name are dropped, and an empty
mapping keeps the model's own labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from tasks.errors import ConfigError
from tasks.safe_yaml import load_yaml

SEPARATOR = "/"


@dataclass(frozen=True)
class LabelTree:
    paths: tuple[str, ...]  # every node, parents before children, in file order

    def __contains__(self, label: str) -> bool:
        return label in self._set

    @property
    def _set(self) -> frozenset[str]:
        return frozenset(self.paths)

    def leaves(self) -> tuple[str, ...]:
        return tuple(p for p in self.paths
                     if not any(q.startswith(p + SEPARATOR) for q in self.paths))

    @staticmethod
    def parent(label: str) -> str | None:
        return label.rsplit(SEPARATOR, 1)[0] if SEPARATOR in label else None


def load_label_tree(path: str | Path) -> LabelTree:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read labels file ({e.strerror or e})") from e
    if source.suffix.lower() == ".txt":
        data: Any = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        try:
            data = json.loads(text) if source.suffix.lower() == ".json" else load_yaml(text)
        except (ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"{source}: labels file is not valid YAML/JSON: {e}") from e
    paths: list[str] = []
    _collect(data, "", paths, str(source))
    if not paths:
        raise ConfigError(f"{source}: labels file holds no labels")
    return LabelTree(tuple(dict.fromkeys(paths)))


def _collect(node: Any, prefix: str, out: list[str], source: str) -> None:
    if node is None:
        return
    if isinstance(node, Mapping):
        for name, children in node.items():
            _add(name, prefix, out, source)
            _collect(children, _join(prefix, name), out, source)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, Mapping):
                _collect(item, prefix, out, source)
            else:
                _add(item, prefix, out, source)
    else:
        raise ConfigError(f"{source}: expected a mapping or list of labels under "
                          f"{prefix or 'the top level'!r}, got {type(node).__name__}")


def _add(name: Any, prefix: str, out: list[str], source: str) -> None:
    if not isinstance(name, (str, int, float)) or not str(name).strip():
        raise ConfigError(f"{source}: label names must be non-empty text, got {name!r}")
    parts = [p.strip() for p in str(name).split(SEPARATOR)]
    if any(not p for p in parts):
        raise ConfigError(f"{source}: label {name!r} has an empty part")
    path = prefix
    for part in parts:  # "A/B" as a list item also declares its parent "A"
        path = _join(path, part)
        out.append(path)


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}{SEPARATOR}{name}" if prefix else str(name).strip()


class LabelMapper:
    """Model label -> dataset label; ``None`` for a label the mapping drops."""

    def __init__(self, mapping: Mapping[str, str], tree: LabelTree | None = None):
        if tree is not None:
            unknown = sorted(v for v in mapping.values() if v not in tree)
            if unknown:
                raise ConfigError(f"labels.map: {', '.join(map(repr, unknown))} not in the "
                                  f"labels file (known: {', '.join(tree.paths[:20])}"
                                  f"{', ...' if len(tree.paths) > 20 else ''})")
        self._mapping = dict(mapping)

    def __call__(self, model_label: str) -> str | None:
        if not self._mapping:
            return model_label
        return self._mapping.get(model_label)

    def table(self, model_labels: tuple[str, ...]) -> list[str | None]:
        """Mapped name per class id of a detector (index = class id)."""
        return [self(label) for label in model_labels]
