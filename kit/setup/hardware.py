"""The machine a run trains on: how many GPUs (or CPU workers) and where, fixed from what this machine or each Ray
cluster node has, and the settings that follow from it (Liger-Kernel on or off, micro-batches on CPU)."""

import importlib.util

from omegaconf import DictConfig

from kit.errors import KitError

LIGER_VERSION = "0.8.5"  # pyproject.toml's GPU extras pin it
LIGER_PACKAGES = ("liger_kernel", "triton")  # triton comes with torch's CUDA builds
# training.actor.liger 'auto' turns Liger on from this many response tokens a step (batch_size x n_generations x
# max_response_length): steps 1.27x faster at 131,072 (the SmolLM2 shape) and 1.24x at 524,288 (Qwen2.5-0.5B) on an
# H200; at the default task's 1,024 no faster, and its first update 2.4 s longer (docs/benchmarks.md, Liger).
LIGER_AUTO_TOKENS = 65536
CPU_TOKENS = 16384  # training.actor.max_tokens_per_gpu 'auto' where no GPU's memory sizes it


def _worker_layout(cfg: DictConfig, gpu_nodes: list[int], nodes: int) -> list[int]:
    """Workers per node: all GPUs of as many nodes as num_gpus fills (each node alike), or the CPU workers spread
    evenly over every node."""
    if cfg.num_gpus == 0:
        if cfg.num_cpu_workers % nodes:
            raise KitError(f"num_cpu_workers={cfg.num_cpu_workers} must divide by the Ray cluster's {nodes} nodes: the "
                           "kit puts the same number of CPU workers on each")
        return [cfg.num_cpu_workers // nodes] * nodes
    if len(set(gpu_nodes)) > 1:
        raise KitError(f"the Ray cluster's nodes have unequal GPU counts ({', '.join(map(str, gpu_nodes))}): FSDP and "
                       "the engines place the same number on each node, so start every node with the same number "
                       "(ray start --num-gpus=N)")
    per_node = gpu_nodes[0]
    if cfg.num_gpus > per_node and cfg.num_gpus % per_node:
        raise KitError(f"num_gpus={cfg.num_gpus} must fill whole nodes of {per_node} GPUs (or fit in one): use a "
                       f"multiple of {per_node} or num_gpus=auto")
    return [min(cfg.num_gpus, per_node)] * max(1, cfg.num_gpus // per_node)


def _resolve_liger(cfg: DictConfig):
    """'auto' is on where Liger pays and can run: GPUs, the packages installed, LIGER_AUTO_TOKENS response tokens a
    step, and inference.compile off. true is checked instead: Liger's kernels are Triton's (GPUs only, the packages
    installed), and inference.compile fuses the same small kernels of the sampler its own way; the two together are
    untested, so refused."""
    actor = cfg.training.actor
    if actor.liger == "auto":
        tokens = cfg.batch_size * cfg.n_generations * cfg.inference.max_response_length
        actor.liger = (cfg.num_gpus > 0 and tokens >= LIGER_AUTO_TOKENS and not cfg.inference.compile
                       and all(importlib.util.find_spec(package) for package in LIGER_PACKAGES))
        return
    if not actor.liger:
        return
    if cfg.num_gpus == 0:
        raise KitError("training.actor.liger runs Triton kernels, which need GPUs: set training.actor.liger=false on CPU")
    for package in LIGER_PACKAGES:
        if importlib.util.find_spec(package) is None:
            raise KitError(f"training.actor.liger needs liger-kernel and triton; {package} is not installed: pip install "
                           f"liger-kernel=={LIGER_VERSION} (in .[vllm] and .[sglang]), or set training.actor.liger=false")
    if cfg.inference.compile:
        raise KitError("training.actor.liger and inference.compile both fuse the sampler's small kernels, and the "
                       "two together are untested: set one of them false")


def resolve_hardware(cfg: DictConfig, node_gpus: list[int]):
    """Fix num_gpus ('auto' = all), num_workers (one per GPU, or num_cpu_workers on CPU) and worker_layout (workers
    per node, for verl's resource pool) from the GPUs of each node: one entry locally, one per node on a cluster.
    On CPU workers training.actor.max_tokens_per_gpu 'auto' is CPU_TOKENS; on GPUs the memory estimate sizes it
    once the model's config is read (kit/setup/memory.size_micro_batches)."""
    gpu_nodes = [gpus for gpus in node_gpus if gpus > 0]
    total = sum(gpu_nodes)
    where = "are visible" if len(node_gpus) == 1 else f"are in the Ray cluster's {len(node_gpus)} nodes"
    if cfg.num_gpus == "auto":
        cfg.num_gpus = total
    if cfg.num_gpus > total:
        raise KitError(f"num_gpus={cfg.num_gpus} but {total} GPU(s) {where}: lower num_gpus or use num_gpus=auto")
    if cfg.num_gpus == 0 and cfg.training.actor.max_tokens_per_gpu == "auto":
        cfg.training.actor.max_tokens_per_gpu = CPU_TOKENS
    _resolve_liger(cfg)
    cfg.worker_layout = _worker_layout(cfg, gpu_nodes, len(node_gpus))
    cfg.num_workers = sum(cfg.worker_layout)
    tensor_parallel = cfg.inference.tensor_parallel_size
    if cfg.inference.engine != "hf" and cfg.worker_layout[0] % tensor_parallel:
        raise KitError(f"inference.tensor_parallel_size={tensor_parallel} must divide the {cfg.worker_layout[0]} GPUs "
                       "each node trains on: each engine replica takes that many GPUs of one node")
    rollouts = (cfg.training.actor.mini_batch_size or cfg.batch_size) * cfg.n_generations
    if rollouts % cfg.num_workers or cfg.val_size % cfg.num_workers:
        raise KitError(
            f"batch_size (or training.actor.mini_batch_size) x n_generations = {rollouts} and val_size = "
            f"{cfg.val_size} must both divide by the {cfg.num_workers} workers: change them or the worker count"
        )
