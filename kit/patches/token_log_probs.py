"""Log-probs of the sampled tokens for verl's FSDP engine: two fused passes over the logits.

Without flash-attn's cross-entropy kernel (the kit does not need flash-attn), verl 0.9.1's
`logprobs_from_logits` falls back to a Python loop over every token: about ten thousand small kernels and
autograd nodes per micro-batch. On an H200 a 135M model's update of 16 micro-batches of 32 x 300 tokens took
33 s with it and 4.3 s with the eager version of this (docs/update.md).
The forward reads the logits once for each token's log-normaliser and picked logit; the backward recomputes the
softmax from the logits and writes the gradient, so nothing of vocabulary size is kept beyond the logits
themselves. On a GPU, for large micro-batches, each pass is one kernel (torch.compile fuses the float32 upcast,
exp and sums into it): done op by op, the upcasts and temporaries of a 16k-token micro-batch over Qwen2.5's
152k-token vocabulary move about 150 GB. Compiling costs seconds once per process, and saves milliseconds a
micro-batch, so logits under COMPILE_FROM_VALUES values (the default task's 6k tokens x 49k vocabulary) run op
by op. On the CPU the same code runs eagerly in chunks of rows, bounding the float32 temporaries.
"""

import torch
from verl.utils import torch_functional
from verl.workers.engine.fsdp import transformer_impl

CPU_CHUNK_ROWS = 1024  # eager (CPU): tokens per chunk, a (1024, vocabulary) float32 temporary at a time
COMPILE_FROM_VALUES = 2**29  # GPU: logits of at least this many values (2 GB in float32) go through the compiled passes


def log_norm_and_picked(logits, labels):  # (n, V), (n,) -> (n,) float32 each: logsumexp and the label's logit
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1), logits.gather(-1, labels[:, None]).squeeze(-1)


def grad_of_logits(logits, labels, log_norm, grad):  # d log p(label_i) / d logit_ij = [j == label_i] - softmax_ij
    # one expression, so that torch.compile makes it one kernel writing the logits' dtype: no float32 (n, V) buffer
    # (an in-place form with an indexed add is faster op by op, but compiled it keeps that buffer: 8.5 GB more at
    # 16k tokens x 152k, enough to run the 7B shape with offload out of memory)
    is_label = torch.arange(logits.shape[-1], device=logits.device) == labels[:, None]  # (n, V)
    softmax = torch.exp(logits.float() - log_norm[:, None])
    return ((is_label.float() - softmax) * grad[:, None]).to(logits.dtype)


_fused = {}  # the compiled passes, made on first use on a GPU


def _passes(logits):
    if not logits.is_cuda:
        return log_norm_and_picked, grad_of_logits, CPU_CHUNK_ROWS
    if logits.numel() < COMPILE_FROM_VALUES:
        return log_norm_and_picked, grad_of_logits, len(logits)
    if not _fused:
        _fused.update(forward=torch.compile(log_norm_and_picked, dynamic=True),
                      backward=torch.compile(grad_of_logits, dynamic=True))
    return _fused["forward"], _fused["backward"], len(logits)


class TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels):  # logits (N, V), labels (N,) -> (N,) float32
        forward_pass, _, chunk = _passes(logits)
        log_norm = torch.empty(labels.shape, dtype=torch.float32, device=logits.device)  # logsumexp per row
        picked = torch.empty_like(log_norm)
        for rows in _chunks(len(labels), chunk):
            log_norm[rows], picked[rows] = forward_pass(logits[rows], labels[rows])
        ctx.save_for_backward(logits, labels, log_norm)
        return picked - log_norm

    @staticmethod
    def backward(ctx, grad):
        logits, labels, log_norm = ctx.saved_tensors
        _, backward_pass, chunk = _passes(logits)
        grad_logits = torch.empty_like(logits)
        for rows in _chunks(len(labels), chunk):
            grad_logits[rows] = backward_pass(logits[rows], labels[rows], log_norm[rows], grad[rows])
        return grad_logits, None


def _chunks(rows: int, size: int):
    return (slice(start, start + size) for start in range(0, rows, max(size, 1)))


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, inplace_backward: bool = True) -> torch.Tensor:
    """verl's `logprobs_from_logits` signature: logits (..., V), labels (...) -> log-probs (...), float32."""
    flat = TokenLogProbs.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return flat.view(labels.shape)


def install():
    """In a worker process: give verl's FSDP engine this function where it would loop token by token."""
    if not torch_functional.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE:
        transformer_impl.logprobs_from_logits = logprobs_from_logits
