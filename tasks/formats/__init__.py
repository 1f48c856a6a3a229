"""The formats reviewers' tools import, as writers and readers over the keyframes table
(`tasks.annotations.keyframes`): one module per format, each a `Format`, found by name in
`REGISTRY`.

They sit below the stages: the export stage writes them, and the track stage reads a
reviewer's result in them (`tasks.track.corrections`) to re-track from the boxes people
moved. A module that does not keep the contract is refused when it is first loaded, with
`FormatError` naming what is missing, rather than failing later on one clip.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from tasks.errors import FormatError
from tasks.formats.base import ClipInfo

# name -> module. Add a format by adding a module here (and its name to the recipe's list).
REGISTRY = {"json": "tasks.formats.native", "cvat": "tasks.formats.cvat",
            "labelstudio": "tasks.formats.labelstudio", "dataloop": "tasks.formats.dataloop",
            "mot": "tasks.formats.mot"}


@runtime_checkable
class Format(Protocol):
    """One format: ``NAME`` (its registry name), ``EXTENSION`` of its files, ``write`` one
    clip's keyframes to bytes and ``read`` them back (a reviewer's file)."""

    NAME: str
    EXTENSION: str

    def write(self, keyframes: pa.Table, clip: ClipInfo, **options: Any) -> bytes: ...

    def read(self, data: bytes, clip: ClipInfo, **options: Any) -> pa.Table: ...


@cache
def format_module(name: str) -> Format:
    """The format called ``name``, checked against the `Format` contract."""
    if name not in REGISTRY:
        raise FormatError(f"unknown format {name!r}; known: {', '.join(REGISTRY)}")
    module = importlib.import_module(REGISTRY[name])
    missing = [attr for attr in ("NAME", "EXTENSION", "write", "read")
               if not hasattr(module, attr)]
    if missing or not callable(module.write) or not callable(module.read):
        raise FormatError(f"format module {REGISTRY[name]} does not keep the Format contract: "
                          f"missing {', '.join(missing) or 'callable write/read'}")
    if module.NAME != name:
        raise FormatError(f"format module {REGISTRY[name]} calls itself {module.NAME!r}, "
                          f"registered as {name!r}")
    return module
