"""Clipping and the optimizer step on plain tensors when one rank holds the whole model.

On one worker FSDP2 shards nothing, yet every parameter, gradient and AdamW moment is a DTensor, and each operator
on them goes through DTensor's dispatch. The first update works out how to shard the results of the clipping's and
the optimizer's foreach operators over every parameter: about half of the default task's first update on an H200
under the profiler (docs/update.md), and 0.53 s (clipping) and 0.48 s (fused AdamW) on 2 CPU cores for
272 parameters (SmolLM2's count; bench/dtensor_first_call.py). Later updates pay a cached lookup, a few ms. On one rank the kit runs both on
the DTensors' local tensors: the same arithmetic on the same storage, so the optimizer's state, its checkpoints
and resume are as before. With several ranks verl's DTensor path runs unchanged.
"""

from contextlib import contextmanager

import torch
from torch.distributed.tensor import DTensor
from verl.workers.engine.fsdp import transformer_impl

_verl_clip = transformer_impl.fsdp2_clip_grad_norm_


def install():
    """In this worker process, verl's FSDP engine clips with `clip_grad_norm_` below."""
    transformer_impl.fsdp2_clip_grad_norm_ = clip_grad_norm_


def on_one_rank(tensors: list) -> bool:
    return bool(tensors) and all(isinstance(t, DTensor) and t.device_mesh.size() == 1 for t in tensors)


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, **kwargs) -> torch.Tensor:
    """verl's fsdp2_clip_grad_norm_ (scale the gradients to a total 2-norm of at most max_norm, return the norm
    before); on one rank over the local gradients, as torch's clip_grad_norm_ computes it."""
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if kwargs or not on_one_rank(grads):
        return _verl_clip(parameters, max_norm, **kwargs)
    local = [grad.to_local() for grad in grads]  # without autograd, the DTensor's own local tensor
    total_norm = torch.nn.utils.get_total_norm(local)
    torch._foreach_mul_(local, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
    return total_norm


def step_local_tensors(engine):
    """Run the engine's optimizer steps on local tensors when its parameters sit whole on one rank."""
    step = engine.optimizer_step

    def local_step():
        with local_view(engine.optimizer):
            return step()

    engine.optimizer_step = local_step


@contextmanager
@torch.no_grad()
def local_view(optimizer):
    """For the duration, the optimizer's parameters, their gradients and its state are the DTensors' local tensors
    (the same storage, updated in place); afterwards its state is keyed by the DTensors again, and moments the step
    created become DTensors like their parameter's."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not on_one_rank(params):
        yield
        return
    swapped = []  # (group, index, DTensor parameter, its local tensor, its state, that state's local views)
    for group in optimizer.param_groups:
        for index, param in enumerate(group["params"]):
            local = param.to_local()
            local.grad = None if param.grad is None else param.grad.to_local()
            state = optimizer.state.pop(param, {})
            views = {key: local_tensor(value) for key, value in state.items()}
            optimizer.state[local] = dict(views)
            swapped.append((group, index, param, local, state, views))
            group["params"][index] = local
    try:
        yield
    finally:
        for group, index, param, local, state, views in swapped:
            group["params"][index] = param
            local.grad = None
            for key, value in optimizer.state.pop(local, {}).items():
                if views.get(key) is not value:  # made (or replaced) by this step: a moment or the step count
                    state[key] = (DTensor.from_local(value, param.device_mesh, param.placements, shape=param.shape,
                                                     stride=param.stride()) if value.shape == local.shape else value)
            if state:
                optimizer.state[param] = state


def local_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's local tensor (the same storage); any other tensor as it is."""
    return value.to_local() if isinstance(value, DTensor) else value


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (a collective every rank of its mesh joins); any other tensor as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value
