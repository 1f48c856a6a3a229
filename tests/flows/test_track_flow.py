"""`preannotate track` on the real Prefect engine: the bundled street sample (the shipped
detector, people only),
every earlier stage run (or skipped) first, objects tracked concurrently by the task runner."""

from __future__ import annotations


import av
import numpy as np
import pyarrow.parquet as pq

from flows.cli import EXIT_OK, main


def test_track_command_on_street_sample(street_run, capsys):
    """The stage outputs of a run (`street_run`), and a rerun of `track` that does nothing."""
    out, config, printed = street_run.out, street_run.config, street_run.printed
    assert "tracks table:" in printed and "detections table:" in printed

    items = pq.read_table(out / "items.parquet").to_pylist()
    (item,) = items
    detections = pq.read_table(out / "detections.parquet")
    tracks = pq.read_table(out / "tracks.parquet")
    assert detections.num_rows > 0 and tracks.num_rows > 0
    assert set(detections["frame"].to_numpy() % 3) == {0}

    # Frame indices and times are the WebM's (decoded timestamps).
    with av.open(item["output_uri"]) as container:
        stream = container.streams.video[0]
        times = np.array([float(f.pts * stream.time_base) for f in container.decode(stream)])
    for table in (detections, tracks):
        frame = table["frame"].to_numpy()
        assert np.array_equal(table["time_s"].to_numpy(), times[frame])
        assert np.array_equal(table["global_frame"].to_numpy(), frame)  # first clip
        x1, y1, x2, y2 = (table[c].to_numpy() for c in ("x1", "y1", "x2", "y2"))
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x1 < x2).all() and (y1 < y2).all()
        assert (x2 <= item["output_width"]).all() and (y2 <= item["output_height"]).all()
    # Consistent ids: one row per object per frame, each object's frames contiguous.
    tid, frame = tracks["track_id"].to_numpy(), tracks["frame"].to_numpy()
    assert len(set(zip(tid.tolist(), frame.tolist()))) == tracks.num_rows
    for t in np.unique(tid):
        f = np.sort(frame[tid == t])
        assert np.array_equal(f, np.arange(f[0], f[-1] + 1))
    assert set(tracks["label"].to_pylist()) == {"person"}
    assert set(tracks["source"].to_pylist()) <= {"detector", "tracker"}
    assert "tracker" in set(tracks["source"].to_pylist())

    # A rerun does no work twice and writes the same tables.
    before = {p: (out / p).read_bytes() for p in ("detections.parquet", "tracks.parquet")}
    assert main(["track", str(street_run.data), "--out", str(out), "--config", str(config),
                 "--json"]) == EXIT_OK
    summary = capsys.readouterr().out
    assert '"skipped": 1' in summary
    assert {p: (out / p).read_bytes() for p in before} == before
