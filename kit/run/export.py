"""The actor's Hugging Face export, written a shard at a time.

Each weight is gathered whole from its FSDP shards (a collective every rank joins, in the same order), and only
rank 0 keeps it, on the CPU, until its shard file is written. verl's get_fsdp_full_state_dict instead gathers every
fp32 weight into rank 0's CPU memory at once (30.5 GB for Qwen2.5-7B, 131 GB for a 32B model), beside what an
offloaded optimizer already keeps there. The folder is what `save_pretrained` writes: config.json,
generation_config.json, safetensors files (with model.safetensors.index.json when there are several), tied weights
once.
"""

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from kit import lora
from kit.patches.single_rank import full_tensor

SHARD_BYTES = 5 * 2**30  # the Hub's usual shard size: a 7B model's fp32 weights (30.5 GB) make six files
LORA_ADAPTER = "lora_adapter"  # the peft folder of the adapters alone, inside the Hugging Face one


class WholeWeights(Mapping):
    """A sharded state dict read as whole tensors: each read gathers one tensor from every rank's shard (every
    rank must read the same names in the same order); on rank 0 it is moved to the CPU. `names` limits what
    iterating yields."""

    def __init__(self, sharded: dict, names: list[str]):
        self.sharded, self.names = sharded, names
        self.rank0 = torch.distributed.get_rank() == 0

    def __getitem__(self, name: str) -> torch.Tensor:
        value = full_tensor(self.sharded[name])
        return value.cpu() if self.rank0 else value

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


def write_hf_folder(path: str, module: torch.nn.Module, model: torch.nn.Module, shard_bytes: int = SHARD_BYTES):
    """Write the FSDP-sharded `module` (with LoRA: the adapters merged in, and the adapters alone as a peft folder
    in path/lora_adapter) as a Hugging Face folder for `model`, the same architecture on the meta device. Every
    rank calls this; rank 0 writes."""
    rank0 = torch.distributed.get_rank() == 0
    sharded = module.state_dict()
    saved = saved_names(model)
    base = [name for name in sharded if "lora_" not in name and lora.plain_name(name) in saved]
    weights = WholeWeights(sharded, base)
    if rank0:
        os.makedirs(path, exist_ok=True)
        model.config.dtype = str(model.dtype).split(".")[1]  # as save_pretrained records them
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(path)
        if model.can_generate():
            model.generation_config.save_pretrained(path)
    scaling = lora.scalings(module)
    if scaling:
        adapters = {name: weights[name] for name in sharded if "lora_" in name}  # small: rank 0 holds them all
        if rank0:
            module.save_pretrained(f"{path}/{LORA_ADAPTER}", state_dict=adapters)
    shards = write_shards(path, lora.merged_weights(weights, scaling), shard_bytes, rank0)
    if rank0:
        if len(shards) > 1:
            write_index(path, shards, model.num_parameters())
        follow_umask(path)


def saved_names(model: torch.nn.Module) -> set[str]:
    """The names save_pretrained writes for `model`: its state dict with each tied weight once (the first name:
    model.embed_tokens.weight, not lm_head.weight)."""
    names, seen = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            names.add(name)
            seen.add(id(tensor))
    return names


def write_shards(path: str, weights: Iterator[tuple[str, torch.Tensor]], shard_bytes: int,
                 write: bool) -> list[dict[str, int]]:
    """Write (name, tensor) pairs into safetensors files of about shard_bytes each (a tensor larger than that gets
    a file of its own), named model-00001-of-0000N.safetensors, or model.safetensors when one is enough; returns
    each file's names and byte counts. Without `write`, the pairs are only drawn (the collectives behind them)."""
    shards, shard, size = [], {}, 0
    for name, tensor in weights:
        if not write:
            continue
        if shard and size + nbytes(tensor) > shard_bytes:
            shards.append(save_shard(path, len(shards), shard))
            shard, size = {}, 0
        shard[name], size = tensor.contiguous(), size + nbytes(tensor)
    if shard:
        shards.append(save_shard(path, len(shards), shard))
    for number in range(len(shards)):  # named once their count is known
        os.rename(f"{path}/.shard-{number}", f"{path}/{shard_name(number, len(shards))}")
    return shards


def save_shard(path: str, number: int, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    save_file(tensors, f"{path}/.shard-{number}", metadata={"format": "pt"})
    return {name: nbytes(tensor) for name, tensor in tensors.items()}


def follow_umask(path: str):
    """Give the folder's safetensors files (the weights', the adapter's) the mode a new file gets under this
    process's umask, as config.json has: safetensors writes them 0o600 whatever the umask."""
    mask = os.umask(0o077)  # reading the umask means setting it: set back at once
    os.umask(mask)
    for file in Path(path).rglob("*.safetensors"):
        file.chmod(0o666 & ~mask)


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def shard_name(number: int, count: int) -> str:
    return "model.safetensors" if count == 1 else f"model-{number + 1:05d}-of-{count:05d}.safetensors"


def write_index(path: str, shards: list[dict[str, int]], parameters: int):
    """model.safetensors.index.json: which file holds each weight, as save_pretrained writes it for several."""
    weight_map = {name: shard_name(number, len(shards)) for number, shard in enumerate(shards) for name in shard}
    total = sum(size for shard in shards for size in shard.values())
    index = {"metadata": {"total_parameters": parameters, "total_size": total}, "weight_map": weight_map}
    with open(f"{path}/model.safetensors.index.json", "w", encoding="utf-8") as out:
        out.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
