"""The export stage and its formats."""
