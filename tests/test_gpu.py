"""Tests that need a GPU (CI has none: they skip there). Run them on a lent GPU machine:
python -m pytest -q tests/test_gpu.py"""

import pytest
import torch

from kit import token_log_probs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_token_log_probs_equal_the_eager_ones(dtype):
    # On a GPU kit/token_log_probs compiles its two passes over large logits (torch.compile) and runs small ones
    # op by op; on the CPU they run eagerly, in chunks. Same values and gradients, for a vocabulary of Qwen2.5's
    # size: 4000 rows go through the compiled passes, 1717 rows op by op on the GPU.
    torch.manual_seed(0)
    assert 4000 * 151_936 >= token_log_probs.COMPILE_FROM_VALUES > 1717 * 151_936
    for rows in (4000, 1717):
        logits = (3 * torch.randn(rows, 151_936, device="cuda")).to(dtype).requires_grad_()
        labels, weights = torch.randint(0, 151_936, (rows,), device="cuda"), torch.randn(rows, device="cuda")
        fused = token_log_probs.logprobs_from_logits(logits, labels)
        (fused * weights).sum().backward()
        fused_grad, logits.grad = logits.grad, None
        eager = token_log_probs.logprobs_from_logits(logits.cpu().detach().requires_grad_(), labels.cpu())
        assert torch.allclose(fused.cpu(), eager, atol=1e-4)
        eager_logits = logits.detach().cpu().requires_grad_()
        (token_log_probs.logprobs_from_logits(eager_logits, labels.cpu()) * weights.cpu()).sum().backward()
        assert torch.allclose(fused_grad.float().cpu(), eager_logits.grad.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6)
