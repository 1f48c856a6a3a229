import random

from tasks.convert.listing import natural_key, plan_clips
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location


def test_natural_order_any_padding_and_case():
    names = ["100.mp4", "10.mp4", "2.MP4", "1.mp4", "clip-3.mp4", "Clip-20.mp4", "010.mp4"]
    shuffled = names[:]
    random.Random(4).shuffle(shuffled)
    ordered = sorted(shuffled, key=natural_key)
    assert ordered.index("1.mp4") < ordered.index("2.MP4") < ordered.index("10.mp4") < ordered.index("100.mp4")
    assert ordered.index("clip-3.mp4") < ordered.index("Clip-20.mp4")
    assert sorted(names, key=natural_key) == ordered  # total order: same from any input order


def test_plan_groups_recordings_and_indexes_clips(tmp_path):
    for rel in ("s1/2.mp4", "s1/10.mp4", "s1/1.mp4", "s2/a.mp4", "s2/a.mov", "top.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    clips = plan_clips(open_location(str(tmp_path)), parse_recipe({}))
    got = [(c.recording, c.clip_name, c.clip_index, c.output_relpath) for c in clips]
    root = tmp_path.name
    assert got == [
        ("s1", "1.mp4", 0, "s1/1.webm"), ("s1", "2.mp4", 1, "s1/2.webm"),
        ("s1", "10.mp4", 2, "s1/10.webm"),
        ("s2", "a.mov", 0, "s2/a.mov.webm"), ("s2", "a.mp4", 1, "s2/a.mp4.webm"),
        (root, "top.mp4", 0, f"{root}/top.webm"),
    ]
    assert [c.clip_index for c in clips if c.recording == "s1"] == [0, 1, 2]
    assert len({c.clip_id for c in clips}) == len(clips)


def test_plan_by_file(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "y.mp4").write_bytes(b"x")
    clips = plan_clips(open_location(str(tmp_path)), parse_recipe({"ingest": {"recording_by": "file"}}))
    assert [(c.recording, c.clip_index) for c in clips] == [("x", 0), ("y", 0)]
