"""kit/setup/memory.py: the per-GPU memory estimate made before loading, and the out-of-memory errors as one line."""

import pytest
import torch
from conftest import kit_config
from ray.exceptions import OutOfMemoryError as OutOfHostMemory, RayTaskError
from transformers import AutoConfig, Qwen2Config

from kit.errors import KitError
from kit.run.failures import one_line_errors
from kit.setup.hardware import resolve_hardware
from kit.setup.memory import check_fits, estimate, size_micro_batches
from kit.setup.models import resolve_model_path

H200 = 141e9
QWEN_SHAPES = {  # Qwen2.5-0.5B's and Qwen2.5-7B's config.json values
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
}


def config(*overrides, gpus=1):
    cfg = kit_config("training.actor.max_tokens_per_gpu=16384", *overrides)  # the size the peaks were measured at
    resolve_hardware(cfg, node_gpus=[gpus])
    return cfg


@pytest.mark.parametrize("shape, overrides, gpu_bytes, tokens", [
    ("smollm2", ["batch_size=64", "inference.max_response_length=256"], H200, 65536),
    ("0.5b", ["batch_size=64", "inference.max_response_length=1024"], H200, 32768),  # its 103.1 GB peak, measured
    ("0.5b", ["batch_size=64", "inference.max_response_length=1024"], 80e9, 16384),
    ("0.5b", ["batch_size=64", "inference.max_response_length=1024", "training.actor.max_tokens_per_gpu=8192"], H200,
     8192),  # a number is kept
    # 16,384 ran out of memory on an H200, 8,192 peaked at 122.7 GB: nothing fits 80%, so the smallest
    ("7b", ["batch_size=64", "inference.max_response_length=1024", "training.actor.optimizer_offload=true",
            "training.actor.gradient_checkpointing=true", "inference.free_sampler=true"], H200, 4096),
    ("0.5b", ["batch_size=64", "inference.max_response_length=1024"], None, 16384),  # no GPU known: a Ray head
])
def test_auto_micro_batches_are_as_large_as_the_gpus_memory_allows(shape, overrides, gpu_bytes, tokens):
    hf_config = (AutoConfig.from_pretrained(resolve_model_path("embedded:smollm2")) if shape == "smollm2"
                 else Qwen2Config(**QWEN_SHAPES[shape]))
    cfg = kit_config(*overrides)
    resolve_hardware(cfg, node_gpus=[1])
    size_micro_batches(cfg, hf_config, gpu_bytes)
    assert cfg.training.actor.max_tokens_per_gpu == tokens
    if gpu_bytes and tokens > 4096:
        assert estimate(cfg, hf_config, gpu_bytes)["update"] <= 0.8 * gpu_bytes / 1e9


def test_auto_micro_batches_on_cpu_workers():
    cfg = kit_config("num_gpus=0")
    resolve_hardware(cfg, node_gpus=[0])
    assert cfg.training.actor.max_tokens_per_gpu == 16384


GIB = 2**30 / 1e9  # GB in a GiB: torch's (and verl's perf/max_memory_allocated_gb) peaks are GiB


# a 7B LoRA run's keys, measured on one H200 at 16,384 tokens a micro-batch
LORA_AS_MEASURED = ("training.actor.lora.rank=16", "training.actor.gradient_checkpointing=true",
                    "inference.free_sampler=true")
THROUGHPUT = ["batch_size=64", "inference.max_response_length=1024"]  # the 0.5B and 7B shapes' runs


@pytest.mark.parametrize("shape, overrides, measured_gb", [  # torch's peaks on an H200 (docs/memory.md)
    ("smollm2", ["batch_size=64", "inference.max_response_length=256", "training.actor.max_tokens_per_gpu=65536"],
     61.11 * GIB),
    ("0.5b", THROUGHPUT, 55.15 * GIB),
    ("0.5b", [*THROUGHPUT, "training.actor.max_tokens_per_gpu=32768"], 96.06 * GIB),
    ("smollm2", [], 12.29 * GIB),  # the default task
    ("7b", [*THROUGHPUT, "training.actor.optimizer_offload=true", "training.actor.gradient_checkpointing=true",
            "inference.free_sampler=true", "training.actor.max_tokens_per_gpu=8192"], 114.7 * GIB),
    ("7b", [*THROUGHPUT, *LORA_AS_MEASURED], 77.16 * GIB),
])
def test_the_estimate_is_at_or_above_the_measured_peaks(shape, overrides, measured_gb):
    """Never more than 3% below a measured peak (auto sizes micro-batches from it), at most 20% above."""
    hf_config = (AutoConfig.from_pretrained(resolve_model_path("embedded:smollm2")) if shape == "smollm2"
                 else Qwen2Config(**QWEN_SHAPES[shape]))
    peak = max(estimate(config(*overrides), hf_config, H200).values())
    assert 0.97 * measured_gb <= peak <= 1.2 * measured_gb


