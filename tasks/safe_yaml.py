"""YAML for recipes and labels files: PyYAML's safe loader, refusing duplicate keys."""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently, so a recipe would not do what its first spelling says)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class says what is wrong
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first at line {first})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """YAML text as data, safely, refusing duplicate keys (recipes and labels files)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
