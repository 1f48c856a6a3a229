"""The compaction stage: the fewest keyframes that reproduce dense tracks."""