def test_what_each_key_saves():
    hf_config = Qwen2Config(**QWEN_SHAPES["7b"])
    full = estimate(config(), hf_config, H200)
    assert estimate(config("training.actor.lora.rank=16"), hf_config, H200)["update"] < full["update"] - 50
    assert estimate(config("training.actor.gradient_checkpointing=true"), hf_config, H200)["update"] < full["update"]
    assert estimate(config("training.actor.optimizer_offload=true"), hf_config, H200)["generation"] < full["generation"]
    # offloaded weights leave the GPU between uses but come back for the update
    offloaded = estimate(config("training.actor.param_offload=true"), hf_config, H200)
    assert offloaded["generation"] < full["generation"] and offloaded["update"] == pytest.approx(full["update"])
    assert estimate(config(gpus=4), hf_config, H200)["update"] < full["update"]
    assert estimate(config("inference.free_sampler=true"), hf_config, H200)["update"] < full["update"]
    # a server engine's share of the GPU stays through the update when it does not sleep
    asleep = estimate(config("inference.engine=vllm"), hf_config, H200)["update"]
    awake = estimate(config("inference.engine=vllm", "inference.free_cache_engine=false"), hf_config, H200)["update"]
    assert awake == pytest.approx(asleep + 0.5 * H200 / 1e9)


def test_a_config_that_cannot_fit_stops_with_the_keys_to_change():
    hf_config = Qwen2Config(**QWEN_SHAPES["7b"])
    with pytest.raises(KitError, match=r"needs about \d+ GB per GPU .* more than the 24 GB of a GPU: lower "
                                       r"training.actor.max_tokens_per_gpu.*lora.rank"):
        check_fits(config(), hf_config, gpu_bytes=24e9)
    assert check_fits(config(*LORA_AS_MEASURED), hf_config, gpu_bytes=H200).startswith("memory estimate")


# torch 2.11's message (c10/cuda/CUDACachingAllocator.cpp), as a worker raised it
TORCH_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which 1.23 GiB "
             "is free. Including non-PyTorch memory, this process has 138.56 GiB memory in use. Of the allocated memory "
             "120.10 GiB is allocated by PyTorch, and 15.02 GiB is reserved by PyTorch but unallocated. If reserved but "
             "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
             "fragmentation.  See documentation for Memory Management")
# the same while CUDA graphs hold memory (the hf sampler's): the form an out-of-memory in a 7B run's second rollout
# most likely took
TORCH_OOM_GRAPHS = ("CUDA out of memory. Tried to allocate 570.00 MiB. GPU 0 has a total capacity of 139.81 GiB of which "
                    "200.00 MiB is free. Including non-PyTorch memory, this process has 139.60 GiB memory in use. Of the "
                    "allocated memory 118.20 GiB is allocated by PyTorch, with 3.10 GiB allocated in private pools (e.g., "
                    "CUDA Graphs), and 1.50 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory "
                    "is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")


@pytest.mark.parametrize("message, figures", ids=["plain", "cuda graphs", "cuda graphs, nothing cached"], argvalues=[
    (TORCH_OOM, "asked for 2.00 GiB more with 120.10 GiB allocated and 15.02 GiB cached but unused, of 139.81 GiB"),
    (TORCH_OOM_GRAPHS, "asked for 570.00 MiB more with 118.20 GiB allocated (3.10 GiB of it in CUDA graphs' pools) and "
                       "1.50 GiB cached but unused, of 139.81 GiB"),
    (TORCH_OOM_GRAPHS.split(", and")[0] + ".", "asked for 570.00 MiB more with 118.20 GiB allocated (3.10 GiB of it in "
                                              "CUDA graphs' pools), of 139.81 GiB"),
])
def test_out_of_memory_in_a_worker_is_one_line(capsys, message, figures):
    @one_line_errors
    def run():
        # as ray.get raises it: a subclass of the cause's type (it has no function_name)
        raise RayTaskError("update_actor", "Traceback ...", torch.OutOfMemoryError(message)).as_instanceof_cause()

    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "out of GPU memory" in err and "max_tokens_per_gpu" in err
    # torch's own figures, which tell a phase that needs more from a fragmented cache
    assert figures in err


def test_offloaded_state_that_cannot_fit_the_machines_memory_stops_with_the_keys_to_change():
    """7B with param and optimizer offload on one H200 machine: 91 GB of fp32 weights and AdamW moments in CPU memory,
    within a 135 GB machine's memory; on a 64 GB one it stops before loading."""
    hf_config = Qwen2Config(**QWEN_SHAPES["7b"])
    offload = config("training.actor.param_offload=true", "training.actor.optimizer_offload=true",
                     "training.actor.gradient_checkpointing=true", "inference.free_sampler=true")
    assert check_fits(offload, hf_config, gpu_bytes=H200, host_bytes=135e9).startswith("memory estimate")
    with pytest.raises(KitError, match=r"offloads about 91 GB to CPU memory .* of this one's 64 GB: "
                                       r"training.actor.param_offload and optimizer_offload .*lora.rank"):
        check_fits(offload, hf_config, gpu_bytes=H200, host_bytes=64e9)
    # nothing offloaded: the machine's memory is not the limit
    assert check_fits(config(*LORA_AS_MEASURED), hf_config, gpu_bytes=H200, host_bytes=16e9)


def test_a_machine_out_of_cpu_memory_is_one_line(capsys):
    @one_line_errors
    def run():  # what ray.get raises when Ray stops the workers of a 7B run with both offloads
        raise OutOfHostMemory("2 worker(s) were killed due to the node running low on memory. Memory on the node "
                              "(IP: 192.0.2.2) was 120.92GB used / 125.85GB limit (0.960854)\n" + "Object store ...\n" * 40)

    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "out of CPU memory" in err and "optimizer_offload" in err
