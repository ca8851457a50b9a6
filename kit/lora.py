"""LoRA: what the kit needs from an actor that verl's FSDP engine has wrapped in peft adapters.

verl builds the adapters itself (model.lora_rank, lora_alpha, target_modules: its _build_lora_module) and trains
only them; the base weights stay frozen. The hf sampler and the Hugging Face export want the plain model the
adapted actor stands for: each adapted layer's weight W + scaling * B @ A, under the base model's names.
"""

from collections.abc import Iterator, Mapping

import torch
from peft.tuners.lora import LoraLayer

ADAPTER = "default"  # the adapter's name in peft (verl makes one)


def scalings(module: torch.nn.Module) -> dict[str, float]:
    """{adapted layer's name: its adapter's scaling}; empty for a model without adapters."""
    return {name: layer.scaling[ADAPTER] for name, layer in module.named_modules() if isinstance(layer, LoraLayer)}


def merged_weights(tensors: Mapping[str, torch.Tensor],
                   scaling: dict[str, float]) -> Iterator[tuple[str, torch.Tensor]]:
    """(plain name, weight) for each base tensor of `tensors` (named_parameters or a state dict of the adapted
    model), with the adapter merged into each adapted layer's weight; the adapters' own tensors are dropped.
    Without adapters (empty `scaling`) the tensors pass through as they are."""
    for name, value in tensors.items():
        if "lora_" in name:
            continue
        layer = name.removesuffix(".base_layer.weight")
        if layer in scaling:
            lora_a, lora_b = tensors[f"{layer}.lora_A.{ADAPTER}.weight"], tensors[f"{layer}.lora_B.{ADAPTER}.weight"]
            value = value + (scaling[layer] * (lora_b.float() @ lora_a.float())).to(value.dtype)  # (out, in)
        yield plain_name(name), value


def plain_name(name: str) -> str:
    """The base model's name of a peft-wrapped model's tensor (verl's normalize_peft_param_name does the same)."""
    return name.replace("base_model.model.", "").replace(".base_layer", "")
