"""Where an ONNX model runs: onnxruntime (CPU, or CUDA with onnxruntime-gpu) or OpenCV's DNN.

Both take an NCHW float32 blob and return the model's outputs as numpy arrays, in the
graph's output order (or the order ``outputs`` names). A model that loads but cannot run a
blob raises ``ValueError`` with the runtime's message.
"""

from __future__ import annotations

import os

import numpy as np


class OrtRuntime:
    name = "onnxruntime"

    def __init__(self, path: str, device: str, outputs: list[str] | None, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError("device cuda: onnxruntime has no CUDA provider here (install "
                             "onnxruntime-gpu and CUDA, or use device cpu / auto)")
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(path, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"model_path: onnxruntime cannot load {path!r}: {e}") from e
        self.device = "cuda" if use_cuda else "cpu"
        self._input = self._session.get_inputs()[0].name
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._outputs = _pick(self.output_names, outputs)
        shape = self._session.get_inputs()[0].shape
        # A fixed batch in the graph (an int, not a name) means frames go one at a time.
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        try:
            return [np.asarray(o, np.float32)
                    for o in self._session.run(self._outputs, {self._input: blob})]
        except Exception as e:
            raise ValueError(f"onnxruntime could not run the model on a blob of shape "
                             f"{blob.shape}: {e}") from e


class OpenCVRuntime:
    name = "opencv"

    def __init__(self, path: str, device: str, outputs: list[str] | None, threads: int | None):
        import cv2

        try:
            self._net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as e:
            raise ValueError(f"model_path: OpenCV cannot load {path!r} as ONNX: {e}") from e
        self.device = "cpu"
        if device == "cuda":
            if not cv2.cuda.getCudaEnabledDeviceCount():
                raise ValueError("device cuda: this OpenCV has no CUDA device (the pip wheels "
                                 "are built without CUDA); use runtime onnxruntime")
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.device = "cuda"
        self.output_names = list(self._net.getUnconnectedOutLayersNames())
        self._outputs = _pick(self.output_names, outputs)
        self.fixed_batch = None  # OpenCV does not say; the backend learns it from a failure
        self._cv2 = cv2

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        self._net.setInput(blob)
        try:
            found = self._net.forward(self._outputs)
        except self._cv2.error as e:  # loads fine, fails on data: wrong layout or batch
            raise ValueError(f"OpenCV could not run the model on a blob of shape {blob.shape}: "
                             f"{e}") from e
        return [np.asarray(o, np.float32) for o in found]


def _pick(names: list[str], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return names
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"outputs: {missing} not among the model's outputs {names}")
    return list(wanted)


RUNTIMES = {"onnxruntime": OrtRuntime, "opencv": OpenCVRuntime}


def open_runtime(kind: str, path: str, device: str, outputs: list[str] | None,
                 threads: int | None):
    """``kind`` auto: onnxruntime where installed (a dependency), else OpenCV."""
    if kind == "auto":
        try:
            import onnxruntime  # noqa: F401
            kind = "onnxruntime"
        except ImportError:
            kind = "opencv"
    if kind not in RUNTIMES:
        raise ValueError(f"runtime: expected auto, {', '.join(RUNTIMES)}, got {kind!r}")
    return RUNTIMES[kind](os.fspath(path), device, outputs, threads)
