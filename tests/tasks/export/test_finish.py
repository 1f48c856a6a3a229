"""The export's combined Label Studio files: with a hierarchical labels file, a TimelineLabels
config for labelling time spans over whole videos, one label per path of the tree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from configs import CONFIG_DIR
from tasks.export.stage import finish
from tasks.labels import load_label_tree
from tasks.recipe import parse_recipe
from tasks.store.storage import open_location


def test_timeline_config_has_every_path_of_the_labels_file(tmp_path):
    labels = CONFIG_DIR / "labels" / "example.yaml"
    out = open_location(str(tmp_path))
    files = finish(out, parse_recipe({"labels": {"file": str(labels)}}), ["labelstudio"], [])
    assert files["labelstudio"][-1].endswith("timeline.xml")
    root = ET.parse(tmp_path / "exports" / "labelstudio" / "timeline.xml").getroot()
    timeline = root.find("TimelineLabels")
    assert timeline.get("toName") == root.find("Video").get("name") == "video"
    assert root.find("Video").get("frameRate") == "$fps"
    assert [label.get("value") for label in timeline] == list(load_label_tree(labels).paths)
    # Without a labels file there is no tree to label spans with: no timeline config.
    other = open_location(str(tmp_path / "other"))
    assert len(finish(other, parse_recipe({}), ["labelstudio"], [])["labelstudio"]) == 2
