"""Exporters and readers for the formats reviewers' tools import. One module per format, each
with ``write(keyframes, clip) -> bytes`` and ``read(data, clip) -> keyframes`` over the
keyframes table (`tasks.keyframes`)."""
