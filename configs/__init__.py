"""YAML recipes shipped with the package; `recipe_path("default")` finds one."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def recipe_path(name: str) -> Path:
    """Path of a bundled recipe by name (``default`` -> ``configs/default.yaml``)."""
    return CONFIG_DIR / f"{name}.yaml"
