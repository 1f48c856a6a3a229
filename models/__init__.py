"""ML detector and tracker backends behind small contracts (filled in by the model issues)."""
