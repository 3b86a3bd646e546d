"""TensorRT engines on an NVIDIA GPU (Jetson or discrete): deserialised and run with cuda-python buffers.

An engine loads only on the TensorRT version and GPU that built it; its manifest records both (`build_stamp`)
and `check_compatible` refuses an engine built elsewhere in one line.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.runtime.base import ModelRuntime, Runner, runtime_registry
from procedge.targets import Runtime


def _cudart():
    """CUDA runtime bindings from cuda-python (module path of 12.6+, then the older one)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _cuda(result, what: str):
    """Unpack a cuda-python call's (error, value...) tuple; raise a one-line error on failure."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ProcedgeError(f"CUDA {what} failed ({error}); check the GPU driver with nvidia-smi (or tegrastats on Jetson)")
    return values[0] if len(values) == 1 else values


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, as CUDA reports them."""
    cudart = _cudart()
    props = _cuda(cudart.cudaGetDeviceProperties(0), "device query")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def build_stamp() -> dict:
    """What an engine is bound to: this TensorRT version and this GPU."""
    import tensorrt as trt

    return {"tensorrt": trt.__version__, **gpu_identity()}


def engine_file_name(variant: str, stamp: dict) -> str:
    """e.g. `student.trt10.3.0.sm87.orin.engine`: the version and GPU an engine needs, in its name."""
    gpu = re.sub(r"[^a-z0-9]+", "-", stamp["gpu"].lower().replace("nvidia", "")).strip("-")
    return f"{variant}.trt{stamp['tensorrt']}.sm{stamp['compute_capability'].replace('.', '')}.{gpu}.engine"


def stamp_mismatch(built: dict, here: dict) -> str | None:
    """Why an engine stamped `built` cannot load here (None when it can)."""
    differences = [f"{key} {built.get(key)} (here {here[key]})" for key in ("tensorrt", "gpu", "compute_capability")
                   if built.get(key) != here[key]]
    return ", ".join(differences) or None


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class CudaStream:
    """One CUDA stream with device allocations and host <-> device copies on it (cuda-python), freed with it."""

    def __init__(self):
        self._cudart = cudart = _cudart()
        self.handle = _cuda(cudart.cudaStreamCreate(), "stream creation")
        self._allocations: list[int] = []
        weakref.finalize(self, _release, cudart, self._allocations, self.handle)

    def allocate(self, nbytes: int) -> int:
        pointer = _cuda(self._cudart.cudaMalloc(nbytes), "allocation")
        self._allocations.append(pointer)
        return pointer

    def upload(self, device: int, host: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _cuda(self._cudart.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, kind, self.handle), "copy to the GPU")

    def download(self, host: np.ndarray, device: int) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(self._cudart.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, kind, self.handle), "copy from the GPU")

    def synchronize(self) -> None:
        _cuda(self._cudart.cudaStreamSynchronize(self.handle), "synchronize")


def _release(cudart, allocations: list[int], stream) -> None:
    for pointer in allocations:
        cudart.cudaFree(pointer)
    cudart.cudaStreamDestroy(stream)


class EngineRunner:
    """Batch-1 inference of one engine: a device buffer per I/O tensor, one stream, execute_async_v3."""

    def __init__(self, engine_bytes: bytes, name: str):
        import tensorrt as trt

        self._runtime = trt.Runtime(_logger())
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise ProcedgeError(f"TensorRT {trt.__version__} cannot load {name} (built by another TensorRT or for another GPU); "
                                "rebuild it on this device with procedge export --format trt")
        self._context = self._engine.create_execution_context()
        self._stream = CudaStream()
        self._inputs, self._outputs = [], []
        for index in range(self._engine.num_io_tensors):
            tensor = self._engine.get_tensor_name(index)
            host = np.empty(tuple(self._engine.get_tensor_shape(tensor)), dtype=trt.nptype(self._engine.get_tensor_dtype(tensor)))
            device = self._stream.allocate(host.nbytes)
            self._context.set_tensor_address(tensor, device)
            is_input = self._engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append((host, device))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        host, device = self._inputs[0]
        np.copyto(host, x, casting="same_kind")
        self._stream.upload(device, host)
        if not self._context.execute_async_v3(int(self._stream.handle)):
            raise ProcedgeError("TensorRT inference failed; the TensorRT log above says why")
        out, out_device = self._outputs[0]
        self._stream.download(out, out_device)
        self._stream.synchronize()
        return out.astype(np.float32, copy=True)


@runtime_registry.register("tensorrt")
class TensorRt(ModelRuntime):
    module = "tensorrt"
    install_hint = "TensorRT comes with JetPack on Jetson; on an x86 NVIDIA GPU: pip install tensorrt cuda-python"

    def check_available(self) -> None:
        super().check_available()
        try:
            cudart = _cudart()
        except ImportError as exc:
            raise ProcedgeError("TensorRT inference needs cuda-python for its GPU buffers: pip install cuda-python") from exc
        error, count = cudart.cudaGetDeviceCount()
        if int(error) != 0 or count == 0:
            raise ProcedgeError("TensorRT needs an NVIDIA GPU and none is visible (CUDA found no device)")

    def check_compatible(self, manifest: dict, path: Path) -> None:
        why = stamp_mismatch(manifest, build_stamp())
        if why:
            raise ProcedgeError(f"{path.name} was built for another TensorRT or GPU: {why}; "
                                f"rebuild it on this device with procedge export --format trt --precision {manifest['precision']}")

    def load(self, path: Path, precision: str = "fp32", settings: Runtime | None = None) -> tuple[Runner, dict]:
        import tensorrt as trt

        runner = EngineRunner(path.read_bytes(), path.name)
        return runner, {"runtime": f"tensorrt {trt.__version__}", **gpu_identity()}
