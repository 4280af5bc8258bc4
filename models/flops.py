"""Counting a model's linear work, for the rank-dependent compute model (cosim.compute)."""

from __future__ import annotations

from torch import nn

from models.lora import is_lora_a, is_lora_b


def frozen_linear_macs(module: nn.Module) -> int:
    """Σ in·out over the linear layers of `module` that are not LoRA factors: multiply-adds per token of its
    frozen base (peft keeps the adapted layer's own weight as a plain Linear beside its A and B)."""
    return sum(layer.in_features * layer.out_features for name, layer in module.named_modules()
               if isinstance(layer, nn.Linear) and not (is_lora_a(name + ".") or is_lora_b(name + ".")))
