"""What kit/patches/single_rank.py saves: gradient clipping and AdamW over 272 parameters (SmolLM2's count) on a one-rank
mesh, through DTensor (verl's path) and on the local tensors (the kit's), first call and later calls.

  python bench/dtensor_first_call.py   # CPU (gloo), a few seconds

The tensors hold 4 values each, so the figures are dispatch, not arithmetic.
"""

import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for kit
from kit.patches import cpu_platform  # noqa: E402

cpu_platform.enable()
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor, Shard  # noqa: E402
from verl.utils.fsdp_utils import fsdp2_clip_grad_norm_  # noqa: E402

from kit.patches import single_rank  # noqa: E402

PARAMETERS = 272


def parameters(mesh):
    made = []
    for _ in range(PARAMETERS):
        param = torch.nn.Parameter(DTensor.from_local(torch.zeros(4), mesh, [Shard(0)]))
        param.grad = DTensor.from_local(torch.randn(4), mesh, [Shard(0)])
        made.append(param)
    return made


def timed(call, repeats: int = 10) -> str:
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return f"first call {first:.3f} s, then {(time.perf_counter() - start) / repeats * 1000:.1f} ms"


def main():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29531"))
    dist.init_process_group("gloo", rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,))
    for name, clip in (("DTensor", fsdp2_clip_grad_norm_), ("local", single_rank.clip_grad_norm_)):
        params = parameters(mesh)
        print(f"clipping, {name}: {timed(lambda: clip(params, max_norm=1e9))}")
    for name, local in (("DTensor", False), ("local", True)):
        optimizer = torch.optim.AdamW(parameters(mesh), lr=1e-3, fused=True)

        def step():
            with single_rank.local_view(optimizer) if local else contextlib.nullcontext():
                optimizer.step()

        print(f"fused AdamW, {name}: {timed(step)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
