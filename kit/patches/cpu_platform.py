"""A CPU platform for verl 0.9.1, registered through verl's own plugin hook.

verl 0.9.1 ships CUDA, NPU and ROCm platforms only and falls back to CUDA when none is found. Importing
this module (verl does so in every process when VERL_USE_EXTERNAL_MODULES=kit.patches.cpu_platform, see
`enable()`) registers a "cpu" platform: gloo collectives, no device memory, no-op profiling.
"""

import os
from contextlib import contextmanager

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, set_platform

MODULE = __name__


class _CPUDeviceModule:
    """torch.cpu, plus the torch.cuda memory calls verl makes for its logs: a CPU has no device memory."""

    def __getattr__(self, name):
        return getattr(torch.cpu, name)

    def _zero(self, *args, **kwargs):
        return 0

    memory_reserved = memory_allocated = max_memory_reserved = max_memory_allocated = _zero

    def _none(self, *args, **kwargs):
        return None

    empty_cache = ipc_collect = reset_peak_memory_stats = reset_accumulated_memory_stats = _none
    set_per_process_memory_fraction = _none

    def mem_get_info(self, *args, **kwargs):
        return 0, 0

    def get_rng_state(self, *args, **kwargs):  # verl's checkpoints save the device RNG: here the CPU's
        return torch.get_rng_state()

    def set_rng_state(self, state, *args, **kwargs):
        torch.set_rng_state(state)

    def get_device_name(self, *args, **kwargs):
        return "CPU"  # verl's MFU estimate looks the name up in its table of device peak FLOPS


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    device_name = "cpu"
    vendor_name = "cpu"
    device_module = _CPUDeviceModule()

    def is_available(self):
        return True

    def is_platform_available(self, use_smi_check=False):
        return os.environ.get("VERL_PLATFORM") == "cpu"

    def current_device(self):
        # verl passes this straight to .to(...) and device=...; an index would mean cuda:N.
        return "cpu"

    def device_count(self):
        return 1

    def set_device(self, device_index):
        pass

    def synchronize(self, device_index=None):
        pass

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    def manual_seed_all(self, seed):
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings):
        pass

    def empty_cache(self):
        pass

    def get_device_capability(self, device_index=0):
        return None, None

    def communication_backend_name(self):
        return "gloo"

    def visible_devices_envvar(self):
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg):
        yield

    def profiler_start(self):
        pass

    def profiler_stop(self):
        pass

    def ray_resource_name(self):
        return "CPU"

    def ray_resource_options(self, num_gpus):
        return {}

    def ray_noset_envvars(self):
        return []

    def is_ipc_supported(self):
        return False

    def cudart(self):
        return None


def _pin_memory_noop(tensor, *args, **kwargs):
    return tensor


def _patch_cpu_only_torch():
    """FSDP2's CPUOffloadPolicy(pin_memory=True), which verl uses for the reference model, pins host
    memory; a CPU-only torch build has no accelerator to pin for and raises. On CPU it is a no-op."""
    if not torch.cuda.is_available():
        torch.Tensor.pin_memory = _pin_memory_noop


def init_process_group():
    """verl joins '<device>:<backend>' pairs for CPU and device into one backend string, which on a CPU
    platform reads 'cpu:gloo,cpu:gloo' and torch rejects. Start the gloo group first; verl then skips its own."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
        )


def register_fsdp_engines():
    """verl registers its FSDP engines for cuda and npu only; they run on a CPU as they are."""
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            EngineRegistry._engines[model_type][backend].setdefault("cpu", engine)


def enable():
    """Make verl use this platform in this process and in every Ray worker started after this call."""
    if os.environ.get("VERL_PLATFORM") != "cpu":
        os.environ["VERL_PLATFORM"] = "cpu"
        os.environ["VERL_USE_EXTERNAL_MODULES"] = MODULE
        set_platform(PlatformCPU())
    _patch_cpu_only_torch()


# Importing the kit on a machine without a GPU selects the CPU platform (before verl picks CUDA).
if not torch.cuda.is_available() or os.environ.get("VERL_PLATFORM") == "cpu":
    enable()
