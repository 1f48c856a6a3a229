"""The torchvision backend, offline: checkpoints saved here from randomly initialised models.

Random weights make no sense of the frames, but they prove the checkpoint is really loaded
(same outputs as the original model, other outputs than another seed's) and that every box
that comes out passes the driver's checks.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error

import numpy as np
import pytest

torchvision = pytest.importorskip("torchvision", reason="needs the optional 'torch' extra")
import torch  # noqa: E402  (after the skip: torch comes with torchvision)

import models.detectors  # noqa: E402
from models import registry  # noqa: E402
from tasks.detect.driver import detect_checked  # noqa: E402

# Random weights produce denormal floats (uncalibrated, see _net), ~20x slower on CPU.
torch.set_flush_denormal(True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """At these small inputs a second OpenMP worker gains little, and on a busy 2-core
    machine its spin-waiting doubled this file's time (16 s against 31 s, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SSD = "ssdlite320_mobilenet_v3_large"
RCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"
# Random Faster R-CNN scores are about 1/91 each, under its built-in 0.05 cut.
OPTIONS = {SSD: {}, RCNN: {"box_score_thresh": 0.0}}
COCO = torchvision.models.get_model_weights(SSD)["COCO_V1"].meta["categories"]


def _net(name, seed, **options):
    """A random model whose outputs depend on the frame and the seed. Straight after
    initialisation the backbone's activations shrink to ~1e-20 (BatchNorm in eval mode with
    unit running stats), so every seed gives the anchors and uniform scores; a few training
    mode passes over noise set the running statistics and fix that."""
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                       **OPTIONS[name], **options)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a plain average over the calibration passes
            m.reset_running_stats()
    net.backbone.train()
    with torch.no_grad():
        net.backbone(net.transform([torch.rand(3, 240, 320) for _ in range(2)])[0].tensors)
    return net.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, seed) -> (original model, checkpoint path)."""
    root, out = tmp_path_factory.mktemp("checkpoints"), {}
    for name, seed in [(SSD, 0), (SSD, 1), (RCNN, 0)]:
        net = _net(name, seed)
        path = root / f"{name}-{seed}.pth"
        torch.save(net.state_dict(), path)
        out[name, seed] = net, path
    return out


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
            rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)]


def _direct(net, frames):
    """What the original model says, as (labels, boxes, scores) per frame, N/A dropped."""
    tensors = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    with torch.inference_mode():
        outputs = net(tensors)
    result = []
    for out, f in zip(outputs, frames):
        names = [COCO[i] for i in out["labels"].tolist()]
        keep = np.array([n not in ("__background__", "N/A") for n in names], bool)
        h, w = f.shape[:2]
        boxes = np.clip(out["boxes"].numpy()[keep], 0, [w, h, w, h])
        result.append(([n for n, k in zip(names, keep) if k], boxes, out["scores"].numpy()[keep]))
    return result


def _create(name, path, **options):
    options = {"score_threshold": 0.0, **OPTIONS[name], **options}
    return registry.create("detector", "torchvision", model=name, checkpoint=str(path), **options)


def _same(detector, results, expected):
    return all(len(b) == len(labels)
               and [detector.spec.labels[c] for c in b.class_id] == labels
               and np.allclose(b.xyxy, boxes, atol=1e-4) and np.allclose(b.confidence, scores)
               for b, (labels, boxes, scores) in zip(results, expected))


@pytest.mark.parametrize("name", [SSD, RCNN])
def test_a_checkpoint_gives_the_original_models_boxes(saved, frames, name):
    net, path = saved[name, 0]
    detector = _create(name, path)
    assert "torchvision" in registry.available("detector")
    # The backend module is named torchvision too; its imports must reach the real package.
    assert sys.modules["models.detectors.torchvision"].torchvision is torchvision
    assert detector.spec.labels[:2] == ("person", "bicycle") and len(detector.spec.labels) == 80
    assert detector.spec.input_size == ((320, 320) if name == SSD else None)
    refs = [sys.getrefcount(f) for f in frames]
    results = detect_checked(detector, frames)
    assert [sys.getrefcount(f) for f in frames] == refs  # the detector kept no frame
    assert len(results) == 2 and all(len(b) > 0 for b in results)
    assert _same(detector, results, _direct(net, frames))
    for b, f in zip(results, frames):
        h, w = f.shape[:2]
        assert (b.xyxy >= 0).all() and (b.xyxy <= [w, h, w, h]).all()
        assert b.class_id.min() >= 0 and b.class_id.max() < 80
    assert detector.detect([]) == []


def test_another_seed_gives_other_boxes_and_the_threshold_filters(saved, frames):
    results = _create(SSD, saved[SSD, 1][1]).detect(frames)
    detector = _create(SSD, saved[SSD, 0][1])
    assert not _same(detector, results, _direct(saved[SSD, 0][0], frames))
    cut = float(np.median(np.concatenate([b.confidence for b in results])))
    strict = _create(SSD, saved[SSD, 1][1], score_threshold=cut).detect(frames)
    assert all((b.confidence >= cut).all() and len(b) <= len(a) for a, b in zip(results, strict))
    assert sum(map(len, strict)) < sum(map(len, results))


@pytest.mark.parametrize("wrap", ["model", "state_dict", "ddp"])
def test_training_script_checkpoints_load(saved, frames, tmp_path, wrap):
    net, _ = saved[SSD, 0]
    state = net.state_dict()
    data = {"ddp": {f"module.{k}": v for k, v in state.items()},
            # torchvision's references/detection/train.py layout, argparse Namespace included
            "model": {"model": state, "args": argparse.Namespace(lr=0.01), "epoch": 3},
            "state_dict": {"state_dict": state}}[wrap]
    torch.save(data, tmp_path / "c.pth")
    detector = _create(SSD, tmp_path / "c.pth")
    assert _same(detector, detector.detect(frames[1:]), _direct(net, frames[1:]))


def test_custom_labels_set_num_classes_with_background_at_zero(frames, tmp_path):
    net = _net(SSD, 2, num_classes=3)  # background + 2 classes
    torch.save(net.state_dict(), tmp_path / "pets.pth")
    detector = _create(SSD, tmp_path / "pets.pth", labels=["cat", "dog"])
    assert detector.spec.labels == ("cat", "dog")
    results = detect_checked(detector, frames)
    ids = np.concatenate([b.class_id for b in results])
    assert len(ids) and set(ids.tolist()) <= {0, 1}
    with torch.inference_mode():
        out = net([torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255])[0]
    assert np.array_equal(results[0].class_id, out["labels"].numpy() - 1)
    with pytest.raises(ValueError, match=r"of another shape \(other labels / num_classes\?\)"):
        _create(SSD, tmp_path / "pets.pth")  # COCO's 91 classes do not fit


def test_caller_mistakes_are_value_errors(saved, tmp_path):
    path = saved[SSD, 0][1]
    cases = [
        (dict(model="yolov8", checkpoint=path), r"unknown torchvision model 'yolov8'; allowed: "
                                                r"fasterrcnn_resnet50_fpn, .*ssd300_vgg16"),
        (dict(model=SSD), "exactly one of weights"),
        (dict(model=SSD, weights="DEFAULT", checkpoint=path), "exactly one of weights"),
        (dict(model=SSD, weights="IMAGENET"), r"unknown weights 'IMAGENET' .* DEFAULT, COCO_V1"),
        (dict(model=SSD, weights="DEFAULT", labels=["a"]), "only with a checkpoint"),
        (dict(model=SSD, checkpoint=path, labels="cat"), "list of class names"),
        (dict(model=SSD, checkpoint=tmp_path / "nope.pth"), "no such file"),
        (dict(model=SSD, checkpoint=path, device="tpu"), "'auto', 'cpu' or 'cuda'"),
        (dict(model=SSD, checkpoint=path, score_threshold=1.5), r"must be in \[0, 1\], got 1.5"),
        (dict(model=SSD, checkpoint=path, box_score_tresh=0.1),
         r"unknown or reserved option\(s\) box_score_tresh; it takes .*score_thresh"),
        (dict(model=SSD, checkpoint=path, num_classes=3), r"reserved option\(s\) num_classes"),
        (dict(model=SSD, checkpoint=path, min_size=200), "bad option .*min_size"),
        (dict(model=RCNN, checkpoint=path),
         r"does not fit FasterRCNN with \d+ keys: \d+ missing: .*\d+ unexpected: .*more\)"),
    ]
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"model": [1, 2]}, tmp_path / "list.pth")
    torch.save({"epoch": 3}, tmp_path / "args.pth")
    cases += [(dict(model=SSD, checkpoint=tmp_path / "junk.pth"), "cannot be loaded"),
              (dict(model=SSD, checkpoint=tmp_path / "list.pth"), "a state_dict, got list"),
              (dict(model=SSD, checkpoint=tmp_path / "args.pth"), "not tensors: epoch")]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            registry.create("detector", "torchvision", **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(saved):
    with pytest.raises(ValueError, match="CUDA is not available"):
        _create(SSD, saved[SSD, 0][1], device="cuda")
    assert _create(SSD, saved[SSD, 0][1], device="auto")._device.type == "cpu"


def test_weights_that_cannot_be_fetched_say_so(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError, match=r"cannot fetch weights 'DEFAULT' into .*checkpoint="):
        registry.create("detector", "torchvision", model=SSD, weights="DEFAULT")


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    # Import the module afresh while torch cannot be imported; monkeypatch restores it all.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.delitem(sys.modules, "models.detectors.torchvision", raising=False)
    monkeypatch.delattr(models.detectors, "torchvision", raising=False)
    with pytest.raises(ValueError, match=r"pip install 'preannotate\[torch\]'"):
        registry.create("detector", "torchvision", checkpoint="x.pth")


def test_named_weights_bring_their_categories(saved, frames, monkeypatch):
    # Stand in for torchvision's download with the seed-0 model's weights.
    net = saved[SSD, 0][0]
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url",
                        lambda *args, **kwargs: net.state_dict())
    detector = registry.create("detector", "torchvision", model=SSD, weights="COCO_V1",
                               score_threshold=0.0)
    assert detector.spec.labels == tuple(c for c in COCO if c not in ("__background__", "N/A"))
    assert _same(detector, detect_checked(detector, frames), _direct(net, frames))


def test_recipe_device_and_checkpoint_reach_the_backend(saved, tmp_path):
    """The detect stage builds the backend from a recipe: a relative checkpoint path is
    resolved against the recipe file, and ``detect.device`` is passed to the backend."""
    from tasks.detect.stage import make_detector
    from tasks.errors import ConfigError
    from tasks.recipe import load_recipe

    net, path = saved[SSD, 0]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ssd.pth").write_bytes(path.read_bytes())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"detect:\n  backend: torchvision\n  device: cpu\n  options:\n"
                      f"    model: {SSD}\n    checkpoint: weights/ssd.pth\n    score_threshold: 0.0\n")
    detector = make_detector(load_recipe(recipe))
    assert detector._device.type == "cpu" and detector.spec.labels[0] == "person"
    if not torch.cuda.is_available():
        recipe.write_text(recipe.read_text().replace("device: cpu", "device: cuda"))
        with pytest.raises(ConfigError, match="CUDA is not available"):
            make_detector(load_recipe(recipe))
