"""Per-layer FLOPs and bytes of a model, and a roofline latency prediction against a hardware profile."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from procedge.targets import Hardware

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
    """Trace one batch-1 forward pass; convolutions and linear layers carry the cost (the rest fuses)."""
    layers: list[LayerCost] = []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            weight = module.weight
            if isinstance(module, nn.Conv2d):
                per_output = weight.shape[1] * weight.shape[2] * weight.shape[3]
            else:
                per_output = weight.shape[1]
            flops = 2.0 * output.numel() * per_output
            layers.append(LayerCost(name, flops, float(x.numel() + output.numel() + weight.numel())))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ModelCost(tuple(layers))
