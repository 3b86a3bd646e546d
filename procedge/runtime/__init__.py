"""The torch-free runtime layer: runners for exported models (ONNX Runtime, OpenVINO, TensorRT) behind a registry, the
exports' manifests, and accuracy on held-out images. Export and bench both use it; it imports neither PyTorch nor
`procedge.export`."""

from procedge.runtime.base import ModelRuntime, Runner, accuracy, network_of, runtime_registry
from procedge.runtime.exports import DEVICE_KIT, MANIFEST, ExportedFile, Manifest, NotBuiltHere, discover_exports, load_export, read_manifest

# Importing a runtime's module registers it.
from procedge.runtime import onnxruntime as _onnxruntime  # noqa: E402,F401
from procedge.runtime import openvino as _openvino  # noqa: E402,F401
from procedge.runtime import tensorrt as _tensorrt  # noqa: E402,F401

__all__ = ["DEVICE_KIT", "MANIFEST", "ExportedFile", "Manifest", "ModelRuntime", "NotBuiltHere", "Runner", "accuracy", "discover_exports", "load_export", "network_of", "read_manifest",
           "runtime_registry"]
