"""Log-probs of the sampled tokens for verl's FSDP engine, vectorised.

Without flash-attn's cross-entropy kernel (the kit does not need flash-attn), verl 0.9.1's
`logprobs_from_logits` falls back to a Python loop over every token: about ten thousand small kernels and
autograd nodes per micro-batch. On an H200 a 135M model's update of 16 micro-batches of 32 x 300 tokens took
33 s with it (2026-11-23, first bench/throughput.sh lease; its log, not kept) and 4.3 s with this
(bench/results/bench/kit-smollm2).
This computes the same values in chunks of rows in float32, and its backward recomputes the softmax from
the logits, so nothing of vocabulary size is kept beyond the logits themselves.
"""

import torch
from verl.utils import torch_functional
from verl.workers.engine.fsdp import transformer_impl

CHUNK_ROWS = 1024  # tokens per chunk: a (1024, vocabulary) float32 block at a time


class TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels):  # logits (N, V), labels (N,) -> (N,) float32
        log_norm = torch.empty(labels.shape, dtype=torch.float32, device=logits.device)  # logsumexp per row
        picked = torch.empty_like(log_norm)
        for rows in _chunks(len(labels)):
            chunk = logits[rows].float()
            log_norm[rows] = torch.logsumexp(chunk, dim=-1)
            picked[rows] = chunk.gather(-1, labels[rows, None]).squeeze(-1)
        ctx.save_for_backward(logits, labels, log_norm)
        return picked - log_norm

    @staticmethod
    def backward(ctx, grad):  # d log p(label_i) / d logit_ij = [j == label_i] - softmax_ij
        logits, labels, log_norm = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for rows in _chunks(len(labels)):
            chunk_grad = -torch.exp(logits[rows].float() - log_norm[rows, None]) * grad[rows, None]
            chunk_grad.scatter_add_(-1, labels[rows, None], grad[rows, None])
            grad_logits[rows] = chunk_grad.to(logits.dtype)
        return grad_logits, None


def _chunks(rows: int):
    return (slice(start, start + CHUNK_ROWS) for start in range(0, rows, CHUNK_ROWS))


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, inplace_backward: bool = True) -> torch.Tensor:
    """verl's `logprobs_from_logits` signature: logits (..., V), labels (...) -> log-probs (...), float32."""
    flat = TokenLogProbs.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return flat.view(labels.shape)


def install():
    """In a worker process: give verl's FSDP engine this function where it would loop token by token."""
    if not torch_functional.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE:
        transformer_impl.logprobs_from_logits = logprobs_from_logits
