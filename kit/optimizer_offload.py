"""training.actor.optimizer_offload as the kit runs it: AdamW's state in pinned CPU memory, on the GPU for the
optimizer step only.

verl's FSDP engine moves an offloaded optimizer's state to the GPU when an update begins and to new pageable CPU
tensors when it ends. On one H200 with the Qwen2.5-7B shape (README, Measured, lease 9) that cost twice:
- from the second update on, the moments (8 bytes per trained parameter, 56.8 GiB) sat on the GPU through every
  forward and backward beside the weights and gradients, and that update ran out of memory, where the first one,
  whose moments appear only at its step, peaked at 114.3 GiB;
- copying them out to pageable memory most likely took the last 56 s of that first update's 126 s (verl's MFU,
  timed without the copy, puts the forward, backward and step at about 70 s).
Here verl's engine leaves the state where it is when an update begins and ends; each optimizer step loads it
(verl's own load), steps, and copies it back into pinned buffers that are kept from one step to the next.
"""

import torch
from torch.distributed.tensor import DTensor
from verl.utils.device import get_device_id
from verl.utils.fsdp_utils import load_fsdp_optimizer


def state_on_device_for_the_step_only(engine):
    """Change verl's FSDP engine (with optimizer offload on) so that its optimizer state is on the device only inside
    `optimizer_step`, and in pinned CPU memory otherwise."""
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
    """Copy every state tensor that is on a device into its CPU tensor in `host` (made at the first copy: pinned
    where CUDA is, so that the copies run at the bus's speed) and keep the CPU one in the optimizer's state."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if not isinstance(value, torch.Tensor) or value.device.type == "cpu":
                    continue
                kept = host.get((id(param), key))
                if kept is None:
                    kept = host[(id(param), key)] = on_host_like(value)
                local(kept).copy_(local(value), non_blocking=True)
                state[key] = kept
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the copies land before anything reads the CPU tensors (a checkpoint)


def on_host_like(value: torch.Tensor) -> torch.Tensor:
    """An empty CPU tensor like value (for a DTensor, a DTensor like it whose local tensor is on the CPU, as verl's
    offload makes them; DTensor.from_local would move it to the mesh's device)."""
    return torch.empty_like(value, device="cpu", pin_memory=torch.cuda.is_available())


def local(value: torch.Tensor) -> torch.Tensor:
    return value.to_local() if isinstance(value, DTensor) else value
