"""Media on its own: probing, the exact-frame reader and timelines, snapshots, samples."""
