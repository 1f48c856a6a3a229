"""Annotation data: the keyframes table and its expansion, box maths, time spans,
and the edits annotation tools offer."""
