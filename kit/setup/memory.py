"""Before any weight loads: the GPU memory a config needs on each GPU, phase by phase, against what a GPU has.

A model of verl's FSDP engine as the kit runs it, in bytes per GPU (P parameters, T of them trained, W workers):
- resident: fp32 weights sharded 4P/W (none between uses with param_offload); AdamW's two fp32 moments 8T/W (none
  outside the optimizer step with optimizer_offload: kit/patches/optimizer_offload.py);
- generation: the hf sampler's bf16 copy 2P and its KV cache for this worker's rows (kept through the update
  unless inference.free_sampler); vllm/sglang take gpu_memory_utilization of the GPU while awake (asleep for the
  update);
- update: the fp32 weights back from the CPU (param_offload), the bf16 weights gathered for compute (the whole model
  on one GPU, one layer at a time otherwise), gradients 8T/W (fp32 4T/W and as much again, which the full fine-tuning
  peaks below need: the gradients' copies while they are reduced, most likely, not broken down), and the
  activations of one micro-batch of max_tokens_per_gpu tokens.
Activations per token are ACTIVATION_BYTES times the logits' width plus the layers' widths, fitted to torch's peaks
measured on an H200 (docs/memory.md; torch reports GiB, converted here): 59.2 / 103.1 GB on the Qwen2.5-0.5B shape
at 16,384 / 32,768 tokens (estimated 61.1 / 103.5), 65.6 GB on the SmolLM2 shape at 65,536 (estimated 77.9: high,
on the safe side), 13.2 GB on the default task (13.4); on the Qwen2.5-7B shape with checkpointing and free_sampler,
123.2 GB with optimizer_offload at 8,192 tokens (124.5) and 82.8 GB with LoRA at 16,384 (82.0).
Adapters are counted on every linear layer (peft's all-linear) whatever target_modules names. An estimate, not a
bound: the stop leaves a margin.

The offload keys move memory to the CPU side: each worker's shard of the fp32 weights and of AdamW's moments, on
every worker of a node. That is checked against the machine's memory too (Ray stops workers at 95% of it).
"""

import math
import subprocess

import psutil
import torch
from transformers import AutoModelForCausalLM

from kit.errors import KitError
from kit.setup.hardware import CPU_TOKENS

GB = 1e9
# Bytes per token in one micro-batch: per logit (the vocabulary), per hidden unit and per MLP unit of every layer.
ACTIVATION_BYTES = {"vocab": 13, "hidden": 23, "intermediate": 1}
PROMPT_TOKENS = 64  # prompts are not known before loading; the default task's and the benchmarks' are shorter
USABLE = 0.95  # of a GPU's memory: CUDA's context and the allocator's fragmentation take the rest
ADVICE = ("lower training.actor.max_tokens_per_gpu, set training.actor.gradient_checkpointing=true, "
          "inference.free_sampler=true, "
          "training.actor.param_offload=true or optimizer_offload=true, train adapters only "
          "(training.actor.lora.rank=16), use more GPUs, or (vllm/sglang) lower inference.gpu_memory_utilization")
AUTO_TOKENS = (65536, 32768, 16384, 8192, 4096)  # training.actor.max_tokens_per_gpu: auto tries these, largest first
# Of a GPU, what auto lets the update's estimate take: the estimate is at most 3% below the peaks measured up to the
# 0.5B shape, but may be low at 7B, where a 16,384-token micro-batch ran out of memory (now estimated at 94% of an
# H200's 151 GB).
AUTO_SHARE = 0.8
HOST_USABLE = 0.85  # of a machine's memory for offloaded state: Ray stops workers at 0.95; the processes need some
HOST_ADVICE = ("training.actor.param_offload and optimizer_offload keep the weights and AdamW's moments in CPU memory: "
               "turn one off, train adapters only (training.actor.lora.rank=16), or spread the workers over more machines")


