"""The track stage: multi-object association, and chunked single-object tracking."""
