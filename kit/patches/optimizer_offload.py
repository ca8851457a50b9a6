"""training.actor.optimizer_offload as the kit runs it: AdamW's state in page-locked CPU memory, on the GPU for the
optimizer step only.

verl's FSDP engine moves an offloaded optimizer's state to the GPU when an update begins and to new CPU tensors
when it ends, so from the second update on the moments (8 bytes per trained parameter, 56.8 GiB for Qwen2.5-7B)
sit on the GPU through every forward and backward: on one H200 the 7B shape's second update ran out of memory.
Here verl's engine leaves the state where it is when an update begins and ends; each optimizer step loads it
(verl's own load), steps, and copies it back into CPU buffers kept from one step to the next: the second update
then ran at the first one's peak (docs/memory.md).

The buffers are page-locked where they are (cudaHostRegister), not taken from torch's pinned allocator, which
rounds every block up to a power of two: a Qwen2.5-7B MLP weight's moment (271.6 MB) would take a 512 MiB block,
about 116 GB for the two moments instead of 61, enough to run a 128 GB machine out of memory once the Hugging
Face export adds the fp32 weights (30.5 GB) beside them.
"""

import mmap

import torch
from verl.utils.device import get_device_id
from verl.utils.fsdp_utils import load_fsdp_optimizer

from kit.patches.single_rank import local_tensor


def state_on_device_for_the_step_only(engine):
    """Change verl's FSDP engine (with optimizer offload on) so that its optimizer state is on the device only inside
    `optimizer_step`, and in page-locked CPU memory otherwise."""
    if not engine.is_optimizer_offload_enabled:
        return
    move, step = engine.to, engine.optimizer_step
    host = {}  # (id of a parameter, state key) -> the CPU tensor that state is kept in between steps

    def move_all_but_the_optimizer(device, model=True, optimizer=True, grad=True):
        return move(device, model=model, optimizer=False, grad=grad)

    def step_with_state_on_device():
        load_fsdp_optimizer(engine.optimizer, get_device_id())
        try:
            return step()
        finally:
            to_host(engine.optimizer, host)

    engine.to = move_all_but_the_optimizer  # what verl's train_mode context calls as an update begins and ends
    engine.optimizer_step = step_with_state_on_device


@torch.no_grad()
def to_host(optimizer, host: dict):
    """Copy every state tensor that is on a device into its CPU tensor in `host` (made at the first copy) and keep
    the CPU one in the optimizer's state."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if not isinstance(value, torch.Tensor) or value.device.type == "cpu":
                    continue
                kept = host.get((id(param), key))
                if kept is None:
                    kept = host[(id(param), key)] = on_host_like(value)
                local_tensor(kept).copy_(local_tensor(value), non_blocking=True)
                state[key] = kept
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the copies land before anything reads the CPU tensors (a checkpoint)


def on_host_like(value: torch.Tensor) -> torch.Tensor:
    """An empty CPU tensor like value, page-locked where CUDA is (for a DTensor, a DTensor like it whose local tensor
    is on the CPU, as verl's offload makes them; DTensor.from_local would move it to the mesh's device)."""
    kept = torch.empty_like(value, device="cpu")
    if torch.cuda.is_available() and kept.numel():
        page_lock(local_tensor(kept))
    return kept


def page_lock(tensor: torch.Tensor):
    """Page-lock a CPU tensor's memory for the rest of the process (its buffer is kept that long), so that copies to
    and from the GPU run at the bus's speed."""
    start, length = own_pages(tensor)
    cudart = torch.cuda.cudart()
    error = cudart.cudaHostRegister(start, length, 0)
    if error != cudart.cudaError.success:  # CUDA keeps the error for the next kernel launch: stop here, clearly
        raise RuntimeError(f"optimizer_offload: CUDA could not page-lock {length / 2**30:.1f} GiB of CPU memory for "
                           f"the optimizer state ({cudart.cudaGetErrorString(error)})")


def own_pages(tensor: torch.Tensor) -> tuple[int, int]:
    """Move a dense CPU tensor (as empty_like makes it) into an anonymous memory mapping of its own: whole pages no
    other tensor shares (CUDA refuses to page-lock a page twice), with the storage beginning at the first, where
    torch's is_pinned looks; returns the address and length of those pages. The storage keeps the mapping alive."""
    length = -(-tensor.numel() * tensor.element_size() // mmap.PAGESIZE) * mmap.PAGESIZE
    pages = torch.frombuffer(mmap.mmap(-1, length), dtype=torch.uint8)
    tensor.set_(pages.untyped_storage(), 0, tensor.shape, tensor.stride())
    return pages.data_ptr(), length