def parameter_counts(hf_config, lora_rank: int) -> tuple[int, int]:
    """(all parameters, trained parameters) of the model the config describes, built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    total = sum(p.numel() for p in model.parameters())
    if not lora_rank:
        return total, total
    # an adapter per linear layer of the decoder (peft's all-linear): rank x (inputs + outputs)
    adapters = sum(lora_rank * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
    return total, adapters


def estimate(cfg, hf_config, gpu_bytes: int) -> dict[str, float]:
    """Peak GB per GPU of each phase (generation, update, optimizer step) for this config."""
    actor, workers = cfg.training.actor, cfg.num_workers
    params, trained = parameter_counts(hf_config, actor.lora.rank)
    weights = 0 if actor.param_offload else 4 * params / workers
    moments = 8 * trained / workers
    resident = weights + (0 if actor.optimizer_offload else moments)
    rows = math.ceil(cfg.batch_size * cfg.n_generations / workers)  # this worker's
    if cfg.inference.engine == "hf":
        engine = 2 * params + kv_cache_bytes(cfg, hf_config, rows)
    else:
        engine = cfg.inference.gpu_memory_utilization * gpu_bytes
    layers = hf_config.num_hidden_layers
    gathered = 2 * params if workers == 1 else 2 * params / workers + 2 * 2 * params / layers
    per_token = (ACTIVATION_BYTES["vocab"] * hf_config.vocab_size + layers * (
        ACTIVATION_BYTES["hidden"] * hf_config.hidden_size
        + ACTIVATION_BYTES["intermediate"] * hf_config.intermediate_size))
    if actor.gradient_checkpointing:  # a layer's activations are recomputed: only its input is kept
        per_token = ACTIVATION_BYTES["vocab"] * hf_config.vocab_size + layers * 2 * hf_config.hidden_size
    # the hf sampler's copy and cache stay allocated through the update unless free_sampler, a server's share
    # unless it sleeps (free_cache_engine)
    kept = not cfg.inference.free_sampler if cfg.inference.engine == "hf" else not cfg.inference.free_cache_engine
    kept_sampler = engine if kept else 0
    tokens = min(actor.max_tokens_per_gpu, rows * (PROMPT_TOKENS + cfg.inference.max_response_length))  # a micro-batch
    onloaded = 4 * params / workers if actor.param_offload else 0  # verl brings the weights back for the update
    update = onloaded + gathered + 8 * trained / workers + per_token * tokens
    return {"generation": (resident + engine) / GB,
            "update": (resident + kept_sampler + update) / GB,
            "optimizer step": (4 * params / workers + moments + 4 * trained / workers + kept_sampler) / GB}


def offloaded_bytes_per_node(cfg, hf_config) -> int:
    """CPU memory the offload keys fill on the node with the most workers: each worker's shard of the fp32 weights
    (param_offload) and of AdamW's two fp32 moments (optimizer_offload)."""
    actor = cfg.training.actor
    params, trained = parameter_counts(hf_config, actor.lora.rank)
    per_worker = (4 * params if actor.param_offload else 0) + (8 * trained if actor.optimizer_offload else 0)
    return per_worker // cfg.num_workers * max(cfg.worker_layout)


def size_micro_batches(cfg, hf_config, gpu_bytes: int | None):
    """training.actor.max_tokens_per_gpu 'auto' becomes the largest of AUTO_TOKENS whose update the estimate fits in
    AUTO_SHARE of a GPU (verl's engine pays a fixed cost per micro-batch, so fewer, larger ones run faster), or the
    smallest when none does (check_fits then names the keys to change); CPU_TOKENS where no GPU is known."""
    actor = cfg.training.actor
    if actor.max_tokens_per_gpu != "auto":
        return
    if not gpu_bytes:
        actor.max_tokens_per_gpu = CPU_TOKENS
        return
    for tokens in AUTO_TOKENS:
        actor.max_tokens_per_gpu = tokens
        if estimate(cfg, hf_config, gpu_bytes)["update"] <= AUTO_SHARE * gpu_bytes / GB:
            return


def kv_cache_bytes(cfg, hf_config, rows: int) -> int:
    """The hf sampler's KV cache for a worker's rows: bf16 keys and values of every layer, for prompts rounded up
    to 64 tokens plus the response limit (its bucketing, with prompts taken as PROMPT_TOKENS long)."""
    heads = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    length = PROMPT_TOKENS + cfg.inference.max_response_length
    return rows * length * hf_config.num_hidden_layers * 2 * heads * head_dim * 2


def check_fits(cfg, hf_config, gpu_bytes: int, host_bytes: int | None = None) -> str:
    """One line with the estimate; a KitError naming the keys to change when a phase cannot fit on the GPU, or the
    offloaded state in this machine's memory (host_bytes; None: read it)."""
    offloaded, host = offloaded_bytes_per_node(cfg, hf_config), host_bytes or psutil.virtual_memory().total
    if offloaded > HOST_USABLE * host:
        raise KitError(f"this config offloads about {offloaded / GB:.0f} GB to CPU memory on a machine (estimated before "
                       f"loading), more than {HOST_USABLE:.0%} of this one's {host / GB:.0f} GB: {HOST_ADVICE}")
    phases = estimate(cfg, hf_config, gpu_bytes)
    phase, need = max(phases.items(), key=lambda item: item[1])
    have = gpu_bytes / GB
    if need > USABLE * have:
        raise KitError(f"this config needs about {need:.0f} GB per GPU in its {phase} (estimated before loading), "
                       f"more than the {have:.0f} GB of a GPU: {ADVICE}")
    return (f"memory estimate: {need:.1f} GB per GPU at peak ({phase}) of {have:.0f} GB, micro-batches of "
            f"{cfg.training.actor.max_tokens_per_gpu} tokens")


def gpu_bytes() -> int | None:
    """The memory of this machine's first GPU, from nvidia-smi (torch.cuda would hold a context on it for the whole
    run); None where there is no nvidia-smi (a Ray head without GPUs: the check is skipped)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.split()[0]) * 2**20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
