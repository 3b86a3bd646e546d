"""Per-layer FLOPs and bytes of a model, and a roofline latency prediction against a hardware profile.

The prediction needs no PyTorch (bench runs it on devices without it); only tracing a model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from procedge.targets import Hardware

if TYPE_CHECKING:
    from torch import nn

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class LayerCost:
    name: str
    flops: float
    elements: float  # input + output + weight elements moved


@dataclass(frozen=True)
class ModelCost:
    layers: tuple[LayerCost, ...]

    @property
    def flops(self) -> float:
        return sum(layer.flops for layer in self.layers)

    def predict_ms(self, hardware: Hardware, precision: str) -> float:
        """Sum over layers of max(compute time, memory time) plus a fixed per-layer overhead."""
        peak = hardware.peak_gflops.get(precision, hardware.peak_gflops["fp32"]) * 1e9 * hardware.efficiency
        bandwidth = hardware.memory_bandwidth_gbs * 1e9
        width = BYTES_PER_ELEMENT[precision]
        seconds = sum(
            max(layer.flops / peak, layer.elements * width / bandwidth) + hardware.layer_overhead_us * 1e-6
            for layer in self.layers
        )
        return seconds * 1e3


def measure_cost(model: nn.Module, input_size: int) -> ModelCost:
    """Trace one batch-1 forward pass: the FLOPs of each layer (torch's FlopCounterMode), its memory traffic, and one
    dispatch for every other leaf op that does not fuse (activations such as SiLU, gates, pools). FLOPs of ops outside
    any leaf module (e.g. an attention block's matmuls) count as one more layer. Scaled dot-product attention is traced
    through its math kernel: FlopCounterMode has no count for the CPU flash kernel, which would leave a ViT's attention
    products out (0.36 of vit_tiny's 2.51 GFLOPs at 224)."""
    import torch
    from torch import nn
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # Folded into the preceding convolution by every runtime procedge targets: no cost of their own.
    fused = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.ReLU, nn.ReLU6, nn.Flatten)
    moved: dict[str, list[float]] = {}  # per leaf, the elements each of its calls moves (a module may run more than once)

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if isinstance(output, torch.Tensor):
                weight = module.weight.numel() if isinstance(module, (nn.Conv2d, nn.Linear)) else 0
                moved.setdefault(name, []).append(float(output.numel() + (x.numel() if x is not None else 0) + weight))

        return record

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children()) and not isinstance(m, fused)]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    counts = {name: float(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    layers = [LayerCost(name, counts.get(f"{root}.{name}", 0.0) / len(moved[name]), elements)
              for name, _ in leaves if name in moved for elements in moved[name]]
    outside = counts.get("Global", 0.0) - sum(layer.flops for layer in layers)
    if outside > 0.5:
        layers.append(LayerCost("(ops outside leaf modules)", outside, 0.0))
    return ModelCost(tuple(layers))
