"""Peer snippet (run by the peer Python): check Label Studio tasks with label-studio-sdk
offline and expand their regions frame by frame with the sdk's own keyframe expansion.
argv[1]: the labeling config file; argv[2]: the tasks JSON file."""

import json
import sys

from label_studio_sdk._extensions.label_studio_tools.postprocessing.video import (
    extract_key_frames)
from label_studio_sdk.label_interface import LabelInterface

with open(sys.argv[1]) as f:
    interface = LabelInterface(f.read())
with open(sys.argv[2]) as f:
    tasks = json.load(f)
out = {"labels": interface.get_control("videoLabels").labels, "tasks": []}
for task in tasks:
    for prediction in task["predictions"]:
        errors = interface.validate_prediction(prediction, return_errors=True)
        for i, region in enumerate(prediction["result"]):
            # The editor stores a videorectangle's label on the VideoRectangle control, which
            # has no labels of its own, so the check above accepts any label; the sdk's merged
            # labels-on-geometry form checks it against the Labels control (and the geometry).
            merged = dict(region, from_name="videoLabels", type="videorectanglelabels")
            errors += interface.validate_region(merged, return_errors=True, region_index=i)
        frames = {region["id"]: [[s["frame"], s["x"], s["y"], s["width"], s["height"]]
                                 for s in region["value"]["sequence"]]
                  for region in extract_key_frames(prediction["result"])}
        out["tasks"].append({"errors": errors, "frames": frames})
print(json.dumps(out))
