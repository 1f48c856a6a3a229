"""Detector backends: one module each, with ``create(**options)``."""
