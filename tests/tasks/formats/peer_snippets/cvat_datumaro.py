"""Peer snippet (run by the peer Python): import CVAT XML with datumaro and print every
annotation it returns as JSON. argv[1]: a folder holding the XML file (nothing else)."""

import json
import sys

import datumaro as dm

dataset = dm.Dataset.import_from(sys.argv[1], "cvat")
labels = dataset.categories()[dm.AnnotationType.label]
rows = []
for item in dataset:
    for ann in item.annotations:
        attributes = dict(ann.attributes)
        rows.append({
            "item": item.id, "frame": item.attributes["frame"], "type": ann.type.name,
            "label": labels[ann.label].name, "bbox": [float(v) for v in ann.get_bbox()],
            "outside": attributes.pop("outside"), "keyframe": attributes.pop("keyframe"),
            "cvat_track": attributes.pop("track_id"), "occluded": attributes.pop("occluded"),
            "attributes": attributes})
print(json.dumps(rows))
