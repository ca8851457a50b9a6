"""CPU memory of the Hugging Face export, verl's way (get_fsdp_full_state_dict, then save_pretrained) against the
kit's (kit/run/export.py, a shard at a time), on CPU: a random Qwen2.5-0.5B-shaped model in fp32, fully sharded over
two ranks (two processes, gloo) as verl's engine shards it. Prints what each way adds to rank 0's resident memory
at its peak (the peak is reset once the model is sharded).

  python bench/export_memory.py verl OUTDIR
  python bench/export_memory.py kit OUTDIR [SHARD_MB]
"""

import gc
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for kit and bench
from bench.random_model import QWEN25_05B  # noqa: E402
from kit.run import export  # noqa: E402


def resident_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in GiB."""
    line = next(line for line in open("/proc/self/status") if line.startswith(field))
    return int(line.split()[1]) / 2**20  # kB


def rank(number: int, way: str, out: str, shard_mb: int, store: str):
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN25_05B)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=number, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the resident memory now
    before = resident_gb("VmRSS")
    if way == "verl":
        from verl.utils.fsdp_utils import get_fsdp_full_state_dict

        state_dict = get_fsdp_full_state_dict(model, offload_to_cpu=True, rank0_only=True)
        meta.save_pretrained(out, state_dict=state_dict)
    else:
        export.write_hf_folder(out, model, meta, shard_mb * 2**20)
    if number == 0:
        params = sum(p.numel() for p in meta.parameters())
        print(f"{way}: {params / 1e6:.0f}M parameters ({params * 4 / 2**30:.2f} GiB in fp32), rank 0's resident "
              f"memory rose {resident_gb('VmHWM') - before:.2f} GiB at its peak; wrote {sorted(os.listdir(out))}")
    dist.destroy_process_group()


if __name__ == "__main__":
    way, out, shard_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]) if sys.argv[3:] else export.SHARD_BYTES // 2**20
    torch.multiprocessing.spawn(rank, args=(way, out, shard_mb, f"{tempfile.mkdtemp()}/store"), nprocs=2)
