"""COCO-style detectors from torchvision (Faster R-CNN, RetinaNet, FCOS, SSD), CPU or CUDA.

Needs the optional extra: ``pip install 'preannotate[torch]'``. Give exactly one of
``weights`` (an enum name such as "DEFAULT" or "COCO_V1"; torchvision downloads it into its
cache, ``torch.hub.get_dir()``, so an offline machine needs that cache filled beforehand) or
``checkpoint`` (a local ``torch.save``-d state_dict, bare or under "model"/"state_dict" as
torchvision's reference training scripts write it).

Classes: every family here takes ``num_classes`` *including* index 0 for background. Faster
R-CNN and SSD use a softmax with an explicit background logit at 0; RetinaNet and FCOS use
per-class sigmoids, so index 0 is merely never a target, but torchvision's COCO weights keep
it (91 slots) and so do we: custom ``labels`` are classes 1..n and ``num_classes = n + 1``.
torchvision's COCO list holds "__background__" and repeated "N/A" (ids unused by COCO); the
spec's labels must be unique, so those are dropped and their detections with them.

The models apply their own score cut before ours (Faster R-CNN ``box_score_thresh`` 0.05,
RetinaNet 0.05, FCOS 0.2, SSD 0.01): a lower ``score_threshold`` needs that option lowered
too, passed through ``model_options`` with ``min_size``, ``max_size``, ``detections_per_img``...
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Sequence

import numpy as np

from models.boxes import Boxes
from models.contracts import DetectorSpec

try:  # absolute imports: these are the real packages, not this module
    import torch
    import torchvision
except ImportError as e:  # torch is an optional extra; the registry must still list us
    torch = torchvision = None
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None

MODELS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
          "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
          "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
          "ssdlite320_mobilenet_v3_large", "ssd300_vgg16")
_DROPPED = ("__background__", "N/A")


def _keys(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _load_state_dict(path: str, model) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"checkpoint {path!r}: no such file")
    try:
        # weights_only refuses arbitrary pickles; torchvision's reference train.py also
        # stores its argparse Namespace next to the weights, which is harmless data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path!r}: cannot be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if isinstance(data, dict):
        data = data.get("model", data.get("state_dict", data))
    if not isinstance(data, dict):
        raise ValueError(f"checkpoint {path!r}: expected a state_dict, got {type(data).__name__}")
    if odd := [k for k, v in data.items() if not isinstance(v, torch.Tensor)]:
        raise ValueError(f"checkpoint {path!r}: expected a state_dict of tensors; not tensors: "
                         f"{_keys(map(str, odd))}")
    if data and all(k.startswith("module.") for k in data):  # saved from DistributedDataParallel
        data = {k.removeprefix("module."): v for k, v in data.items()}
    want = model.state_dict()
    missing, unexpected = want.keys() - data.keys(), data.keys() - want.keys()
    shapes = [k for k in want.keys() & data.keys() if want[k].shape != data[k].shape]
    if missing or unexpected or shapes:
        problems = [f"{len(missing)} missing: {_keys(missing)}" if missing else "",
                    f"{len(unexpected)} unexpected: {_keys(unexpected)}" if unexpected else "",
                    f"{len(shapes)} of another shape (other labels / num_classes?): "
                    f"{_keys(shapes)}" if shapes else ""]
        raise ValueError(f"checkpoint {path!r} does not fit {type(model).__name__} with "
                         f"{len(want)} keys: " + "; ".join(p for p in problems if p))
    return data


def _check_options(model: str, options: dict) -> None:
    """Unknown options end in the image transform's ``**kwargs``, which ignores them: a typo
    such as ``box_score_tresh`` would change nothing, silently. So check the names first."""
    builder = torchvision.models.get_model_builder(model)
    known = set().union(*(inspect.signature(f).parameters for f in (
        builder, inspect.signature(builder).return_annotation,
        torchvision.models.detection.transform.GeneralizedRCNNTransform)))
    # Set here (labels decide the classes) or built from the rest (backbone, head...).
    owned = {"self", "kwargs", "weights", "weights_backbone", "num_classes", "backbone",
             "size", "progress"}
    if bad := sorted(set(options) - (known - owned)):
        raise ValueError(f"{model}: unknown or reserved option(s) {', '.join(bad)}; it takes "
                         f"{', '.join(sorted(known - owned))}")


class TorchvisionDetector:
    def __init__(self, model: str = "fasterrcnn_mobilenet_v3_large_fpn", weights: str | None = None,
                 checkpoint: str | None = None, labels: Sequence[str] | None = None,
                 device: str = "auto", score_threshold: float = 0.5, batch_size: int = 8,
                 **model_options):
        """``model`` one of MODELS; ``labels`` (checkpoint only) the classes 1..n, without
        background; ``device`` "auto", "cpu" or "cuda"; boxes scoring under
        ``score_threshold`` are dropped; ``batch_size`` frames go through the model at once;
        ``model_options`` go to the torchvision builder (min_size, box_score_thresh...)."""
        if _IMPORT_ERROR is not None:
            raise ValueError("the torchvision detector needs torch and torchvision: pip "
                             f"install 'preannotate[torch]' ({_IMPORT_ERROR})") from _IMPORT_ERROR
        if model not in MODELS:
            raise ValueError(f"unknown torchvision model {model!r}; allowed: {', '.join(MODELS)}")
        if (weights is None) == (checkpoint is None):
            raise ValueError("give exactly one of weights (e.g. 'DEFAULT') or checkpoint (a path)")
        if isinstance(labels, str) or (labels is not None and weights is not None):
            raise ValueError("labels must be a list of class names, and only with a checkpoint "
                             "(weights bring their own categories)")
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        elif device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        enum = torchvision.models.get_model_weights(model)
        if weights is not None:
            try:
                chosen = enum.verify(weights)
            except (KeyError, ValueError) as e:
                raise ValueError(f"unknown weights {weights!r} for {model}; known: DEFAULT, "
                                 f"{', '.join(w.name for w in enum)}") from e
            categories = list(chosen.meta["categories"])
        else:
            chosen = None
            categories = ["__background__", *labels] if labels is not None \
                else list(enum["COCO_V1"].meta["categories"])
        _check_options(model, model_options)
        # weights_backbone=None: never fetch ImageNet weights the checkpoint overwrites anyway.
        options = dict(weights=chosen, weights_backbone=None, **model_options)
        if chosen is None:
            options["num_classes"] = len(categories)
        try:
            net = torchvision.models.get_model(model, **options)
        except TypeError as e:  # an option the builder sets itself (min_size for SSD...)
            raise ValueError(f"{model}: bad option ({e})") from e
        except OSError as e:  # the download failed: offline, or the cache is unwritable
            raise ValueError(f"{model}: cannot fetch weights {weights!r} into "
                             f"{torch.hub.get_dir()} ({e}); fill that cache elsewhere or pass "
                             f"checkpoint=") from e
        if checkpoint is not None:
            net.load_state_dict(_load_state_dict(str(checkpoint), net))
        self._net = net.eval().requires_grad_(False).to(device)
        self._device = torch.device(device)
        kept = [(i, c) for i, c in enumerate(categories) if c not in _DROPPED]
        # torchvision label index -> spec class id; -1 marks a dropped slot.
        self._to_class = np.full(len(categories), -1, np.int64)
        self._to_class[[i for i, _ in kept]] = np.arange(len(kept))
        fixed = getattr(net.transform, "fixed_size", None)  # SSD resizes to a fixed (w, h)
        self.spec = DetectorSpec(name="torchvision", labels=tuple(c for _, c in kept),
                                 input_size=tuple(fixed) if fixed else None)
        self._threshold, self._batch = float(score_threshold), max(1, int(batch_size))

    def detect(self, frames) -> list[Boxes]:
        results: list[Boxes] = []
        for start in range(0, len(frames), self._batch):
            chunk = frames[start:start + self._batch]
            # Move uint8 (a quarter of the bytes) and convert on the device; float() copies,
            # so nothing keeps a reference to the caller's frames.
            tensors = [torch.from_numpy(np.ascontiguousarray(f)).to(self._device)
                       .permute(2, 0, 1).float().div_(255) for f in chunk]
            with torch.inference_mode():
                outputs = self._net(tensors)
            results.extend(self._boxes(o, f.shape[:2]) for o, f in zip(outputs, chunk))
        return results

    def _boxes(self, output: dict, size: tuple[int, int]) -> Boxes:
        xyxy, scores = output["boxes"].float().cpu().numpy(), output["scores"].float().cpu().numpy()
        class_id = self._to_class[output["labels"].cpu().numpy()]
        keep = (scores >= self._threshold) & (class_id >= 0)
        h, w = size
        # Boxes already come in input pixels; rescaling back from the model's size can
        # overshoot the edge by a rounding error.
        return Boxes.of(np.clip(xyxy[keep], 0, [w, h, w, h]), scores[keep], class_id[keep])


create = TorchvisionDetector
