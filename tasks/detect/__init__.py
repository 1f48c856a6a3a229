"""The detect stage: detector driver, per-clip detections, shot cuts."""
