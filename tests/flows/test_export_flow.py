"""`preannotate compact / export / snapshot` on the real Prefect engine, on the street
sample: every earlier stage run first, keyframes within tolerance, every format written and
read back to the same frames, spans to per-frame labels, reruns byte-identical."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pyarrow.parquet as pq

from flows.cli import EXIT_OK, EXIT_USAGE, main
from tasks.store.items import read_records
from tasks.export.stage import clip_info
from tasks.formats import REGISTRY, format_module
from tasks.annotations.keyframes import check_keyframes, compare_states, expand, normalise_dense
from tasks.store.storage import open_location


def test_export_command_on_street_sample(street_run, tmp_path, capsys):
    out, config, spans = street_run.out, street_run.config, street_run.spans
    printed = street_run.printed
    assert "keyframes table:" in printed and "export: 1 clip(s)" in printed

    tracks = pq.read_table(out / "tracks.parquet")
    keyframes = pq.read_table(out / "keyframes.parquet")
    check_keyframes(keyframes)
    assert 0 < keyframes.num_rows < tracks.num_rows
    assert compare_states(normalise_dense(tracks), expand(keyframes), max_error_px=1.5) == []

    (item,) = read_records(open_location(str(out)))
    clip = clip_info(open_location(str(out)), item)
    for name in REGISTRY:
        module = format_module(name)
        if name == "mot":
            gt = out / "exports" / "mot" / "street" / "1" / "gt"
            back = module.read((gt / "gt.txt").read_bytes(), clip,
                               labels=(gt / "labels.txt").read_bytes())
        else:
            back = module.read((out / "exports" / name / "street" / f"1{module.EXTENSION}")
                               .read_bytes(), clip)
        tolerance = 1.5 + 0.01  # CVAT and Label Studio round coordinates
        frames = {(clip.recording, clip.clip_index): clip.frames}  # a null end: to the clip's end
        problems = compare_states(normalise_dense(tracks), expand(back, frames),
                                  max_error_px=tolerance)
        assert problems == [], f"{name}: {problems}"
    ls_all = json.loads((out / "exports" / "labelstudio" / "tasks.json").read_text())
    assert len(ls_all) == 1 and ls_all[0]["data"]["video"] == item.output_uri
    assert "<VideoRectangle" in (out / "exports" / "labelstudio" / "config.xml").read_text()

    # Spans became per-frame labels on the WebM's decoded timestamps.
    with av.open(item.output_uri) as container:
        stream = container.streams.video[0]
        times = np.array([float(f.pts * stream.time_base) for f in container.decode(stream)])
    labels = pq.read_table(out / "frame_labels.parquet")
    expected = np.flatnonzero((times - times[0] >= 0.5) & (times - times[0] < 1.25))
    assert labels["frame"].to_pylist() == expected.tolist()
    assert set(labels["label"].to_pylist()) == {"cycling"}

    # A rerun does no work twice and rewrites identical files.
    exported = sorted(p for p in (out / "exports").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in exported + [out / "keyframes.parquet"]}
    assert main(["export", str(street_run.data), "--out", str(out), "--config", str(config),
                 "--spans", str(spans)]) == EXIT_OK
    assert {p: p.read_bytes() for p in before} == before

    # compact straight from the table, with another tolerance, into another folder.
    other = tmp_path / "iou"
    assert main(["compact", str(out / "tracks.parquet"), "--out", str(other),
                 "--min-iou", "0.8"]) == EXIT_OK
    iou = pq.read_table(other / "keyframes.parquet")
    assert compare_states(normalise_dense(tracks), expand(iou), min_iou=0.8) == []

    # snapshot: exactly the decoded frame, named after the clip and frame.
    capsys.readouterr()
    assert main(["snapshot", str(street_run.data), "--out", str(out), "--clip", "1.mp4",
                 "--frame", "7"]) == EXIT_OK
    (png,) = (out / "Snapshots").rglob("*.png")
    assert "1" in png.name and "7" in png.name
    with av.open(item.output_uri) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == 7)
    assert np.array_equal(cv2.imread(str(png)), frame.to_ndarray(format="bgr24"))


def test_bad_export_arguments_stop_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(tmp_path), "--out", str(out), "--format", "cvat,xml"]) == EXIT_USAGE
    assert "unknown export format" in capsys.readouterr().err
    assert main(["compact", str(tmp_path / "none.parquet"), "--out", str(out),
                 "--max-error-px", "-1"]) == EXIT_USAGE
    bad = tmp_path / "spans.csv"
    bad.write_text("recording,start_s,end_s,label\nstreet,2,1,x\n")
    assert main(["export", str(tmp_path), "--out", str(out), "--spans", str(bad)]) == EXIT_USAGE
    assert not out.exists()
