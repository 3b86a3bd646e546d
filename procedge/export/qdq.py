"""The ONNX -> Q/DQ INT8 pass (ONNX Runtime's static quantization), shared by the ONNX Runtime and TensorRT exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def quantize_qdq(onnx_path: Path, out_path: Path, calibration: list[np.ndarray], symmetric: bool = False) -> None:
    """Static INT8 in QDQ form with per-channel int8 weights, min-max calibrated. Activations are uint8
    (ONNX Runtime's fast CPU path) or, with `symmetric`, int8 with zero points 0: TensorRT's form, in
    which the first convolution and the classifier stay in float (int8 there cost the Lite0 teacher
    1.4 points of the 2.7 it lost on MNIST held-out).

    The uint8 form keeps its weights to 7 bits (`reduce_range`): on x86 CPUs without VNNI, ONNX Runtime
    multiplies uint8 by int8 with an instruction whose 16-bit sums saturate. Full-range weights cost the
    demo's mobilenetv3 student 10.7 points held-out (58.3% -> 47.6%); 7-bit ones cost 0.1 (58.2%), at the
    same latency. Int8 activations avoid it as well, but ran 4x slower than fp32 on this AVX2 CPU."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter({"input": x} for x in calibration)

        def get_next(self):
            return next(self._feeds, None)

    prepared = out_path.with_name(f".{out_path.stem}.prepared.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared))
        keep_float = []
        if symmetric:
            nodes = onnx.load(str(prepared)).graph.node
            keep_float = [next(n.name for n in nodes if n.op_type == "Conv")] + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float, reduce_range=not symmetric,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {})
    finally:
        prepared.unlink(missing_ok=True)
